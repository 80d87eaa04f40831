"""Admin HTTP: /healthz, /readyz, /metrics, /debug/config, /debug/diagnostics, /debug/nodes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane.metrics import Metrics
from controlplane.pipeline import Pipeline
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.server import AggregatedDiscoveryService
from translators.envoy.common import to_dict
from translators.envoy.secret import redact
from translators.groups import DEFAULT_GROUP


def snapshot_json(cache: SnapshotCache, group: str = DEFAULT_GROUP) -> dict[str, Any]:
    snap = cache.snapshots.get(group)
    if snap is None:
        return {"version": None, "resources": {}}
    return {
        "group": group or "default",
        "version": snap.version,
        "resources": {
            type_url.rsplit(".", 1)[-1]: {
                "version": ts.version,
                "items": [redact(to_dict(p.message)) for p in ts.resources.values()],
            }
            for type_url, ts in snap.types.items()
        },
    }


def make_app(
    *, cache: SnapshotCache, pipeline: Pipeline, metrics: Metrics, ads: AggregatedDiscoveryService
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if cache.snapshot is None:
            return web.Response(status=503, text="not ready: no snapshot published yet\n")
        return web.Response(text="ready\n")

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def dump(obj: object) -> web.Response:
        return web.Response(
            text=json.dumps(obj, indent=2, sort_keys=True), content_type="application/json"
        )

    async def config(request: web.Request) -> web.Response:
        """``?group=NAME`` for a node group's snapshot; the default group's otherwise."""
        group = request.query.get("group", "")
        if group == "default":
            group = DEFAULT_GROUP
        if group not in cache.snapshots and cache.snapshots:
            known = ", ".join(sorted(g or "default" for g in cache.snapshots))
            raise web.HTTPNotFound(text=f"no node group {group!r} (have: {known})\n")
        return dump(snapshot_json(cache, group))

    async def diagnostics(_: web.Request) -> web.Response:
        return dump([d.as_dict() for d in pipeline.diagnostics])

    async def nodes(_: web.Request) -> web.Response:
        return dump(
            [
                {
                    "node_id": n.node_id,
                    "cluster": n.cluster,
                    "user_agent": n.user_agent,
                    "protocol": n.protocol,
                    "connected_at": n.connected_at,
                    "acked": n.acked,
                    "last_nack": n.last_nack,
                    "group": n.group or "default",
                }
                for n in ads.nodes.values()
            ]
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/debug/config", config)
    app.router.add_get("/debug/diagnostics", diagnostics)
    app.router.add_get("/debug/nodes", nodes)
    return app
