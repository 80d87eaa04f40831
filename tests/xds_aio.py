"""Raw ``grpc.aio`` ADS clients (SotW and Delta) and synthetic snapshots, for the fan-out and
backpressure tests. The server runs in-process (``XdsServer``) with the gRPC options that
``switchman serve`` uses, so the tests can look at its streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from controlplane.serve import grpc_server_options
from controlplane.settings import MIB, GrpcSettings
from controlplane.xds.cache import make_snapshot
from controlplane.xds.csds import ClientStatusService
from controlplane.xds.csds import add_to_server as add_csds
from controlplane.xds.server import StreamBase, add_to_server
from tests.xds_support import XdsServer
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources

ALL_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


class TunedXdsServer(XdsServer):
    """``XdsServer`` with ``switchman serve``'s gRPC options (keepalives, message limits)."""

    def __init__(self, settings: GrpcSettings | None = None) -> None:
        self.settings = settings or GrpcSettings()
        super().__init__()

    async def _start(self) -> int:
        self.server = grpc.aio.server(options=grpc_server_options(self.settings))
        add_to_server(self.server, self.ads)
        add_csds(self.server, ClientStatusService(self.ads.nodes))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def run(self, scenario: Callable[[], Coroutine[Any, Any, None]], timeout: float = 240) -> None:
        """Run a client scenario on the server's own event loop: ``grpc.aio`` objects belong to
        one loop, and a second loop in the process leaves gRPC callbacks on a closed loop."""
        self.call(scenario, timeout)

    async def apublish(self, resources: Resources) -> bool:
        return await self.cache.set_snapshot(make_snapshot(resources, self.cache.snapshot))

    def streams(self) -> list[StreamBase]:
        """The open streams (call from the server's loop, in a scenario)."""
        return list(self.ads.streams.values())

    def stream_of(self, node_id: str) -> StreamBase:
        found = [s for s in self.streams() if s.node_id == node_id]
        assert len(found) == 1, f"{len(found)} streams for node {node_id}"
        return found[0]


def synthetic(
    generation: int,
    *,
    clusters: int = 3,
    ports: Mapping[str, int] | None = None,
    route_bytes: int = 1000,
) -> Resources:
    """Clusters ``c0``… with one endpoint each (port from ``ports``, default 9000), a listener
    ``web`` and a RouteConfiguration ``web`` of about ``route_bytes`` whose one virtual host is
    named ``gen-<generation>``."""
    ports = ports or {}
    names = [f"c{i}" for i in range(clusters)]
    cds = []
    eds = []
    for name in names:
        c = cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.EDS,
            connect_timeout=duration_pb2.Duration(seconds=1),
        )
        c.eds_cluster_config.eds_config.CopyFrom(
            config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            )
        )
        cds.append((name, c))
        address = address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address="127.0.0.1", port_value=ports.get(name, 9000)
            )
        )
        cla = endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(address=address)
                        )
                    ]
                )
            ],
        )
        eds.append((name, cla))
    listener = listener_pb2.Listener(
        name="web",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=8000)
        ),
    )
    route = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"))
    route.direct_response.status = 200
    route.direct_response.body.inline_string = "x" * route_bytes
    rc = route_pb2.RouteConfiguration(
        name="web",
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=f"gen-{generation}", domains=["*"], routes=[route]
            )
        ],
    )
    return Resources(
        by_type={
            CLUSTER: tuple(cds),
            ENDPOINT: tuple(eds),
            LISTENER: (("web", listener),),
            ROUTE: (("web", rc),),
        }
    )


def generation_of(resp: Any) -> int:
    """The ``gen-N`` marker in a RouteConfiguration response (SotW or Delta)."""
    assert resp.type_url == ROUTE and len(resp.resources) == 1
    first = resp.resources[0]
    delta = isinstance(resp, discovery_v3.DeltaDiscoveryResponse)
    rc = route_pb2.RouteConfiguration.FromString(first.resource.value if delta else first.value)
    return int(rc.virtual_hosts[0].name.removeprefix("gen-"))


