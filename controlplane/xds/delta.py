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
- A type is looked at again only when its request state changed or the snapshot did (``full``,
  ``pending``, ``seen``): a stream woken for a Route change does not rescan its thousand
  endpoints, a snapshot spliced from the one it last saw is looked at by its changed names, and
  a newly subscribed name is looked at alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

from controlplane.xds.cache import Prepared, Snapshot
from controlplane.xds.server import (
    StreamBase,
    nonce_field,
    short_type,
)
from translators.envoy import CLUSTER, LISTENER, ROUTING_TYPES, SCOPED_ROUTE

log = logging.getLogger("switchman.xds.delta")


@dataclass(slots=True)
class DeltaTypeState:
    # Interned (``Subsets.intern``): the Envoys of a fleet subscribe to the same names and share
    # one set; a request that changes it makes a new one.
    subscribed: frozenset[str] = frozenset()
    wildcard: bool = False
    started: bool = False
    # Versions the client said it holds on reconnecting (initial_resource_versions) and that
    # were neither sent nor removed since; everything else it holds is in ``holding``.
    initial: dict[str, str] = field(default_factory=dict)
    force: set[str] = field(default_factory=set)  # send even if unchanged
    told_absent: set[str] = field(default_factory=set)
    in_flight: bool = False
    sent_nonce: str = ""
    sent_at: float = 0.0
    # What the client holds (what was sent it, as of the update in flight). Copied on write,
    # never changed in place, so the node's CSDS record shares it instead of copying it.
    holding: dict[str, Prepared] = field(default_factory=dict)
    acked: str | None = None
    last_nack: str = ""
    # Since the type was last looked at: everything may be due (``full``), or only the names in
    # ``pending`` (newly subscribed) and in ``force``, besides what the snapshot changed.
    full: bool = True
    pending: set[str] = field(default_factory=set)
    # The type's version (a digest of every name and version) when it was last looked at: the
    # same version is the same content, even in a new snapshot.
    seen: str | None = None


