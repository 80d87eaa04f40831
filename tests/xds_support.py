"""An in-process ADS server on a background event loop, for protocol tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc

from controlplane.cli import translate_directory
from controlplane.metrics import Metrics
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from controlplane.xds.cache import SnapshotCache, make_snapshot
from controlplane.xds.csds import ClientStatusService
from controlplane.xds.csds import add_to_server as add_csds
from controlplane.xds.server import AggregatedDiscoveryService, add_to_server
from translators.envoy import Resources, build_resources
from translators.ir import EntryPoint
from translators.options import Options
from translators.translate import translate_world
from translators.world import build_world

T = TypeVar("T")

__all__ = ["XdsServer", "resources_from_dir", "translate_directory"]


def resources_from_dir(directory: Path, web_port: int) -> Resources:
    store = ResourceStore([FileSource.name])
    source = FileSource(directory, store)
    source.scan()
    source.publish()
    world, _ = build_world(store.objects())
    options = Options(entrypoints=(EntryPoint(name="web", address="127.0.0.1", port=web_port),))
    return build_resources(translate_world(world, options).ir)


class XdsServer:
    """The real AggregatedDiscoveryService on 127.0.0.1, driven from test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.metrics = Metrics()
        self.cache: SnapshotCache = self.call(self._make_cache)
        self.ads = AggregatedDiscoveryService(self.cache, self.metrics, warm_timeout=1.0)
        self.port: int = self.call(self._start)

    async def _make_cache(self) -> SnapshotCache:
        return SnapshotCache()

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        add_to_server(self.server, self.ads)
        add_csds(self.server, ClientStatusService(self.ads.nodes))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return fut.result(timeout)

    def publish(self, resources: Resources) -> bool:
        async def go() -> bool:
            return await self.cache.set_snapshot(make_snapshot(resources, self.cache.snapshot))

        return self.call(go)

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def stop(self) -> None:
        self.call(lambda: self.server.stop(grace=0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