def port_of(resp: Any) -> int:
    """The endpoint port in a one-ClusterLoadAssignment response (SotW or Delta)."""
    assert resp.type_url == ENDPOINT and len(resp.resources) == 1
    first = resp.resources[0]
    delta = isinstance(resp, discovery_v3.DeltaDiscoveryResponse)
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(
        first.resource.value if delta else first.value
    )
    return int(cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value)


def channel(port: int, max_message: int = 64 * MIB) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            # One TCP connection per client, as one Envoy has: gRPC would otherwise share one.
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


class AioClient:
    """One ADS stream over its own connection; ``delta`` picks the protocol variant.

    A task reads responses into a queue (cancelling a ``grpc.aio`` read would cancel the RPC);
    ``pause()`` stops it asking gRPC for more, as an Envoy that stops reading would: at most the
    read already waiting completes, then HTTP/2 flow control holds the rest on the server."""

    def __init__(self, port: int, node_id: str, *, delta: bool = False) -> None:
        self.node_id = node_id
        self.delta = delta
        self.channel = channel(port)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.names: dict[str, list[str]] = {t: [] for t in ALL_TYPES}
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.reading = asyncio.Event()
        self.reading.set()
        self._reader = asyncio.create_task(self._read())
        self._first = True

    async def _read(self) -> None:
        while True:
            await self.reading.wait()
            try:
                resp = await self.call.read()
            except grpc.aio.AioRpcError as exc:
                self.responses.put_nowait(exc)
                return
            self.responses.put_nowait(resp)
            if resp is grpc.aio.EOF:
                return

    def pause(self) -> None:
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()

    def _node(self, req: Any) -> None:
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="aio"))
            self._first = False

    async def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        """SotW: a request for ``names``; Delta: a subscription to ``names``, or an ACK."""
        req: Any
        if self.delta:
            req = discovery_v3.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=list(names), response_nonce=nonce
            )
        else:
            req = discovery_v3.DiscoveryRequest(
                type_url=type_url,
                resource_names=list(names),
                response_nonce=nonce,
                version_info=version,
            )
        self._node(req)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(req)

    async def recv(self, timeout: float = 30.0) -> Any:
        resp = await asyncio.wait_for(self.responses.get(), timeout)
        if isinstance(resp, grpc.aio.AioRpcError):
            raise resp
        assert resp is not grpc.aio.EOF, "stream ended"
        return resp

    async def nothing(self, wait: float = 0.5) -> None:
        """Fails if a response arrives within ``wait`` seconds."""
        try:
            resp = await asyncio.wait_for(self.responses.get(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"{self.node_id}: unexpected response {resp.type_url}")

    async def ack(self, resp: Any, names: Iterable[str] = ()) -> None:
        if self.delta:
            await self.request(resp.type_url, nonce=resp.nonce)
        else:
            await self.request(resp.type_url, names, nonce=resp.nonce, version=resp.version_info)

    async def subscribe_all(self, eds: Iterable[str], rds: Iterable[str] = ("web",)) -> None:
        """Ask for everything, as Envoy does: CDS and LDS wildcard, EDS and RDS by name."""
        eds, rds = list(eds), list(rds)
        await self.request(CLUSTER)
        await self.request(ENDPOINT, eds)
        await self.request(LISTENER)
        await self.request(ROUTE, rds)
        self.names = {CLUSTER: [], ENDPOINT: eds, LISTENER: [], ROUTE: rds}

    async def sync(self, timeout: float = 30.0) -> dict[str, Any]:
        """Read and ACK until one response of every type has arrived; the last of each."""
        got: dict[str, Any] = {}
        while set(got) != set(ALL_TYPES):
            resp = await self.recv(timeout)
            got[resp.type_url] = resp
            await self.ack(resp, self.names[resp.type_url])
        return got

    async def close(self) -> None:
        self._reader.cancel()
        self.call.cancel()
        await self.channel.close()
