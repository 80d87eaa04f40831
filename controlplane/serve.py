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
from controlplane.settings import ServeSettings
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.csds import ClientStatusService
from controlplane.xds.csds import add_to_server as add_csds
from controlplane.xds.server import AggregatedDiscoveryService, add_to_server

log = logging.getLogger("switchman")

MAX_MESSAGE = 64 * 1024 * 1024  # gRPC's 4 MB default breaks large RouteConfigurations


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
    )
    ads = AggregatedDiscoveryService(cache, metrics)

    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    add_to_server(server, ads)
    add_csds(server, ClientStatusService(ads.nodes))
    # Envoy's ext_authz filter asks the same port (basicAuth/digestAuth users; authz.py).
    add_authz_to_server(server, AuthorizationService(lambda: pipeline.ir))
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
        await runner.cleanup()
        log.info("stopped")
