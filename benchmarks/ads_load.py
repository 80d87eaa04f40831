"""A small ADS load client: many Envoy-like streams from one process, over ``grpc.aio``.

Each stream has its own TCP connection (as each Envoy does) and behaves like Envoy's ADS client:
Clusters and Listeners by wildcard, then the endpoints of every cluster it was sent and the
route configurations its listeners name; every response is ACKed with the names it holds.
Resource names are read from the responses once per distinct payload and shared by all streams,
so the client spends its time on the protocol, not on decoding the same protos a thousand times.

Run as a process by ``benchmarks.fanout`` (``python -m benchmarks.ads_load --port P ...``), it
speaks JSON lines: it prints ``{"event": "synced"}`` once every stream has ACKed clusters,
endpoints, listeners and routes; on ``watch TOKEN`` from stdin it prints ``armed``, then
``changed`` with each stream's time (``time.monotonic()``, which is system-wide on Linux) of
ACKing the first routes containing TOKEN; on ``close`` it closes every stream and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_v3,
)
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
MAX_MESSAGE = 64 * 1024 * 1024

_cluster_names: dict[bytes, str] = {}
_route_names: dict[bytes, tuple[str, ...]] = {}


def cluster_name(value: bytes) -> str:
    name = _cluster_names.get(value)
    if name is None:
        name = _cluster_names[value] = cluster_pb2.Cluster.FromString(value).name
    return name


def route_names(value: bytes) -> tuple[str, ...]:
    """The RDS names a Listener's HTTP connection managers ask for."""
    names = _route_names.get(value)
    if names is None:
        listener = listener_pb2.Listener.FromString(value)
        found = []
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    hcm = hcm_v3.HttpConnectionManager.FromString(f.typed_config.value)
                    if hcm.HasField("rds"):
                        found.append(hcm.rds.route_config_name)
        names = _route_names[value] = tuple(sorted(set(found)))
    return names


@dataclass(slots=True)
class Stream:
    """One Envoy-like ADS stream."""

    port: int
    node_id: str
    delta: bool = False
    acked: set[str] = field(default_factory=set)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    token: bytes | None = None
    changed_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    clusters: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    error: str = ""
    # The last response per type: a SotW request for new names carries its nonce and version.
    last: dict[str, Any] = field(default_factory=dict)
    _first: bool = True
    _call: Any = None
    _channel: Any = None

    async def _send(self, type_url: str, names: Iterable[str] = (), resp: Any = None) -> None:
        req: Any
        if self.delta:
            req = discovery_v3.DeltaDiscoveryRequest(type_url=type_url)
            req.resource_names_subscribe.extend(names)
            if resp is not None:
                req.response_nonce = resp.nonce
        else:
            req = discovery_v3.DiscoveryRequest(type_url=type_url, resource_names=sorted(names))
            if resp is not None:
                req.response_nonce = resp.nonce
                req.version_info = resp.version_info
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="ads-load"))
            self._first = False
        await self._call.write(req)

    async def run(self) -> None:
        self._channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
            ],
        )
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        rpc = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        # Wait for the connection rather than fail fast: Envoy retries a refused connect too.
        self._call = rpc(wait_for_ready=True)
        try:
            await self._send(CLUSTER)
            await self._send(LISTENER)
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF:
                    return
                await self._handle(resp)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            pass

    def _values(self, resp: Any) -> list[tuple[str, bytes]]:
        if self.delta:
            return [(r.name, r.resource.value) for r in resp.resources]
        return [("", a.value) for a in resp.resources]

    async def _handle(self, resp: Any) -> None:
        t = resp.type_url
        values = self._values(resp)
        if t == CLUSTER:
            names = {n or cluster_name(v) for n, v in values}
            if self.delta:
                new = names - self.clusters
                self.clusters |= names
                self.clusters -= set(resp.removed_resources)
                await self._send(CLUSTER, resp=resp)
                if new:
                    await self._send(ENDPOINT, new)
            else:
                await self._send(CLUSTER, resp=resp)
                if names != self.clusters:
                    self.clusters = names
                    await self._send(ENDPOINT, names, resp=self.last.get(ENDPOINT))
        elif t == LISTENER:
            names = {r for _, v in values for r in route_names(v)}
            await self._send(LISTENER, resp=resp)
            if self.delta:
                new = names - self.routes
                self.routes |= names
                if new:
                    await self._send(ROUTE, new)
            elif names != self.routes:
                self.routes = names
                await self._send(ROUTE, names, resp=self.last.get(ROUTE))
        elif t == ENDPOINT:
            await self._send(ENDPOINT, () if self.delta else self.clusters, resp=resp)
        elif t == ROUTE:
            await self._send(ROUTE, () if self.delta else self.routes, resp=resp)
            token = self.token
            if token is not None and self.changed_at is None and any(token in v for _, v in values):
                self.changed_at = time.monotonic()
                self.changed.set()
        self.last[t] = resp
        self.acked.add(t)
        if len(self.acked) == 4:
            self.synced.set()

    def describe(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "acked": sorted(t.rsplit(".", 1)[-1] for t in self.acked),
            "clusters": len(self.clusters),
            "routes": sorted(self.routes),
            "error": self.error,
        }

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()


