"""The ADS server against the protocol's rules: a raw gRPC client for the details, a real Envoy
for what matters (a NACK, a re-added cluster, several Envoys at once)."""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_v3
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3
from envoy.service.status.v3 import csds_pb2 as csds_v3
from envoy.service.status.v3 import csds_pb2_grpc
from google.rpc import status_pb2

from controlplane.localrun import Backend, Envoy, free_port, http_get, wait_for
from tests.support import service_yaml
from tests.xds_support import XdsServer, resources_from_dir
from translators.envoy import CLUSTER, ENDPOINT, ROUTE, Resources
from translators.envoy.wire import message_of


@pytest.fixture
def xds() -> Iterator[XdsServer]:
    server = XdsServer()
    yield server
    server.stop()


class RawClient:
    """One ADS stream, driven request by request like Envoy would."""

    def __init__(self, port: int, node_id: str = "raw-1") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.requests: queue.Queue[discovery_v3.DiscoveryRequest | None] = queue.Queue()
        self.responses: queue.Queue[discovery_v3.DiscoveryResponse] = queue.Queue()
        self.node_id = node_id
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._first = True

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def send(
        self,
        type_url: str,
        names: list[str] | None = None,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        req = discovery_v3.DiscoveryRequest(
            type_url=type_url,
            resource_names=names or [],
            response_nonce=nonce,
            version_info=version,
        )
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="raw"))
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)

    def recv(self, timeout: float = 5.0) -> discovery_v3.DiscoveryResponse:
        return self.responses.get(timeout=timeout)

    def nothing(self, wait: float = 0.5) -> bool:
        try:
            resp = self.responses.get(timeout=wait)
        except queue.Empty:
            return True
        pytest.fail(f"unexpected response {resp.type_url} v{resp.version_info}")

    def ack(self, resp: discovery_v3.DiscoveryResponse, names: list[str] | None = None) -> None:
        self.send(resp.type_url, names, nonce=resp.nonce, version=resp.version_info)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def raw(xds: XdsServer) -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def make(node_id: str = "raw-1") -> RawClient:
        c = RawClient(xds.port, node_id)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def _config(tmp: Path, backends: list[Backend], host: str = "app.example.com") -> Path:
    d = tmp / "cfg"
    d.mkdir(exist_ok=True)
    svcs = "---\n".join(service_yaml(f"s-{b.name}", [b]) for b in backends)
    routes = "\n".join(
        f"  - match: Host(`{b.name}.{host}`)\n    services: [{{name: s-{b.name}, port: 80}}]"
        for b in backends
    )
    (d / "all.yaml").write_text(
        svcs
        + f"""---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: app, namespace: default}}
spec:
  routes:
{routes}
"""
    )
    return d


def test_nothing_is_sent_before_the_first_snapshot(
    xds: XdsServer, raw: Callable[..., RawClient], tmp_path: Path
) -> None:
    client = raw()
    client.send(CLUSTER)
    assert client.nothing(0.5)
    b = Backend("a")
    try:
        xds.publish(resources_from_dir(_config(tmp_path, [b]), free_port()))
    finally:
        b.server.server_close()
    resp = client.recv()
    assert resp.type_url == CLUSTER and len(resp.resources) == 1


def test_ack_nack_stale_nonce_and_subscription_changes(
    xds: XdsServer, raw: Callable[..., RawClient], tmp_path: Path
) -> None:
    a, b = Backend("a"), Backend("b")
    try:
        res = resources_from_dir(_config(tmp_path, [a, b]), free_port())
    finally:
        a.server.server_close()
        b.server.server_close()
    xds.publish(res)
    client = raw()
    client.send(CLUSTER)
    cds = client.recv()
    assert {r.type_url for r in cds.resources} == {CLUSTER}
    # A request with a stale nonce is ignored (R7).
    client.send(CLUSTER, nonce="not-a-nonce-we-sent")
    assert client.nothing(0.3)
    # NACK: remembered, counted, and the same version is never sent again (R5, R6).
    client.send(CLUSTER, nonce=cds.nonce, error="cluster rejected for the test")
    assert client.nothing(0.5)
    assert xds.counter("switchman_xds_nacks_total", node="raw-1", type="Cluster") == 1
    # EDS by name: only what is asked for; the first request for a type is always answered.
    names = sorted(n for n, _ in res.by_type[ENDPOINT])
    client.send(ENDPOINT, names[:1])
    eds = client.recv()
    assert eds.type_url == ENDPOINT and len(eds.resources) == 1
    client.ack(eds, names[:1])
    assert client.nothing(0.3)
    # A changed subscription is answered even though nothing changed (R9).
    client.send(ENDPOINT, names, nonce=eds.nonce, version=eds.version_info)
    eds2 = client.recv()
    assert len(eds2.resources) == 2
    client.ack(eds2, names)
    # Re-subscribing to a name it already had (a cluster removed and re-added) is answered too.
    client.send(ENDPOINT, names[1:], nonce=eds2.nonce, version=eds2.version_info)
    eds3 = client.recv()
    client.ack(eds3, names[1:])
    client.send(ENDPOINT, names, nonce=eds3.nonce, version=eds3.version_info)
    eds4 = client.recv()
    assert len(eds4.resources) == 2
    client.ack(eds4, names)
    # An unchanged snapshot published again wakes nobody.
    assert xds.publish(res) is False
    assert client.nothing(0.3)


