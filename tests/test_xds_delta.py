"""Incremental (Delta) ADS: a raw gRPC client for the protocol rules, a real Envoy for the rest."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3
from google.rpc import status_pb2

from controlplane.localrun import Backend, Envoy, free_port, http_get, wait_for
from tests.test_xds_protocol import _config, _with_bad_route
from tests.xds_support import XdsServer, resources_from_dir
from translators.envoy import CLUSTER, ENDPOINT


@pytest.fixture
def xds() -> Iterator[XdsServer]:
    server = XdsServer()
    yield server
    server.stop()


class DeltaClient:
    def __init__(self, port: int, node_id: str = "delta-1") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.requests: queue.Queue[discovery_v3.DeltaDiscoveryRequest | None] = queue.Queue()
        self.responses: queue.Queue[discovery_v3.DeltaDiscoveryResponse] = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()
        self.node_id = node_id
        self.first = True

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def send(
        self,
        type_url: str,
        subscribe: list[str] | None = None,
        unsubscribe: list[str] | None = None,
        nonce: str = "",
        initial: dict[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        req = discovery_v3.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=subscribe or [],
            resource_names_unsubscribe=unsubscribe or [],
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if self.first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="raw"))
            self.first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)

    def recv(self, timeout: float = 5.0) -> discovery_v3.DeltaDiscoveryResponse:
        return self.responses.get(timeout=timeout)

    def nothing(self, wait: float = 0.4) -> bool:
        try:
            resp = self.responses.get(timeout=wait)
        except queue.Empty:
            return True
        pytest.fail(f"unexpected response {resp.type_url}: {[r.name for r in resp.resources]}")

    def ack(self, resp: discovery_v3.DeltaDiscoveryResponse) -> None:
        self.send(resp.type_url, nonce=resp.nonce)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def client(xds: XdsServer) -> Iterator[Callable[..., DeltaClient]]:
    made: list[DeltaClient] = []

    def make(node_id: str = "delta-1") -> DeltaClient:
        c = DeltaClient(xds.port, node_id)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _resources(tmp: Path, names: list[str]) -> object:
    backends = [Backend(n) for n in names]
    try:
        return resources_from_dir(_config(tmp, backends), free_port())
    finally:
        for b in backends:
            b.server.server_close()


def test_delta_subscriptions_versions_and_removals(
    xds: XdsServer, client: Callable[..., DeltaClient], tmp_path: Path
) -> None:
    (tmp_path / "ab").mkdir()
    (tmp_path / "a").mkdir()
    both = _resources(tmp_path / "ab", ["a", "b"])
    xds.publish(both)  # type: ignore[arg-type]
    c = client()
    c.send(CLUSTER)  # wildcard: no names on the first request
    cds = c.recv()
    names = sorted(r.name for r in cds.resources)
    assert names == ["default/s-a/80", "default/s-b/80"] and not cds.removed_resources
    versions = {r.name: r.version for r in cds.resources}
    c.ack(cds)
    # EDS by name; a name that does not exist is reported removed at once (R13).
    c.send(ENDPOINT, subscribe=["default/s-a/80", "nope"])
    eds = c.recv()
    assert [r.name for r in eds.resources] == ["default/s-a/80"]
    assert list(eds.removed_resources) == ["nope"]
    c.ack(eds)
    assert c.nothing()
    # Unsubscribe needs no answer (R19); re-subscribing is answered even if unchanged (R18).
    c.send(ENDPOINT, unsubscribe=["default/s-a/80"])
    assert c.nothing()
    c.send(ENDPOINT, subscribe=["default/s-a/80"])
    again = c.recv()
    assert [r.name for r in again.resources] == ["default/s-a/80"]
    c.ack(again)
    # A NACK is recorded and the same version is not sent again.
    xds.publish(_resources(tmp_path / "a", ["a"]))  # type: ignore[arg-type]
    update = c.recv()
    assert update.type_url == CLUSTER
    assert list(update.removed_resources) == ["default/s-b/80"]
    c.send(CLUSTER, nonce=update.nonce, error="rejected for the test")
    eds = c.recv()  # a's endpoints changed too (a new backend port): sent, and ACKed
    assert eds.type_url == ENDPOINT
    c.ack(eds)
    assert c.nothing(0.6)  # the rejected cluster update is not sent again
    assert xds.counter("switchman_xds_nacks_total", node="delta-1", type="Cluster") == 1
    # A reconnecting client that already has every version gets nothing new (R20).
    fresh = client("delta-2")
    xds.publish(both)  # type: ignore[arg-type]
    fresh.send(CLUSTER, initial=versions)
    assert fresh.nothing()


@pytest.mark.envoy
def test_envoy_over_delta_serves_updates_removals_and_keeps_last_good_on_nack(
    xds: XdsServer, tmp_path: Path
) -> None:
    a, b = Backend("a").start(), Backend("b").start()
    web = free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "ab").mkdir()
    only_a = resources_from_dir(_config(tmp_path / "a", [a]), web)
    both = resources_from_dir(_config(tmp_path / "ab", [a, b]), web)
    xds.publish(only_a)
    envoy = Envoy(xds.port, tmp_path, protocol="delta").start()

    def serves(host: str, want: int = 200) -> Callable[[], bool]:
        return lambda: http_get(f"http://127.0.0.1:{web}/", headers={"Host": host})[0] == want

    try:
        wait_for(serves("a.app.example.com"), 15, "a served over delta")
        assert [n.protocol for n in xds.ads.nodes.values()] == ["delta"]
        xds.publish(both)
        wait_for(serves("b.app.example.com"), 15, "b added")
        xds.publish(only_a)  # b's cluster goes, after the routes that used it
        wait_for(serves("b.app.example.com", 404), 15, "b removed")

        def clusters() -> list[str]:
            dump = envoy.config_dump()["configs"][1].get("dynamic_active_clusters", [])
            return [c["cluster"]["name"] for c in dump]

        wait_for(lambda: "default/s-b/80" not in clusters(), 10, "cluster removed")
        xds.publish(both)  # re-added: its endpoints must come back too
        wait_for(serves("b.app.example.com"), 15, "b back")
        xds.publish(_with_bad_route(both))
        wait_for(
            lambda: (
                xds.counter(
                    "switchman_xds_nacks_total", node="gateway-1", type="RouteConfiguration"
                )
                >= 1
            ),
            10,
            "NACK",
        )
        assert serves("b.app.example.com")()  # last good config still served
    finally:
        envoy.stop()
        a.stop()
        b.stop()
