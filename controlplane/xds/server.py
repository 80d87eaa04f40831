"""ADS, state of the world, over ``grpc.aio``.

One ``SotwStream`` per Envoy connection. Protocol points that bite (reference/xds-protocol.md):

- A response is sent only into an open *watch*: the latest request of that type, not yet
  answered. This is the flow control of SotW: at most one unacknowledged response per type.
- Requests carrying a nonce other than the last one sent for the type are stale and ignored (R7).
- ACK and NACK are told apart by ``error_detail`` alone (R5). After a NACK the stream remembers
  what it sent and re-sends only when the snapshot changes: go-control-plane's loop of re-sending
  a rejected config forever (#46, #962) cannot happen, because "changed" is judged against what
  was *sent*, never against the version the client reports.
- The first request of a type on a stream, and any change of its resource names, is always
  answered, even when unchanged (R9; the re-added-cluster EDS trap, go-control-plane #583).
- Make-before-break (R15): types are answered in CDS, EDS, LDS, RDS order; Listener and Route
  responses wait while a Cluster or Endpoint response is unacknowledged (bounded by
  ``warm_timeout``); clusters that disappear from the snapshot stay in CDS until the routes of
  the new snapshot are acknowledged, then a second CDS response removes them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

from controlplane.metrics import Metrics
from controlplane.xds.cache import Prepared, Snapshot, SnapshotCache
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER

log = logging.getLogger("switchman.xds")

_WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})


@dataclass(slots=True)
class TypeState:
    names: set[str] = field(default_factory=set)
    wildcard: bool = True
    explicitly_subscribed: bool = False
    watch_open: bool = False
    force: bool = False
    sent_version: str | None = None
    sent_nonce: str = ""
    sent_at: float = 0.0
    sent_names: frozenset[str] = frozenset()
    sent_resources: dict[str, Prepared] = field(default_factory=dict)
    in_flight: bool = False
    acked_version: str | None = None
    nacked_version: str | None = None
    last_nack: str = ""


@dataclass(slots=True)
class NodeStatus:
    """What /debug shows for one connected Envoy."""

    node_id: str
    cluster: str
    user_agent: str
    connected_at: float
    protocol: str = "sotw"
    acked: dict[str, str | None] = field(default_factory=dict)
    last_nack: dict[str, str] = field(default_factory=dict)
    # What the Envoy acknowledged holding, per type URL (for CSDS).
    holdings: dict[str, dict[str, Prepared]] = field(default_factory=dict)
    # A rejected update per type URL: what was sent, and Envoy's message.
    rejected: dict[str, tuple[dict[str, Prepared], str]] = field(default_factory=dict)


def register_node(
    registry: dict[int, NodeStatus], key: int, node: Any, protocol: str
) -> NodeStatus:
    """Record the Envoy behind a stream (only the first request is sure to carry ``node``)."""
    build = node.user_agent_build_version.version
    status = NodeStatus(
        node_id=node.id,
        cluster=node.cluster,
        user_agent=f"{node.user_agent_name}/{build.major_number}.{build.minor_number}",
        connected_at=time.time(),
        protocol=protocol,
    )
    registry[key] = status
    return status


class StreamBase:
    """What both protocol variants keep per stream, and the make-before-break gate."""

    states: Mapping[str, Any]

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        registry: dict[int, NodeStatus],
        warm_timeout: float = 2.0,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.registry = registry
        self.warm_timeout = warm_timeout
        self.node_id = ""
        self.status: NodeStatus | None = None
        self._nonce = itertools.count(1)

    def _warming_gate(self, now: float) -> float | None:
        """While a Cluster or Endpoint update is unacknowledged (at most ``warm_timeout``),
        Listener and Route updates wait: when to look again, or None."""
        for t in (CLUSTER, ENDPOINT):
            st = self.states.get(t)
            if st is not None and st.in_flight and now - st.sent_at < self.warm_timeout:
                return float(st.sent_at + self.warm_timeout)
        return None

    def close(self) -> None:
        self.registry.pop(id(self), None)


class SotwStream(StreamBase):
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        registry: dict[int, NodeStatus],
        warm_timeout: float = 2.0,
    ) -> None:
        super().__init__(cache, metrics, registry, warm_timeout)
        self.states: dict[str, TypeState] = {}
        self._retained: dict[str, Prepared] = {}
        self._sent_clusters: dict[str, Prepared] = {}

    # -- requests -------------------------------------------------------------------------------

    def on_request(self, req: discovery_v3.DiscoveryRequest, now: float = 0.0) -> None:
        if req.HasField("node") and not self.node_id:
            self.node_id = req.node.id
            self.status = register_node(self.registry, id(self), req.node, protocol="sotw")
        type_url = req.type_url
        if not type_url:
            log.warning("request without type_url from node %s ignored", self.node_id)
            return
        state = self.states.setdefault(type_url, TypeState())
        if req.response_nonce and req.response_nonce != state.sent_nonce:
            log.debug("stale nonce %s for %s from %s", req.response_nonce, type_url, self.node_id)
            return
        first = not req.response_nonce and state.sent_version is None
        if req.response_nonce:
            state.in_flight = False
            if req.HasField("error_detail"):
                state.nacked_version = state.sent_version
                state.last_nack = req.error_detail.message
                self.metrics.nacks.labels(node=self.node_id, type=short_type(type_url)).inc()
                log.error(
                    "NACK from node %s for %s version %s: %s",
                    self.node_id,
                    short_type(type_url),
                    state.sent_version,
                    req.error_detail.message,
                )
                if self.status:
                    self.status.last_nack[short_type(type_url)] = req.error_detail.message
                    self.status.rejected[type_url] = (
                        dict(state.sent_resources),
                        req.error_detail.message,
                    )
            else:
                state.acked_version = state.sent_version
                state.nacked_version = None
                if self.status:
                    self.status.acked[short_type(type_url)] = state.sent_version
                    self.status.holdings[type_url] = dict(state.sent_resources)
                    self.status.rejected.pop(type_url, None)
                self.metrics.acks.labels(type=short_type(type_url)).inc()
                if state.sent_at:
                    self.metrics.push_latency.labels(type=short_type(type_url)).observe(
                        time.monotonic() - state.sent_at
                    )
        names = set(req.resource_names)
        if names:
            state.explicitly_subscribed = True
        wildcard = (
            (not names and not state.explicitly_subscribed)
            or (type_url in _WILDCARD_TYPES and not names)
            or "*" in names
        )
        if names != state.names or wildcard != state.wildcard or first:
            state.force = True
        state.names = names - {"*"}
        state.wildcard = wildcard
        state.watch_open = True

    # -- responses ------------------------------------------------------------------------------

    def pending_responses(
        self, now: float
    ) -> tuple[list[discovery_v3.DiscoveryResponse], float | None]:
        """Responses due now, in make-before-break order, and when to look again if gated."""
        snapshot = self.cache.snapshot
        if snapshot is None:
            return [], None  # nothing is published before the first full sync
        out: list[discovery_v3.DiscoveryResponse] = []
        retry_at: float | None = None
        self._track_cluster_removals(snapshot)
        for type_url in (*TYPE_ORDER, *sorted(set(self.states) - set(TYPE_ORDER))):
            state = self.states.get(type_url)
            if state is None or not state.watch_open:
                continue
            if type_url in (LISTENER, ROUTE):
                gate = self._warming_gate(now)
                if gate is not None:
                    retry_at = gate if retry_at is None else min(retry_at, gate)
                    continue
            resp = self._respond(type_url, state, snapshot, now)
            if resp is not None:
                out.append(resp)
        if self._maybe_release_retained():
            cds = self.states[CLUSTER]
            if cds.watch_open:
                resp = self._respond(CLUSTER, cds, snapshot, now)
                if resp is not None:
                    out.append(resp)
        return out, retry_at

    def _track_cluster_removals(self, snapshot: Snapshot) -> None:
        """Clusters this stream was sent that the snapshot no longer has: keep them for now."""
        current = snapshot.get(CLUSTER).resources
        for name, prepared in self._sent_clusters.items():
            if name not in current:
                self._retained.setdefault(name, prepared)
        for name in [n for n in self._retained if n in current]:
            del self._retained[name]

    def _maybe_release_retained(self) -> bool:
        """Drop retained clusters once the new routes and listeners are acknowledged."""
        if not self._retained:
            return False
        snapshot = self.cache.snapshot
        assert snapshot is not None
        for t in (LISTENER, ROUTE):
            st = self.states.get(t)
            if st is None:
                continue
            if st.in_flight or st.sent_version != self._expected_version(t, st, snapshot):
                return False
        self._retained.clear()
        return CLUSTER in self.states

    def _expected_version(self, type_url: str, state: TypeState, snapshot: Snapshot) -> str:
        ts = snapshot.get(type_url)
        if state.wildcard:
            return ts.version
        return ts.subset_version(state.names)

    def _respond(
        self, type_url: str, state: TypeState, snapshot: Snapshot, now: float
    ) -> discovery_v3.DiscoveryResponse | None:
        ts = snapshot.get(type_url)
        if state.wildcard:
            chosen = dict(ts.resources)
            version = ts.version
        else:
            chosen = {n: ts.resources[n] for n in sorted(state.names) if n in ts.resources}
            version = ts.subset_version(state.names)
        if type_url == CLUSTER and self._retained:
            for name, prepared in self._retained.items():
                chosen.setdefault(name, prepared)
            version = f"{version}+{len(self._retained)}r"
        if not state.force and version == state.sent_version:
            return None
        if type_url == CLUSTER:
            self._sent_clusters = chosen
        nonce = str(next(self._nonce))
        resp = discovery_v3.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=nonce,
            resources=[chosen[n].packed for n in sorted(chosen)],
        )
        state.sent_version = version
        state.sent_nonce = nonce
        state.sent_names = frozenset(chosen)
        state.sent_resources = chosen
        state.sent_at = now
        state.watch_open = False
        state.force = False
        state.in_flight = True
        self.metrics.pushes.labels(type=short_type(type_url)).inc()
        log.debug(
            "sent %s version %s (%d resources) to %s",
            short_type(type_url),
            version,
            len(chosen),
            self.node_id,
        )
        return resp


def short_type(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache, metrics: Metrics, warm_timeout: float = 2.0) -> None:
        self.cache = cache
        self.metrics = metrics
        self.warm_timeout = warm_timeout
        self.nodes: dict[int, NodeStatus] = {}

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_v3.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_v3.DiscoveryResponse]:
        stream = SotwStream(self.cache, self.metrics, self.nodes, self.warm_timeout)
        async for resp in self._serve(stream, request_iterator):
            yield resp

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_v3.DeltaDiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_v3.DeltaDiscoveryResponse]:
        from controlplane.xds.delta import DeltaStream

        stream = DeltaStream(self.cache, self.metrics, self.nodes, self.warm_timeout)
        async for resp in self._serve(stream, request_iterator):
            yield resp

    async def _serve(
        self, stream: Stream, request_iterator: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """Requests and snapshot changes in, responses out, until the client goes away."""
        requests: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            try:
                async for req in request_iterator:
                    await requests.put(req)
            finally:
                await requests.put(None)

        reader = asyncio.create_task(read())
        self.metrics.connected.inc()
        generation = self.cache.generation
        changed = asyncio.create_task(self.cache.wait_changed(generation))
        try:
            retry_at: float | None = None
            while True:
                get = asyncio.create_task(requests.get())
                timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
                done, _ = await asyncio.wait(
                    {get, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if get in done:
                    req = get.result()
                    if req is None:
                        return
                    known = getattr(stream, "status", None)
                    stream.on_request(req, time.monotonic())
                    status = getattr(stream, "status", None)
                    if known is None and status is not None:
                        self.metrics.proxies.labels(*_proxy_labels(status)).inc()
                    # Drain whatever else has arrived: only the newest request of a type counts.
                    while not requests.empty():
                        more = requests.get_nowait()
                        if more is None:
                            return
                        stream.on_request(more, time.monotonic())
                else:
                    get.cancel()
                if changed in done:
                    generation = changed.result()
                    changed = asyncio.create_task(self.cache.wait_changed(generation))
                responses, retry_at = stream.pending_responses(time.monotonic())
                for resp in responses:
                    yield resp
        finally:
            changed.cancel()
            reader.cancel()
            stream.close()
            self.metrics.connected.dec()
            status = getattr(stream, "status", None)
            if status is not None:
                self.metrics.proxies.labels(*_proxy_labels(status)).dec()


def _proxy_labels(status: NodeStatus) -> tuple[str, str, str]:
    return (status.cluster, status.user_agent, status.protocol)


class Stream(Protocol):
    def on_request(self, req: Any, now: float) -> None: ...
    def pending_responses(self, now: float) -> tuple[list[Any], float | None]: ...
    def close(self) -> None: ...


def add_to_server(server: grpc.aio.Server, service: AggregatedDiscoveryService) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(service, server)
