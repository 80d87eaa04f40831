"""Backpressure: an Envoy that stops reading delays no other Envoy and holds only its latest
state; when it goes away, its stream goes too.

Raw ``grpc.aio`` clients against the in-process server (with ``switchman serve``'s gRPC options),
so the server's streams can be looked at. The RouteConfiguration is 12 MiB: more than gRPC's
4 MB default message limit, and more than the socket buffers and HTTP/2 windows between a
server and a client that does not read, so the server's write really waits on flow control.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controlplane.settings import MIB
from tests.xds_aio import AioClient, TunedXdsServer, generation_of, port_of, synthetic
from translators.envoy import ENDPOINT, ROUTE

BIG = 12 * MIB
CLUSTERS = ["c0", "c1", "c2"]
GENERATIONS = 4  # published while the stuck client does not read


@pytest.fixture
def xds() -> Iterator[TunedXdsServer]:
    server = TunedXdsServer()
    yield server
    server.stop()


async def publish(xds: TunedXdsServer, generation: int) -> None:
    # Every generation changes the routes and c0's endpoints. The first is small: a client that
    # has not read much yet has small HTTP/2 windows (gRPC grows them as data flows).
    size = BIG if generation else 1000
    await xds.apublish(synthetic(generation, ports={"c0": 9000 + generation}, route_bytes=size))


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def read_until(client: AioClient, generation: int) -> list[tuple[str, int]]:
    """Read and ACK until both the routes and the endpoints of ``generation`` have arrived;
    what came, in order: ("routes", generation) and ("endpoints", c0's port)."""
    seen: list[tuple[str, int]] = []
    want = {("routes", generation), ("endpoints", 9000 + generation)}
    while not want <= set(seen):
        resp = await client.recv(60)
        await client.ack(resp, client.names[resp.type_url])
        if resp.type_url == ROUTE:
            seen.append(("routes", generation_of(resp)))
        elif resp.type_url == ENDPOINT and len(resp.resources) == 1:
            seen.append(("endpoints", port_of(resp)))
    return seen


def gauge(xds: TunedXdsServer, name: str) -> float:
    return xds.counter(name)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_stuck_envoy_delays_no_one_and_holds_only_its_latest_state(
    xds: TunedXdsServer, delta: bool
) -> None:
    xds.run(lambda: _stuck_and_fast(xds, delta))


async def _stuck_and_fast(xds: TunedXdsServer, delta: bool) -> None:
    await publish(xds, 0)
    stuck = AioClient(xds.port, "stuck", delta=delta)
    fast = AioClient(xds.port, "fast", delta=delta)
    clients: list[Any] = [stuck, fast]
    try:
        for c in clients:
            # EDS for c0 only: the one cluster whose endpoints change.
            await c.subscribe_all(["c0"])
            got = await c.sync()
            assert generation_of(got[ROUTE]) == 0
        s = xds.stream_of("stuck")
        built, woken = s.responses, s.wakeups

        # From here on "stuck" reads nothing. "fast" must get every version, in order.
        stuck.pause()
        for generation in range(1, GENERATIONS + 1):
            await publish(xds, generation)
            seen = await read_until(fast, generation)
            assert seen == [("endpoints", 9000 + generation), ("routes", generation)]

        # The stuck stream was told of every snapshot, but sent at most one update per type
        # (endpoints, then routes), and its write of the routes waits on flow control.
        await eventually(lambda: s.writing, "the stuck stream's write to block")
        assert s.wakeups - woken >= GENERATIONS
        assert s.responses - built <= 2
        assert gauge(xds, "switchman_xds_writes_pending") == 1

        # Reading again, it gets what was in flight, then the latest: nothing in between. (The
        # routes in flight are those current when they were written: the make-before-break gate
        # held them back while the endpoints were unacknowledged.)
        stuck.resume()
        seen = await read_until(stuck, GENERATIONS)
        assert [p for kind, p in seen if kind == "endpoints"] == [9001, 9000 + GENERATIONS]
        routes = [g for kind, g in seen if kind == "routes"]
        assert routes in ([GENERATIONS], *([g, GENERATIONS] for g in range(1, GENERATIONS)))

        # An Envoy that subscribes and never reads, and goes away while its write is blocked:
        # its stream is cleaned up, and so is the other one's when it leaves.
        stalled = AioClient(xds.port, "stalled", delta=delta)
        clients.append(stalled)
        stalled.pause()
        await stalled.subscribe_all(["c0"])
        await eventually(
            lambda: any(t.node_id == "stalled" and t.writing for t in xds.streams()),
            "the stalled stream's write to block",
        )
        assert gauge(xds, "switchman_xds_writes_pending") == 1
        for gone in (stalled, stuck):
            await gone.close()
            clients.remove(gone)
        await eventually(
            lambda: [t.node_id for t in xds.streams()] == ["fast"],
            "the stalled and stuck streams to be dropped",
        )
        assert [n.node_id for n in xds.ads.nodes.values()] == ["fast"]
        assert gauge(xds, "switchman_xds_writes_pending") == 0
        assert gauge(xds, "switchman_xds_connected_proxies") == 1

        # The survivor still gets updates; once it goes too, nothing is left behind.
        await publish(xds, GENERATIONS + 1)
        await read_until(fast, GENERATIONS + 1)
        await fast.close()
        clients.remove(fast)
        await eventually(lambda: not xds.streams(), "every stream to be dropped")
        assert xds.ads.nodes == {}
        assert xds.ads._fan_out_task is None
        assert gauge(xds, "switchman_xds_connected_proxies") == 0
    finally:
        for c in clients:
            await c.close()


def test_heap_is_given_back_once_many_streams_have_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a mass disconnect the server asks the C allocator to return free pages (glibc
    keeps freed gRPC buffers otherwise); a few streams coming and going do not trigger it."""
    from controlplane.metrics import Metrics
    from controlplane.xds import server as server_mod
    from controlplane.xds.cache import SnapshotCache

    trims: list[int] = []
    monkeypatch.setattr(server_mod, "release_free_heap", lambda: trims.append(1))

    async def scenario() -> None:
        ads = server_mod.AggregatedDiscoveryService(SnapshotCache(), Metrics())
        streams = [
            server_mod.SotwStream(ads.cache, ads.metrics, ads.nodes, subsets=ads.subsets)
            for _ in range(100)
        ]
        for s in streams:
            ads._attach(s)
        for s in streams[:10]:  # a few leave: nothing to give back
            ads._detach(s)
        await asyncio.sleep(1.5)
        assert trims == []
        for s in streams[10:70]:  # most leave
            ads._detach(s)
        await asyncio.sleep(1.5)
        assert trims == [1]
        assert len(ads.streams) == 30
        for s in streams[70:]:
            ads._detach(s)
        assert ads._fan_out_task is None

    asyncio.run(scenario())
