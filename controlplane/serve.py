"""``switchman serve``: sources → store → pipeline → cache → ADS server, plus admin HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from aiohttp import web

from controlplane.admin import make_app
from controlplane.authz import AuthorizationService
from controlplane.authz import add_to_server as add_authz_to_server
from controlplane.metrics import Metrics
from controlplane.pipeline import Pipeline
from controlplane.settings import GrpcSettings, ServeSettings
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.csds import ClientStatusService
from controlplane.xds.csds import add_to_server as add_csds
from controlplane.xds.groups import NodeGrouper
from controlplane.xds.server import AggregatedDiscoveryService, add_to_server

log = logging.getLogger("switchman")


def grpc_server_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """The gRPC channel arguments of the xDS server (gRPC core's doc/keepalive.md)."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", round(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.keepalive_timeout * 1000)),
        # Recent gRPC cores time a keepalive ping out by the generic ping timeout (one minute by
        # default), not by keepalive_timeout_ms: set both (measured: tests/test_xds_grpc.py).
        ("grpc.http2.ping_timeout_ms", round(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
        # Pings an Envoy may send while no data flows, before they count as abuse ("strikes").
        ("grpc.http2.min_ping_interval_without_data_ms", round(settings.min_ping_interval * 1000)),
        # Older gRPC cores stop their keepalive pings after two without data unless told so;
        # xDS streams stay quiet for hours between changes, and a dead Envoy must still be found.
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def serve(settings: ServeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    metrics = Metrics()
    cache = SnapshotCache()
    source = FileSource(settings.config_dir, store := ResourceStore([FileSource.name]))
    pipeline = Pipeline(
        store=store,
        cache=cache,
        options=settings.options,
        metrics=metrics,
        debounce=settings.debounce,
        max_delay=settings.max_delay,
        groups=settings.node_groups,
    )
    ads = AggregatedDiscoveryService(
        cache, metrics, grouper=NodeGrouper(settings.node_groups, settings.group_by)
    )

    server = grpc.aio.server(options=grpc_server_options(settings.grpc))
    add_to_server(server, ads)
    add_csds(server, ClientStatusService(ads.nodes))
    # Envoy's ext_authz filter asks the same port (basicAuth/digestAuth users; authz.py).
    authz = AuthorizationService(lambda: pipeline.ir)
    add_authz_to_server(server, authz)
    host, port = settings.xds_address
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"switchman: cannot listen for xDS on {host}:{port}")
    await server.start()
    log.info("xDS (ADS) listening on %s:%d", host, bound)

    runner = web.AppRunner(
        make_app(cache=cache, pipeline=pipeline, metrics=metrics, ads=ads), access_log=None
    )
    await runner.setup()
    ahost, aport = settings.admin_address
    await web.TCPSite(runner, ahost, aport).start()
    log.info("admin HTTP listening on %s:%d", ahost, aport)

    tasks = [
        asyncio.create_task(source.run(stop), name="file-source"),
        asyncio.create_task(pipeline.run(stop), name="pipeline"),
    ]
    # The first full sync happens inside source.run before it starts watching; publish it.
    while not store.synced and not stop.is_set():
        await asyncio.sleep(0.01)
    await pipeline.publish_once()
    try:
        done, _ = await asyncio.wait(
            [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        for t in done:
            if t in tasks and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await server.stop(grace=1)
        await authz.close()  # forwardAuth's pooled connections to auth servers
        await runner.cleanup()
        log.info("stopped")
