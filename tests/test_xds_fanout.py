"""Fan-out: a snapshot change wakes only the streams that watch something it changed (an
endpoint change wakes the streams subscribed to that cluster's endpoints, not every Envoy:
Contour #6743). ``StreamBase.wakeups`` counts the wake-ups, so a stream woken for nothing shows
even when it ends up sending nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.xds_aio import AioClient, TunedXdsServer, generation_of, port_of, synthetic
from translators.envoy import CLUSTER, ENDPOINT, ROUTE


@pytest.fixture
def xds() -> Iterator[TunedXdsServer]:
    server = TunedXdsServer()
    yield server
    server.stop()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_an_endpoint_change_wakes_only_the_streams_watching_that_cluster(
    xds: TunedXdsServer, delta: bool
) -> None:
    xds.run(lambda: _endpoint_change(xds, delta))


async def _endpoint_change(xds: TunedXdsServer, delta: bool) -> None:
    await xds.apublish(synthetic(0, clusters=3))
    # Two Envoys watching one cluster's endpoints each, one watching clusters, one watching routes.
    eds_c0 = AioClient(xds.port, "eds-c0", delta=delta)
    eds_c1 = AioClient(xds.port, "eds-c1", delta=delta)
    cds = AioClient(xds.port, "cds", delta=delta)
    rds = AioClient(xds.port, "rds", delta=delta)
    clients = [eds_c0, eds_c1, cds, rds]
    try:
        for client, type_url, names in (
            (eds_c0, ENDPOINT, ["c0"]),
            (cds, CLUSTER, []),
            (rds, ROUTE, ["web"]),
            (eds_c1, ENDPOINT, ["c1"]),
        ):
            await client.request(type_url, names)
            last = await client.recv()
            await client.ack(last, names)
        last_c1 = last  # eds-c1 subscribed last
        before = {c.node_id: xds.stream_of(c.node_id).wakeups for c in clients}

        # Only c0's endpoints change.
        await xds.apublish(synthetic(0, clusters=3, ports={"c0": 9100}))
        update = await eds_c0.recv()
        assert port_of(update) == 9100
        await eds_c0.ack(update, ["c0"])
        for quiet in (eds_c1, cds, rds):
            await quiet.nothing()
        woken = {c.node_id: xds.stream_of(c.node_id).wakeups - before[c.node_id] for c in clients}
        assert woken == {"eds-c0": 1, "eds-c1": 0, "cds": 0, "rds": 0}

        # Only the routes change.
        await xds.apublish(synthetic(1, clusters=3, ports={"c0": 9100}))
        update = await rds.recv()
        assert generation_of(update) == 1
        for quiet in (eds_c0, eds_c1, cds):
            await quiet.nothing()
        woken = {c.node_id: xds.stream_of(c.node_id).wakeups - before[c.node_id] for c in clients}
        assert woken == {"eds-c0": 1, "eds-c1": 0, "cds": 0, "rds": 1}

        # A cluster added: the cluster watcher hears of it, and so does a stream that asked for
        # its endpoints before it existed (R13: requested names are remembered).
        if delta:
            await eds_c1.request(ENDPOINT, ["c3"])
            resp = await eds_c1.recv()
            assert list(resp.removed_resources) == ["c3"]  # Delta says "absent" at once
        else:
            await eds_c1.request(
                ENDPOINT, ["c1", "c3"], nonce=last_c1.nonce, version=last_c1.version_info
            )
            resp = await eds_c1.recv()
            assert len(resp.resources) == 1  # SotW: c1 again, for the new name set (R9)
        await eds_c1.ack(resp, ["c1", "c3"])
        await xds.apublish(synthetic(1, clusters=4, ports={"c0": 9100}))
        clusters = await cds.recv()
        assert len(clusters.resources) == (1 if delta else 4)  # Delta: what changed
        got = await eds_c1.recv()
        assert len(got.resources) == (1 if delta else 2)  # SotW: all it asked for that exists
        for quiet in (eds_c0, rds):
            await quiet.nothing()
    finally:
        for c in clients:
            await c.close()