def _csds(port: int) -> list[csds_v3.ClientConfig]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        return list(stub.FetchClientStatus(csds_v3.ClientStatusRequest(), timeout=5).config)


def _with_bad_route(res: Resources) -> Resources:
    """The same resources with a route whose regex Envoy's RE2 rejects."""
    by_type = dict(res.by_type)
    name, rc = by_type[ROUTE][0]
    rc = copy.deepcopy(message_of(rc))
    bad = route_components_pb2.Route(name="bad")
    bad.match.safe_regex.regex = "(unclosed"
    bad.direct_response.status = 200
    rc.virtual_hosts[0].routes.insert(0, bad)
    by_type[ROUTE] = ((name, rc),)
    return Resources(by_type=by_type)


@pytest.mark.envoy
def test_a_nacked_config_is_reported_not_resent_and_envoy_keeps_the_last_good(
    xds: XdsServer, tmp_path: Path
) -> None:
    a, b = Backend("a").start(), Backend("b").start()
    web = free_port()
    good = resources_from_dir(_config(tmp_path, [a]), web)
    xds.publish(good)
    envoy = Envoy(xds.port, tmp_path, protocol="sotw").start()
    try:
        wait_for(
            lambda: (
                http_get(f"http://127.0.0.1:{web}/", headers={"Host": "a.app.example.com"})[0]
                == 200
            ),
            15,
            "served",
        )
        pushes_before = xds.counter("switchman_xds_pushes_total", type="RouteConfiguration")
        xds.publish(_with_bad_route(good))
        wait_for(
            lambda: (
                xds.counter(
                    "switchman_xds_nacks_total", node="gateway-1", type="RouteConfiguration"
                )
                == 1
            ),
            10,
            "NACK",
        )
        pushes_after_nack = xds.counter("switchman_xds_pushes_total", type="RouteConfiguration")
        assert pushes_after_nack == pushes_before + 1
        time.sleep(1.5)  # Envoy keeps its watch open; a resend loop would show up here
        assert (
            xds.counter("switchman_xds_pushes_total", type="RouteConfiguration")
            == pushes_after_nack
        )
        assert (
            xds.counter("switchman_xds_nacks_total", node="gateway-1", type="RouteConfiguration")
            == 1
        )
        node = next(iter(xds.ads.nodes.values()))
        assert (
            "unclosed" in node.last_nack["RouteConfiguration"]
            or node.last_nack["RouteConfiguration"]
        )
        # Envoy still serves the last good config.
        assert http_get(f"http://127.0.0.1:{web}/", headers={"Host": "a.app.example.com"})[0] == 200
        # Client Status Discovery: what the Envoy holds, and what it rejected.
        configs = _csds(xds.port)
        assert [c.node.id for c in configs] == ["gateway-1"]
        held = {(g.type_url.rsplit(".", 1)[-1], g.name): g for g in configs[0].generic_xds_configs}
        assert (
            held[("Cluster", "default/s-a/80")].client_status == dump_v3.ClientResourceStatus.ACKED
        )
        rejected = held[("RouteConfiguration", "web")]
        assert rejected.client_status == dump_v3.ClientResourceStatus.NACKED
        assert rejected.error_state.details
        # The next good snapshot is sent and applied.
        xds.publish(resources_from_dir(_config(tmp_path, [a, b]), web))
        wait_for(
            lambda: (
                http_get(f"http://127.0.0.1:{web}/", headers={"Host": "b.app.example.com"})[0]
                == 200
            ),
            15,
            "recovered",
        )
    finally:
        envoy.stop()
        a.stop()
        b.stop()