async def _lines() -> asyncio.Queue[str]:
    """stdin, line by line, without blocking the loop."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, "close")

    # A daemon thread, not the loop's executor: asyncio.run waits for executor threads at exit,
    # and this one blocks on stdin until the parent closes it.
    threading.Thread(target=reader, daemon=True).start()
    return queue


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def open_streams(
    port: int, count: int, *, delta: bool, prefix: str = "load", batch: int = 50
) -> tuple[list[Stream], list[asyncio.Task[None]]]:
    """Open ``count`` streams, ``batch`` connections at a time, and wait until all are synced."""
    streams = [Stream(port, f"{prefix}-{i:05d}", delta=delta) for i in range(count)]
    _ALL[:] = streams
    tasks: list[asyncio.Task[None]] = []
    for i in range(0, count, batch):
        group = streams[i : i + batch]
        started = [asyncio.create_task(s.run()) for s in group]
        tasks += started
        await asyncio.gather(*(_synced_or_ended(s, t) for s, t in zip(group, started, strict=True)))
        failed = [s.describe() for s in group if not s.synced.is_set()]
        if failed:
            raise RuntimeError(
                f"{len(failed)} streams ended before they were in sync: {failed[:3]}"
            )
    return streams, tasks


async def _synced_or_ended(stream: Stream, task: asyncio.Task[None]) -> None:
    synced = asyncio.create_task(stream.synced.wait())
    await asyncio.wait({synced, task}, return_when=asyncio.FIRST_COMPLETED)
    synced.cancel()


_ALL: list[Stream] = []


async def close_streams(streams: list[Stream], tasks: list[asyncio.Task[None]]) -> None:
    for s in streams:
        await s.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def main_async(args: argparse.Namespace) -> int:
    commands = await _lines()
    started = time.monotonic()
    opening = asyncio.create_task(
        open_streams(args.port, args.streams, delta=args.protocol == "delta")
    )
    while not opening.done():
        # "status" while opening: which streams are not in sync yet, and why.
        line = asyncio.create_task(commands.get())
        await asyncio.wait({opening, line}, return_when=asyncio.FIRST_COMPLETED)
        if line.done() and line.result() == "status":
            emit("status", streams=[s.describe() for s in _ALL if not s.synced.is_set()][:20])
        elif not line.done():
            line.cancel()
    streams, tasks = opening.result()
    sizes = {t.rsplit(".", 1)[-1]: r.ByteSize() for t, r in streams[0].last.items()}
    emit("synced", seconds=time.monotonic() - started, bytes=sizes)
    try:
        while True:
            line = await commands.get()
            if line.startswith("watch "):
                token = line.split(" ", 1)[1].encode()
                for s in streams:
                    s.token, s.changed_at = token, None
                    s.changed.clear()
                emit("armed")
                await asyncio.gather(*(s.changed.wait() for s in streams))
                emit("changed", times=[s.changed_at for s in streams])
            elif line == "close":
                break
    finally:
        errors = [s.error for s in streams if s.error]
        await close_streams(streams, tasks)
        emit("closed", errors=errors[:5], error_count=len(errors))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--protocol", choices=("sotw", "delta"), default="sotw")
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
