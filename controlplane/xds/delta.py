"""ADS, incremental (Delta xDS): one ``DeltaStream`` per Envoy connection.

The stream keeps, per type, what the client holds (name → version: from
``initial_resource_versions`` on a reconnect, then from what was sent) and sends only the
difference: resources whose version changed, and ``removed_resources`` for what went away — or,
for a name subscribed explicitly that does not exist, at once (R13). Points that bite
(reference/xds-protocol.md):

- ACK and NACK by ``error_detail`` only (R16). A NACKed version is never re-sent: the stream
  records it as held, so only a new version of that resource is sent again.
- Subscription changes apply even on a request with a stale nonce (R17); names in
  ``resource_names_subscribe`` are sent even if the client should have them (R18), except on
  the first request, where ``initial_resource_versions`` says what the client already has (R20).
- Make-before-break as in SotW: Listener and Route updates wait while a Cluster or Endpoint
  update is unacknowledged (bounded), and clusters are removed only once the listeners and routes
  of the current snapshot are acknowledged.
- One update per type in flight at a time, like a SotW watch.
- A type is looked at again only when its request state changed or the snapshot did (``dirty``,
  ``seen``): a stream woken for a Route change does not rescan its thousand endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

from controlplane.metrics import Metrics
from controlplane.xds.cache import Prepared, Snapshot, SnapshotCache, TypeSnapshot
from controlplane.xds.server import NodeStatus, StreamBase, Subsets, short_type
from translators.envoy import CLUSTER, LISTENER, ROUTE

log = logging.getLogger("switchman.xds.delta")


@dataclass(slots=True)
class DeltaTypeState:
    subscribed: set[str] = field(default_factory=set)
    wildcard: bool = False
    started: bool = False
    known: dict[str, str] = field(default_factory=dict)  # what the client holds
    force: set[str] = field(default_factory=set)  # send even if unchanged
    told_absent: set[str] = field(default_factory=set)
    in_flight: bool = False
    sent_nonce: str = ""
    sent_at: float = 0.0
    holding: dict[str, Prepared] = field(default_factory=dict)  # as of the update in flight
    acked: str | None = None
    last_nack: str = ""
    dirty: bool = True  # a request changed what is due since the type was last looked at
    seen: TypeSnapshot | None = None  # the snapshot of this type it was last looked at against


class DeltaStream(StreamBase):
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        registry: dict[int, NodeStatus],
        warm_timeout: float = 2.0,
        subsets: Subsets | None = None,
        grouper: Callable[[Any], str] | None = None,
    ) -> None:
        super().__init__(cache, metrics, registry, warm_timeout, subsets, grouper)
        self.states: dict[str, DeltaTypeState] = {}

    def on_request(self, req: discovery_v3.DeltaDiscoveryRequest, now: float) -> None:
        if req.HasField("node") and self.status is None:
            self.register(req.node, "delta")
        if not req.type_url:
            log.warning("delta request without type_url from node %s ignored", self.node_id)
            return
        t = short_type(req.type_url)
        st = self.states.setdefault(req.type_url, DeltaTypeState())
        st.dirty = True
        if req.response_nonce and req.response_nonce == st.sent_nonce and st.in_flight:
            st.in_flight = False
            if req.HasField("error_detail"):
                st.last_nack = req.error_detail.message
                self.metrics.nacks.labels(node=self.node_id, type=t).inc()
                log.error("NACK from node %s for %s: %s", self.node_id, t, st.last_nack)
                if self.status:
                    self.status.last_nack[t] = st.last_nack
                    self.status.rejected[req.type_url] = (dict(st.holding), st.last_nack)
            else:
                st.acked = req.response_nonce
                self.metrics.acks.labels(type=t).inc()
                self.metrics.push_latency.labels(type=t).observe(max(0.0, now - st.sent_at))
                if self.status:
                    self.status.acked[t] = f"nonce {req.response_nonce}"
                    self.status.holdings[req.type_url] = dict(st.holding)
                    self.status.rejected.pop(req.type_url, None)
        first = not st.started
        st.started = True
        if first:
            st.known = dict(req.initial_resource_versions)
            # Legacy wildcard: a first request that names nothing subscribes to everything.
            st.wildcard = not req.resource_names_subscribe
        for name in req.resource_names_subscribe:
            if name == "*":
                st.wildcard = True
                continue
            st.subscribed.add(name)
            st.told_absent.discard(name)
            if not first:
                st.force.add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                st.wildcard = False
                continue
            st.subscribed.discard(name)
            st.force.discard(name)
            st.told_absent.discard(name)
            if not st.wildcard:
                st.known.pop(name, None)

    def watches(self, changed: Mapping[str, frozenset[str]]) -> bool:
        for type_url, names in changed.items():
            st = self.states.get(type_url)
            if st is not None and (st.wildcard or not st.subscribed.isdisjoint(names)):
                return True
        return False

    # -- responses ------------------------------------------------------------------------------

    def next_response(
        self, now: float
    ) -> tuple[discovery_v3.DeltaDiscoveryResponse | None, float | None]:
        snapshot = self.snapshot()
        if snapshot is None:
            return None, None
        retry_at: float | None = None
        for type_url in self._type_order():
            st = self.states[type_url]
            if st.in_flight:
                continue
            if type_url in (LISTENER, ROUTE):
                gate = self._warming_gate(now)
                if gate is not None:
                    retry_at = gate if retry_at is None else min(retry_at, gate)
                    continue
            resp = self._respond(type_url, st, snapshot, now)
            if resp is not None:
                return resp, None
        return None, retry_at

    def pending_responses(
        self, now: float
    ) -> tuple[list[discovery_v3.DeltaDiscoveryResponse], float | None]:
        """Every response due now (tests; the server takes them one at a time)."""
        out: list[discovery_v3.DeltaDiscoveryResponse] = []
        while True:
            resp, retry_at = self.next_response(now)
            if resp is None:
                return out, retry_at
            out.append(resp)

    def _settled(self, snapshot: Snapshot) -> bool:
        """Listeners and routes of this snapshot are with the client, acknowledged."""
        for t in (LISTENER, ROUTE):
            st = self.states.get(t)
            if st is None:
                continue
            if st.in_flight:
                return False
            ts = snapshot.get(t)
            for name, res in ts.resources.items():
                if (st.wildcard or name in st.subscribed) and st.known.get(name) != res.version:
                    return False
        return True

    def _respond(
        self, type_url: str, st: DeltaTypeState, snapshot: Snapshot, now: float
    ) -> discovery_v3.DeltaDiscoveryResponse | None:
        ts = snapshot.get(type_url)
        if not st.dirty and st.seen is ts:
            return None  # nothing asked for and nothing changed since the last look
        st.seen = ts
        st.dirty = False
        wanted = [name for name in ts.resources if st.wildcard or name in st.subscribed]
        send = [
            n for n in sorted(wanted) if st.known.get(n) != ts.resources[n].version or n in st.force
        ]
        removed = sorted(
            n for n in st.known if n not in ts.resources and (st.wildcard or n in st.subscribed)
        )
        absent = sorted(
            n for n in st.subscribed - set(ts.resources) - set(st.known) - st.told_absent
        )
        if type_url == CLUSTER and removed and not self._settled(snapshot):
            removed = []  # make-before-break: clusters go once the new routes are in place
            st.dirty = True  # look again when the routes are acknowledged
        if not send and not removed and not absent:
            return None
        nonce = str(next(self._nonce))
        resp = discovery_v3.DeltaDiscoveryResponse(
            type_url=type_url,
            nonce=nonce,
            system_version_info=ts.version,
            resources=[
                discovery_v3.Resource(
                    name=n, version=ts.resources[n].version, resource=ts.resources[n].packed
                )
                for n in send
            ],
            removed_resources=[*removed, *absent],
        )
        for n in send:
            st.known[n] = ts.resources[n].version
            st.holding[n] = ts.resources[n]
            st.force.discard(n)
        for n in removed:
            st.known.pop(n, None)
            st.holding.pop(n, None)
        st.told_absent.update(absent)
        st.in_flight = True
        st.sent_nonce = nonce
        st.sent_at = now
        self.metrics.pushes.labels(type=short_type(type_url)).inc()
        return resp