@pytest.mark.envoy
@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_many_envoys_and_a_cluster_removed_then_re_added(
    xds: XdsServer, tmp_path: Path, protocol: str
) -> None:
    a, b = Backend("a").start(), Backend("b").start()
    web1 = free_port()
    both_a = resources_from_dir(_config(tmp_path, [a, b]), web1)
    envoys = []
    try:
        # Two gateways with different listeners share the server; each gets its own stream.
        xds.publish(both_a)
        e1 = Envoy(xds.port, tmp_path, node_id="gw-1", protocol=protocol).start()
        envoys.append(e1)
        e2 = Envoy(xds.port, tmp_path, node_id="gw-2", protocol=protocol).start()
        envoys.append(e2)

        def serves(port: int, host: str, want: int = 200) -> Callable[[], bool]:
            return lambda: http_get(f"http://127.0.0.1:{port}/", headers={"Host": host})[0] == want

        wait_for(serves(web1, "b.app.example.com"), 15, "b served")
        assert {n.node_id for n in xds.ads.nodes.values()} == {"gw-1", "gw-2"}
        # Both Envoys hold the same routes (they share the listener port with SO_REUSEPORT).
        wait_for(
            lambda: len({n.acked.get("RouteConfiguration") for n in xds.ads.nodes.values()}) == 1,
            10,
            "both Envoys ACK the same routes",
        )
        # Remove b (its cluster disappears), then bring it back: Envoy must get its endpoints again.
        (tmp_path / "only-a").mkdir()
        xds.publish(resources_from_dir(_config(tmp_path / "only-a", [a]), web1))
        wait_for(serves(web1, "b.app.example.com", 404), 15, "b removed")

        def clusters() -> list[str]:
            dump = e1.config_dump()["configs"][1].get("dynamic_active_clusters", [])
            return [c["cluster"]["name"] for c in dump]

        # The stale cluster goes last, once the routes that stopped using it are acknowledged.
        wait_for(lambda: "default/s-b/80" not in clusters(), 10, "stale cluster removed")
        xds.publish(both_a)
        wait_for(serves(web1, "b.app.example.com"), 15, "b back")
        for _ in range(20):
            assert serves(web1, "b.app.example.com")()
    finally:
        for e in envoys:
            e.stop()
        a.stop()
        b.stop()


def _tables(**domains: str) -> Resources:
    """RouteConfigurations named by the keywords, each one virtual host for the given domain."""
    return Resources(
        by_type={
            ROUTE: tuple(
                (
                    name,
                    route_pb2.RouteConfiguration(
                        name=name,
                        virtual_hosts=[
                            route_components_pb2.VirtualHost(name="v", domains=[domain])
                        ],
                    ),
                )
                for name, domain in sorted(domains.items())
            )
        }
    )


def test_sotw_resends_only_the_route_configurations_that_changed(
    xds: XdsServer, raw: Callable[..., RawClient]
) -> None:
    """RDS is not state of the world: a changed table goes alone (one host's table, with route
    scopes); a new subscription gets every table it names."""
    xds.publish(_tables(r1="a", r2="b", r3="c"))
    client = raw()
    client.send(ROUTE, ["r1", "r2", "r3"])
    first = client.recv()
    assert len(first.resources) == 3
    client.ack(first, ["r1", "r2", "r3"])
    xds.publish(_tables(r1="a", r2="b2", r3="c"))
    second = client.recv()
    got = [message_of_any(r) for r in second.resources]
    assert [(m.name, m.virtual_hosts[0].domains[0]) for m in got] == [("r2", "b2")]
    assert second.version_info != first.version_info
    client.ack(second, ["r1", "r2", "r3"])
    assert client.nothing(0.3)
    # A new name: the whole subscription again (the client may have forgotten the others).
    xds.publish(_tables(r1="a", r2="b2", r3="c", r4="d"))
    client.send(ROUTE, ["r1", "r2", "r3", "r4"], nonce=second.nonce, version=second.version_info)
    third = client.recv()
    assert sorted(message_of_any(r).name for r in third.resources) == ["r1", "r2", "r3", "r4"]


def message_of_any(packed: Any) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration()
    packed.Unpack(out)
    return out