class DeltaStream(StreamBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # StreamBase's arguments
        super().__init__(*args, **kwargs)
        self.states: dict[str, DeltaTypeState] = {}

    def on_request(self, req: discovery_v3.DeltaDiscoveryRequest, now: float) -> None:
        if req.HasField("node") and self.status is None:
            self.register(req.node, "delta")
        if not req.type_url:
            log.warning("delta request without type_url from node %s ignored", self.node_id)
            return
        t = short_type(req.type_url)
        st = self.states.setdefault(req.type_url, DeltaTypeState())
        if req.response_nonce and req.response_nonce == st.sent_nonce and st.in_flight:
            st.in_flight = False
            if req.HasField("error_detail"):
                st.last_nack = req.error_detail.message
                self.metrics.nacks.labels(node=self.node_id, type=t).inc()
                log.error("NACK from node %s for %s: %s", self.node_id, t, st.last_nack)
                if self.status:
                    self.status.last_nack[t] = st.last_nack
                    self.status.rejected[req.type_url] = (st.holding, st.last_nack)
            else:
                st.acked = req.response_nonce
                scopes = self.states.get(SCOPED_ROUTE)
                if req.type_url == LISTENER and scopes is not None and scopes.wildcard:
                    # A listener that uses scoped routes may have made a new scopes watch, which
                    # Envoy does not announce (the wildcard is subscribed already) and which gets
                    # nothing until a scope changes: send them all again.
                    scopes.force.update(scopes.holding)
                self.metrics.acks.labels(type=t).inc()
                self.metrics.push_latency.labels(type=t).observe(max(0.0, now - st.sent_at))
                if self.status:
                    self.status.acked[t] = f"nonce {req.response_nonce}"
                    self.status.holdings[req.type_url] = st.holding
                    self.status.rejected.pop(req.type_url, None)
        first = not st.started
        if first:
            st.full = True
        st.started = True
        if first:
            st.initial = dict(req.initial_resource_versions)
            # Legacy wildcard: a first request that names nothing subscribes to everything.
            st.wildcard = not req.resource_names_subscribe
        if not req.resource_names_subscribe and not req.resource_names_unsubscribe:
            return  # an ACK or NACK only
        subscribed = set(st.subscribed)
        for name in req.resource_names_subscribe:
            if name == "*":
                st.wildcard = True
                st.full = True
                continue
            subscribed.add(name)
            st.pending.add(name)
            st.told_absent.discard(name)
            if not first:
                st.force.add(name)
        dropped = []
        for name in req.resource_names_unsubscribe:
            if name == "*":
                # The client forgets what it held through the wildcard: a later "*" (a watch
                # made again, say a listener that uses scoped routes once more) gets it all again.
                st.wildcard = False
                st.full = True
                keep = subscribed
                st.holding = {n: p for n, p in st.holding.items() if n in keep}
                st.initial = {n: v for n, v in st.initial.items() if n in keep}
                continue
            subscribed.discard(name)
            st.force.discard(name)
            st.told_absent.discard(name)
            if not st.wildcard:
                dropped.append(name)
        st.subscribed = self.subsets.intern(frozenset(subscribed))
        if dropped:  # no longer the client's business: forget what it held
            st.holding = {n: p for n, p in st.holding.items() if n not in dropped}
            for name in dropped:
                st.initial.pop(name, None)

    def watches(self, changed: Mapping[str, frozenset[str]]) -> bool:
        for type_url, names in changed.items():
            st = self.states.get(type_url)
            if st is not None and (st.wildcard or not st.subscribed.isdisjoint(names)):
                return True
        return False

    # -- responses ------------------------------------------------------------------------------

    def next_response(self, now: float) -> tuple[bytes | None, float | None]:
        snapshot = self.snapshot()
        if snapshot is None:
            return None, None
        retry_at: float | None = None
        for type_url in self._type_order():
            st = self.states[type_url]
            if st.in_flight:
                continue
            if type_url in ROUTING_TYPES:
                gate = self._warming_gate(now)
                if gate is not None:
                    retry_at = gate if retry_at is None else min(retry_at, gate)
                    continue
            resp = self._respond(type_url, st, snapshot, now)
            if resp is not None:
                return resp, None
        return None, retry_at

    def _settled(self, snapshot: Snapshot) -> bool:
        """Listeners and routes of this snapshot are with the client, acknowledged."""
        for t in ROUTING_TYPES:
            st = self.states.get(t)
            if st is None:
                continue
            if st.in_flight:
                return False
            ts = snapshot.get(t)
            for name, res in ts.resources.items():
                if (st.wildcard or name in st.subscribed) and _held(st, name) != res.version:
                    return False
        return True

    def _respond(
        self, type_url: str, st: DeltaTypeState, snapshot: Snapshot, now: float
    ) -> bytes | None:
        ts = snapshot.get(type_url)
        if not st.full and not st.pending and not st.force and st.seen == ts.version:
            return None  # nothing asked for and nothing changed since the last look
        have = ts.resources
        if not st.full and st.seen is not None and (st.seen == ts.version or st.seen == ts.base):
            # What this stream last looked at, maybe with a few resources replaced (no name
            # came or went): only those, new subscriptions and forced names can be due.
            look = {*st.pending, *st.force}
            if st.seen != ts.version:
                look.update(ts.changed)
            wanted = [n for n in look if n in have and (st.wildcard or n in st.subscribed)]
            send = [n for n in sorted(wanted) if _held(st, n) != have[n].version or n in st.force]
            removed = []
            absent = sorted(
                n
                for n in st.pending
                if n not in have
                and n in st.subscribed
                and n not in st.holding
                and n not in st.initial
                and n not in st.told_absent
            )
        else:
            wanted = [name for name in have if st.wildcard or name in st.subscribed]
            send = [n for n in sorted(wanted) if _held(st, n) != have[n].version or n in st.force]
            removed = sorted(
                n
                for n in {*st.holding, *st.initial}
                if n not in have and (st.wildcard or n in st.subscribed)
            )
            absent = sorted(
                n
                for n in st.subscribed
                if n not in have
                and n not in st.holding
                and n not in st.initial
                and n not in st.told_absent
            )
        st.seen = ts.version
        st.full = False
        st.pending = set()
        if type_url == CLUSTER and removed and not self._settled(snapshot):
            removed = []  # make-before-break: clusters go once the new routes are in place
            st.full = True  # look again when the routes are acknowledged
        if not send and not removed and not absent:
            return None
        gone = [*removed, *absent]

        def build() -> bytes:
            return bytes(
                discovery_v3.DeltaDiscoveryResponse(
                    type_url=type_url,
                    system_version_info=ts.version,
                    resources=[
                        discovery_v3.Resource(
                            name=n, version=ts.resources[n].version, resource=ts.resources[n].packed
                        )
                        for n in send
                    ],
                    removed_resources=gone,
                ).SerializeToString()
            )

        # Streams that need the same update share one encoding (names fix the versions: one
        # snapshot); the stream adds its nonce.
        key = (type_url, tuple(send), tuple(gone))
        nonce = str(next(self._nonce))
        resp = self.bodies.get(self.group, snapshot, key, build) + nonce_field(nonce)
        holding = dict(st.holding)
        for n in send:
            holding[n] = have[n]
            st.initial.pop(n, None)
            st.force.discard(n)
        for n in removed:
            holding.pop(n, None)
            st.initial.pop(n, None)
        st.holding = holding
        st.told_absent.update(absent)
        st.in_flight = True
        st.sent_nonce = nonce
        st.sent_at = now
        self.metrics.pushes.labels(type=short_type(type_url)).inc()
        return resp


def _held(st: DeltaTypeState, name: str) -> str | None:
    """The version of ``name`` the client holds (was sent, or said it had), if any."""
    prepared = st.holding.get(name)
    return prepared.version if prepared is not None else st.initial.get(name)
