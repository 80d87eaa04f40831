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

Fan-out and backpressure (``AggregatedDiscoveryService``):

- One task per service (``_fan_out``) waits for new snapshots, works out which resources changed,
  and wakes only the streams that watch one of them (an endpoint change wakes the streams that
  subscribed to that cluster's ClusterLoadAssignment, not every Envoy: Contour #6743). Waking is
  setting an ``asyncio.Event``: publishing never awaits a stream, let alone its writes.
- Each stream's coroutine builds one response at a time, from the latest snapshot, just before
  writing it. A ``grpc.aio`` write does not complete until HTTP/2 flow control lets the bytes
  out, so an Envoy that stops reading parks its own coroutine in that write, and nobody else's.
  While parked it holds the one response being written and its state (what was sent, what is
  subscribed); new snapshots only set its event. When it writes again it answers from the newest
  snapshot: a stream never holds a queue of snapshots. Requests are applied as they arrive (the
  newest of a type replaces the earlier ones), so nothing queues on the way in either. (gRPC
  lets a whole message through to a client whose window has grown, even one that stopped
  reading; with one response per type in flight, that is what an ordinary stuck Envoy costs.)
- Response bodies are serialized once per snapshot and shared (``Bodies``); a stream adds its
  nonce. Writes use ``context.write``: an async-generator handler would keep each stream's last
  response alive while it waits (a full configuration per idle Envoy).
"""

from __future__ import annotations

import abc
import asyncio
import ctypes
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

from controlplane.metrics import Metrics
from controlplane.xds.cache import DIGEST_MASK, Prepared, Snapshot, SnapshotCache, TypeSnapshot
from translators.envoy import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ROUTING_TYPES,
    SCOPED_ROUTE,
    TYPE_ORDER,
)
from translators.groups import DEFAULT_GROUP

log = logging.getLogger("switchman.xds")

_WILDCARD_TYPES = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})
_EMPTY: Mapping[str, Prepared] = MappingProxyType({})


@dataclass(slots=True)
class TypeState:
    names: frozenset[str] = frozenset()
    wildcard: bool = True
    explicitly_subscribed: bool = False
    watch_open: bool = False
    force: bool = False
    sent_version: str | None = None
    sent_nonce: str = ""
    sent_at: float = 0.0
    # What the last response held: a read-only mapping shared with the snapshot or with other
    # streams that asked for the same names, never a copy per stream.
    sent_resources: Mapping[str, Prepared] = field(default_factory=lambda: _EMPTY)
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
    group: str = DEFAULT_GROUP  # its node group (docs/xds.md); "" is the default group
    acked: dict[str, str | None] = field(default_factory=dict)
    last_nack: dict[str, str] = field(default_factory=dict)
    # What the Envoy acknowledged holding, per type URL (for CSDS).
    holdings: dict[str, Mapping[str, Prepared]] = field(default_factory=dict)
    # A rejected update per type URL: what was sent, and Envoy's message.
    rejected: dict[str, tuple[Mapping[str, Prepared], str]] = field(default_factory=dict)


def register_node(
    registry: dict[int, NodeStatus], key: int, node: Any, protocol: str, group: str = ""
) -> NodeStatus:
    """Record the Envoy behind a stream (only the first request is sure to carry ``node``)."""
    build = node.user_agent_build_version.version
    status = NodeStatus(
        node_id=node.id,
        cluster=node.cluster,
        user_agent=f"{node.user_agent_name}/{build.major_number}.{build.minor_number}",
        connected_at=time.time(),
        protocol=protocol,
        group=group,
    )
    registry[key] = status
    return status


@dataclass(frozen=True, slots=True)
class Subset:
    types: TypeSnapshot
    version: str
    resources: Mapping[str, Prepared]
    digest: int = 0  # the version as a number (see TypeSnapshot.subset_digest)


class Subsets:
    """Answers to named subscriptions, shared by every stream.

    The Envoys of one fleet subscribe to the same names (every cluster's endpoints, the same route
    configuration), so the version and contents of a subset are worked out once per snapshot, not
    once per stream, and the streams share one frozenset of names and one mapping.
    """

    LIMIT = 4096  # distinct subscriptions remembered; past that the memo starts again

    def __init__(self) -> None:
        self._memo: dict[tuple[str, frozenset[str]], Subset] = {}
        self._names: dict[frozenset[str], frozenset[str]] = {}

    def intern(self, names: frozenset[str]) -> frozenset[str]:
        if len(self._names) >= self.LIMIT and names not in self._names:
            self._names.clear()
        return self._names.setdefault(names, names)

    def get(self, type_url: str, ts: TypeSnapshot, names: frozenset[str]) -> Subset:
        key = (type_url, names)
        hit = self._memo.get(key)
        if hit is not None and hit.types is ts:
            return hit
        have = ts.resources
        if hit is not None and ts.base is not None and ts.base == hit.types.version:
            # Spliced from the snapshot of the last answer: the same names, a few replaced.
            mine = dict(hit.resources)
            acc = hit.digest
            for n in ts.changed:
                if n in names:
                    acc = (acc - mine[n].digest + have[n].digest) & DIGEST_MASK
                    mine[n] = have[n]
            subset = Subset(
                types=ts, version=f"{acc:016x}", resources=MappingProxyType(mine), digest=acc
            )
        else:
            resources = MappingProxyType({n: have[n] for n in sorted(names) if n in have})
            acc = ts.subset_digest(names)
            subset = Subset(types=ts, version=f"{acc:016x}", resources=resources, digest=acc)
        if len(self._memo) >= self.LIMIT and key not in self._memo:
            self._memo.clear()
        self._memo[key] = subset
        return subset


class Bodies:
    """Response bodies serialized once per snapshot and shared by the streams of a node group.

    DESIGN §5: serialize once, share the bytes. A response is its body plus the stream's nonce:
    protobuf fields concatenate, so ``body + nonce_field(nonce)`` parses as the whole message.
    Building a ``DiscoveryResponse`` per stream instead copies every resource into it and
    serializes it again, for each of a thousand Envoys (measured: ~2 ms per stream for a
    330 KB RouteConfiguration, most of a fan-out). Only the bodies of each group's current
    snapshot are kept.
    """

    PER_SNAPSHOT = 64  # distinct bodies kept per snapshot; past that they are built, not kept

    def __init__(self) -> None:
        self._by_group: dict[str, tuple[Snapshot, dict[Hashable, bytes]]] = {}

    def get(
        self, group: str, snapshot: Snapshot, key: Hashable, build: Callable[[], bytes]
    ) -> bytes:
        entry = self._by_group.get(group)
        if entry is None or entry[0] is not snapshot:
            entry = self._by_group[group] = (snapshot, {})
        bodies = entry[1]
        body = bodies.get(key)
        if body is None:
            body = build()
            if len(bodies) < self.PER_SNAPSHOT:
                bodies[key] = body
        return body


def nonce_field(nonce: str) -> bytes:
    """The ``nonce`` field alone, encoded (field 5 in both DiscoveryResponse and
    DeltaDiscoveryResponse)."""
    return bytes(discovery_v3.DiscoveryResponse(nonce=nonce).SerializeToString())


def encode(message: Any) -> bytes:
    """gRPC's response serializer: responses are already bytes (``Bodies``)."""
    if isinstance(message, bytes):
        return message
    return bytes(message.SerializeToString())


def changed_names(old: Snapshot | None, new: Snapshot) -> dict[str, frozenset[str]]:
    """Per type URL, the names added, removed or changed from ``old`` to ``new``."""
    out: dict[str, frozenset[str]] = {}
    for type_url in sorted(set(new.types) | set(old.types if old else ())):
        now = new.get(type_url)
        before = old.types.get(type_url) if old else None
        if before is None:
            if now.resources:
                out[type_url] = frozenset(now.resources)
            continue
        if before.version == now.version:
            continue
        if now.base == before.version:
            out[type_url] = frozenset(now.changed)  # spliced from it: only these changed
            continue
        prev = before.resources
        names = {n for n, p in now.resources.items() if prev.get(n) is not p}
        names.update(n for n in prev if n not in now.resources)
        out[type_url] = frozenset(
            n for n in names if _version(prev, n) != _version(now.resources, n)
        )
    return out


def _version(resources: Mapping[str, Prepared], name: str) -> str | None:
    res = resources.get(name)
    return None if res is None else res.version


class StreamBase(abc.ABC):
    """What both protocol variants keep per stream, and the make-before-break gate."""

    states: Mapping[str, Any]

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        registry: dict[int, NodeStatus],
        warm_timeout: float = 2.0,
        subsets: Subsets | None = None,
        grouper: Callable[[Any], str] | None = None,
        bodies: Bodies | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.registry = registry
        self.warm_timeout = warm_timeout
        self.subsets = subsets or Subsets()
        self.bodies = bodies or Bodies()
        self.grouper = grouper
        self.group = DEFAULT_GROUP
        self.node_id = ""
        self.status: NodeStatus | None = None
        self._nonce = itertools.count(1)
        # Set by requests, by the fan-out for a snapshot change this stream watches, and when the
        # client goes away; the stream's coroutine waits on it.
        self.wake = asyncio.Event()
        self.wakeups = 0  # snapshot changes that woke this stream (tests, benchmarks)
        self.responses = 0  # responses built and handed to gRPC
        self.writing = False  # a response is in gRPC's hands, waiting for flow control
        self.closed = False

    @abc.abstractmethod
    def on_request(self, req: Any, now: float) -> None:
        """Apply one request (ACK, NACK, subscription change) to the stream's state."""

    @abc.abstractmethod
    def next_response(self, now: float) -> tuple[bytes | None, float | None]:
        """The next response due (encoded), built from the latest snapshot; or None and when to
        look again (a make-before-break gate that times out)."""

    @abc.abstractmethod
    def watches(self, changed: Mapping[str, frozenset[str]]) -> bool:
        """Whether a snapshot change touching ``changed`` (type URL → names) concerns us."""

    def _type_order(self) -> list[str]:
        """The types this stream asked for, in make-before-break order (unknown types last)."""
        known = [t for t in TYPE_ORDER if t in self.states]
        return known + sorted(set(self.states) - set(TYPE_ORDER))

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

    def register(self, node: Any, protocol: str) -> None:
        """The first request's node: who this is, and which node group's snapshot it gets."""
        self.node_id = node.id
        self.group = self.grouper(node) if self.grouper is not None else DEFAULT_GROUP
        self.status = register_node(self.registry, id(self), node, protocol, self.group)

    def snapshot(self) -> Snapshot | None:
        return self.cache.snapshot_for(self.group)


class SotwStream(StreamBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # StreamBase's arguments
        super().__init__(*args, **kwargs)
        self.states: dict[str, TypeState] = {}
        self._retained: dict[str, Prepared] = {}
        self._sent_clusters: Mapping[str, Prepared] = _EMPTY
        self._removals_checked: tuple[Mapping[str, Prepared], Mapping[str, Prepared]] | None = None

    # -- requests -------------------------------------------------------------------------------

    def on_request(self, req: discovery_v3.DiscoveryRequest, now: float = 0.0) -> None:
        if req.HasField("node") and not self.node_id:
            self.register(req.node, "sotw")
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
                        state.sent_resources,
                        req.error_detail.message,
                    )
            else:
                state.acked_version = state.sent_version
                state.nacked_version = None
                if type_url == LISTENER and SCOPED_ROUTE in self.states:
                    # A listener that uses scoped routes may have made a new scopes watch that
                    # Envoy does not announce (the type is subscribed already): resend them.
                    self.states[SCOPED_ROUTE].force = True
                if self.status:
                    self.status.acked[short_type(type_url)] = state.sent_version
                    self.status.holdings[type_url] = state.sent_resources
                    self.status.rejected.pop(type_url, None)
                self.metrics.acks.labels(type=short_type(type_url)).inc()
                if state.sent_at:
                    self.metrics.push_latency.labels(type=short_type(type_url)).observe(
                        time.monotonic() - state.sent_at
                    )
        names = frozenset(req.resource_names)
        if names:
            state.explicitly_subscribed = True
        wildcard = (
            (not names and not state.explicitly_subscribed)
            or (type_url in _WILDCARD_TYPES and not names)
            or "*" in names
        )
        names = self.subsets.intern(names - {"*"} if "*" in names else names)
        if names != state.names or wildcard != state.wildcard or first:
            state.force = True
        state.names = names
        state.wildcard = wildcard
        state.watch_open = True

    def watches(self, changed: Mapping[str, frozenset[str]]) -> bool:
        for type_url, names in changed.items():
            st = self.states.get(type_url)
            if st is not None and (st.wildcard or not st.names.isdisjoint(names)):
                return True
        return False

    # -- responses ------------------------------------------------------------------------------

    def next_response(self, now: float) -> tuple[bytes | None, float | None]:
        snapshot = self.snapshot()
        if snapshot is None:
            return None, None  # nothing is published before the first full sync
        retry_at: float | None = None
        self._track_cluster_removals(snapshot)
        for type_url in self._type_order():
            state = self.states[type_url]
            if not state.watch_open:
                continue
            if type_url in ROUTING_TYPES:
                gate = self._warming_gate(now)
                if gate is not None:
                    retry_at = gate if retry_at is None else min(retry_at, gate)
                    continue
            resp = self._respond(type_url, state, snapshot, now)
            if resp is not None:
                return resp, None
        if self._maybe_release_retained(snapshot):
            cds = self.states[CLUSTER]
            if cds.watch_open:
                resp = self._respond(CLUSTER, cds, snapshot, now)
                if resp is not None:
                    return resp, None
        return None, retry_at

    def _track_cluster_removals(self, snapshot: Snapshot) -> None:
        """Clusters this stream was sent that the snapshot no longer has: keep them for now."""
        current = snapshot.get(CLUSTER).resources
        pair = (self._sent_clusters, current)
        if self._removals_checked is not None and all(
            a is b for a, b in zip(pair, self._removals_checked, strict=True)
        ):
            return  # same sent set against the same snapshot: nothing new to find
        for name, prepared in self._sent_clusters.items():
            if name not in current:
                self._retained.setdefault(name, prepared)
        for name in [n for n in self._retained if n in current]:
            del self._retained[name]
        self._removals_checked = pair

    def _maybe_release_retained(self, snapshot: Snapshot) -> bool:
        """Drop retained clusters once the new routes and listeners are acknowledged."""
        if not self._retained:
            return False
        for t in ROUTING_TYPES:
            st = self.states.get(t)
            if st is None:
                continue
            if st.in_flight or st.sent_version != self._subset(t, st, snapshot)[0]:
                return False
        self._retained.clear()
        self._removals_checked = None
        return CLUSTER in self.states

    def _subset(
        self, type_url: str, state: TypeState, snapshot: Snapshot
    ) -> tuple[str, Mapping[str, Prepared]]:
        ts = snapshot.get(type_url)
        if state.wildcard:
            return ts.version, ts.resources
        subset = self.subsets.get(type_url, ts, state.names)
        return subset.version, subset.resources

    def _respond(
        self, type_url: str, state: TypeState, snapshot: Snapshot, now: float
    ) -> bytes | None:
        version, chosen = self._subset(type_url, state, snapshot)
        retained = type_url == CLUSTER and bool(self._retained)
        if retained:
            merged = dict(chosen)
            for name, prepared in self._retained.items():
                merged.setdefault(name, prepared)
            chosen = MappingProxyType(merged)
            version = f"{version}+{len(self._retained)}r"
        if not state.force and version == state.sent_version:
            return None
        if type_url == CLUSTER:
            self._sent_clusters = chosen
        # RouteConfigurations are not state of the world (xDS protocol, "Grouping Resources into
        # Responses"): once the client holds a set of names, send only those that changed. With
        # one table per host (route scopes) an edit then re-sends one host, not all of them.
        held = state.sent_resources
        partial = (
            type_url == ROUTE
            and not state.force
            and state.sent_version is not None
            and held.keys() == chosen.keys()
        )

        def build() -> bytes:
            names = sorted(chosen)
            if partial:
                names = [n for n in names if held[n] is not chosen[n]]
            return bytes(
                discovery_v3.DiscoveryResponse(
                    version_info=version,
                    type_url=type_url,
                    resources=[chosen[n].packed for n in names],
                ).SerializeToString()
            )

        # The version names the content, except with retained clusters (a per-stream set); a
        # partial response also depends on the version the stream holds.
        key = (type_url, version, state.sent_version if partial else None)
        body = build() if retained else self.bodies.get(self.group, snapshot, key, build)
        nonce = str(next(self._nonce))
        resp = body + nonce_field(nonce)
        state.sent_version = version
        state.sent_nonce = nonce
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
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        warm_timeout: float = 2.0,
        grouper: Callable[[Any], str] | None = None,
    ) -> None:
        self.cache = cache
        self.grouper = grouper
        self.metrics = metrics
        self.warm_timeout = warm_timeout
        self.nodes: dict[int, NodeStatus] = {}
        # Open streams (both variants), by id: what the fan-out wakes.
        self.streams: dict[int, StreamBase] = {}
        self.subsets = Subsets()
        self.bodies = Bodies()
        self._fan_out_task: asyncio.Task[None] | None = None
        self._peak_streams = 0  # since memory was last given back (``_detach``)
        self._trim: asyncio.TimerHandle | None = None

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_v3.DiscoveryRequest], context: Any
    ) -> None:
        await self._serve(SotwStream(*self._stream_args()), request_iterator, context)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_v3.DeltaDiscoveryRequest], context: Any
    ) -> None:
        from controlplane.xds.delta import DeltaStream

        await self._serve(DeltaStream(*self._stream_args()), request_iterator, context)

    def _stream_args(self) -> tuple[Any, ...]:
        """What every stream shares, in the stream constructors' order (StreamBase)."""
        return (
            self.cache,
            self.metrics,
            self.nodes,
            self.warm_timeout,
            self.subsets,
            self.grouper,
            self.bodies,
        )

    # -- fan-out --------------------------------------------------------------------------------

    async def _fan_out(self, seen: Mapping[str, Snapshot], generation: int) -> None:
        """Wake the streams that watch what a new snapshot of their node group changed; never
        await a stream.

        ``seen`` and ``generation`` are read when the first stream attaches, not when this task
        first runs: a snapshot published in between must still wake that stream."""
        while True:
            generation = await self.cache.wait_changed(generation)
            snapshots = self.cache.snapshots
            if snapshots is seen:
                continue
            streams = list(self.streams.values())
            try:
                changed = {
                    group: changed_names(seen.get(group), snap)
                    for group, snap in snapshots.items()
                    if snap is not seen.get(group)
                }
                woken = [
                    s
                    for s in streams
                    if (c := changed.get(s.group if s.group in snapshots else DEFAULT_GROUP))
                    and s.watches(c)
                ]
            except Exception:  # a bug here must not leave every Envoy on an old config
                log.exception("fan-out: cannot tell which streams a change concerns; waking all")
                woken = streams
            seen = snapshots
            for stream in woken:
                stream.wakeups += 1
                stream.wake.set()
            log.debug(
                "snapshot generation %d woke %d of %d streams", generation, len(woken), len(streams)
            )

    def _attach(self, stream: StreamBase) -> None:
        self.streams[id(stream)] = stream
        self._peak_streams = max(self._peak_streams, len(self.streams))
        self.metrics.connected.inc()
        if self._fan_out_task is None or self._fan_out_task.done():
            self._fan_out_task = asyncio.get_running_loop().create_task(
                self._fan_out(self.cache.snapshots, self.cache.generation), name="xds-fan-out"
            )

    def _detach(self, stream: StreamBase) -> None:
        stream.close()
        self.streams.pop(id(stream), None)
        self.metrics.connected.dec()
        if not self.streams and self._fan_out_task is not None:
            self._fan_out_task.cancel()  # started again by the next stream
            self._fan_out_task = None
        # When many Envoys have gone (a gateway fleet scaled down, a network blip), hand the
        # heap they used back to the OS: glibc keeps freed gRPC buffers in its arenas otherwise
        # (measured: ~100 MiB kept after 1,000 streams left, benchmarks/fanout.py).
        gone = self._peak_streams - len(self.streams)
        if gone >= 64 and len(self.streams) <= self._peak_streams // 2 and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(1.0, self._give_back_memory)

    def _give_back_memory(self) -> None:
        self._trim = None
        self._peak_streams = len(self.streams)
        release_free_heap()

    # -- one stream -----------------------------------------------------------------------------

    async def _read(self, stream: StreamBase, request_iterator: AsyncIterator[Any]) -> None:
        """Apply each request as it arrives: state, not a queue."""
        try:
            async for req in request_iterator:
                known = stream.status
                stream.on_request(req, time.monotonic())
                if known is None and stream.status is not None:
                    self.metrics.proxies.labels(*_proxy_labels(stream.status)).inc()
                stream.wake.set()
        finally:
            stream.closed = True
            stream.wake.set()

    async def _serve(
        self, stream: StreamBase, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        """Requests and snapshot changes in, responses out, until the client goes away.

        Responses go out with ``context.write``, not by yielding from an async generator: gRPC's
        loop over a generator keeps the last response object alive until the next one, which
        is a full configuration held per idle stream (measured: ~the size of the last response
        per stream, by benchmarks/fanout.py)."""
        self._attach(stream)
        reader = asyncio.create_task(self._read(stream, request_iterator))
        try:
            retry_at: float | None = None
            while True:
                if retry_at is None:
                    await stream.wake.wait()
                else:
                    try:
                        async with asyncio.timeout(max(0.0, retry_at - time.monotonic())):
                            await stream.wake.wait()
                    except TimeoutError:
                        pass
                stream.wake.clear()
                while not stream.closed:
                    resp, retry_at = stream.next_response(time.monotonic())
                    if resp is None:
                        break
                    # Parked here while the client does not read (HTTP/2 flow control).
                    stream.responses += 1
                    stream.writing = True
                    self.metrics.writes_pending.inc()
                    try:
                        await context.write(resp)
                    finally:
                        resp = None  # the response is gRPC's bytes now; hold nothing
                        stream.writing = False
                        self.metrics.writes_pending.dec()
                if stream.closed:
                    break
        finally:
            reader.cancel()
            self._detach(stream)
            if stream.status is not None:
                self.metrics.proxies.labels(*_proxy_labels(stream.status)).dec()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]  # a bug in on_request: fail the RPC


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _proxy_labels(status: NodeStatus) -> tuple[str, str, str, str]:
    return (status.group or "default", status.cluster, status.user_agent, status.protocol)


ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def add_to_server(server: grpc.aio.Server, service: AggregatedDiscoveryService) -> None:
    """Register ADS as the generated ``add_..._to_server`` does, but with a response serializer
    that takes the streams' already encoded bytes."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            service.StreamAggregatedResources,
            request_deserializer=discovery_v3.DiscoveryRequest.FromString,
            response_serializer=encode,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            service.DeltaAggregatedResources,
            request_deserializer=discovery_v3.DeltaDiscoveryRequest.FromString,
            response_serializer=encode,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)  # gRPC ≥ 1.62
    if register is not None:
        register(ADS_SERVICE, handlers)
