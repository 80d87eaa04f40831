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


def snapshot_json(cache: SnapshotCache) -> dict[str, Any]:
    snap = cache.snapshot
    if snap is None:
        return {"version": None, "resources": {}}
    return {
        "version": snap.version,
        "resources": {
            type_url.rsplit(".", 1)[-1]: {
                "version": ts.version,
                "items": [to_dict(p.message) for p in ts.resources.values()],
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

    async def config(_: web.Request) -> web.Response:
        return dump(snapshot_json(cache))

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
