"""The World: a frozen, de-duplicated view of every object translation may read.

Built from whatever the sources hold (files, the Kubernetes API). Collisions are resolved the way
Traefik resolves them: for the same kind/namespace/name in both Traefik API groups the
``traefik.io`` object wins; two objects with the same identity from files (impossible in a cluster)
keep the first by file and line, and the other is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Generic, TypeVar

from translators.errors import Diagnostic, SourceRef
from translators.models import (
    ConfigMap,
    EndpointSlice,
    IngressRoute,
    Middleware,
    Resource,
    Secret,
    ServersTransport,
    Service,
    TLSOption,
    TraefikService,
    api_group,
)

T = TypeVar("T", bound=Resource)
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    obj: T
    ref: SourceRef


def _empty() -> Mapping[Key, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    ingressroutes: Mapping[Key, Entry[IngressRoute]] = field(default_factory=_empty)  # type: ignore[arg-type]
    middlewares: Mapping[Key, Entry[Middleware]] = field(default_factory=_empty)  # type: ignore[arg-type]
    traefikservices: Mapping[Key, Entry[TraefikService]] = field(default_factory=_empty)  # type: ignore[arg-type]
    services: Mapping[Key, Entry[Service]] = field(default_factory=_empty)  # type: ignore[arg-type]
    secrets: Mapping[Key, Entry[Secret]] = field(default_factory=_empty)  # type: ignore[arg-type]
    configmaps: Mapping[Key, Entry[ConfigMap]] = field(default_factory=_empty)  # type: ignore[arg-type]
    serverstransports: Mapping[Key, Entry[ServersTransport]] = field(default_factory=_empty)  # type: ignore[arg-type]
    tlsoptions: Mapping[Key, Entry[TLSOption]] = field(default_factory=_empty)  # type: ignore[arg-type]
    # EndpointSlices by the (namespace, service name) they belong to, sorted by slice name.
    endpointslices: Mapping[Key, tuple[Entry[EndpointSlice], ...]] = field(default_factory=_empty)  # type: ignore[arg-type]


# The World field each kind lands in (EndpointSlices are keyed by their Service instead).
FIELDS: dict[type[Resource], str] = {
    IngressRoute: "ingressroutes",
    Middleware: "middlewares",
    TraefikService: "traefikservices",
    Service: "services",
    Secret: "secrets",
    ConfigMap: "configmaps",
    ServersTransport: "serverstransports",
    TLSOption: "tlsoptions",
    EndpointSlice: "endpointslices",
}
WORLD_FIELDS = tuple(sorted(set(FIELDS.values())))

_GROUP_RANK = {"traefik.io": 0, "traefik.containo.us": 1}

Pair = tuple[Resource, SourceRef]
Identity = tuple[str, str, str]  # kind, namespace, name
Change = tuple[str, Key]  # (World field, key) whose value changed


def _rank(ref: SourceRef) -> tuple[int, str, int]:
    return (_GROUP_RANK.get(api_group(ref.api_version), 0), ref.file, ref.line)


def build_world(objects: Iterable[tuple[Resource, SourceRef]]) -> tuple[World, list[Diagnostic]]:
    """Index objects by kind and identity; resolve collisions deterministically."""
    world, diagnostics, _ = WorldIndex().update([tuple(objects)])
    return world, diagnostics


class WorldIndex:
    """The World, kept up to date from successive object lists at the cost of what changed.

    Objects arrive in chunks (a source's file, say) and a source hands back the very same chunk
    for what it did not re-read, so two updates differ by the chunks that are not the same
    object; within those, pairs are compared by identity, and a pair whose object and place are
    equal to the one it replaces is no change. ``update`` returns the new World, every
    diagnostic, and the (field, key) pairs whose value changed — what incremental translation
    invalidates. A fresh index updated once is exactly ``build_world``.
    """

    def __init__(self) -> None:
        self._chunks: dict[int, Sequence[Pair]] = {}  # id → chunk (kept alive: ids stay unique)
        self._pairs: dict[int, tuple[Pair, int]] = {}  # id → (pair, chunks holding it)
        self._candidates: dict[Identity, list[Pair]] = {}
        self._winners: dict[Identity, Pair] = {}
        self._diags: dict[Identity, list[Diagnostic]] = {}
        self._maps: dict[str, dict[Key, object]] = {f: {} for f in WORLD_FIELDS}
        self._slices: dict[Key, dict[Identity, Entry[EndpointSlice]]] = {}
        self._world = World()

    @property
    def world(self) -> World:
        return self._world

    def update(
        self, chunks: Iterable[Sequence[tuple[Resource, SourceRef]]]
    ) -> tuple[World, list[Diagnostic], set[Change]]:
        current = {id(chunk): chunk for chunk in chunks}
        touched: set[Identity] = set()
        for cid in self._chunks.keys() - current.keys():
            for pair in self._chunks.pop(cid):
                self._count(pair, -1, touched)
        for cid in current.keys() - self._chunks.keys():
            self._chunks[cid] = current[cid]
            for pair in current[cid]:
                self._count(pair, 1, touched)
        changes: set[Change] = set()
        fields_changed: set[str] = set()
        for ident in sorted(touched):
            self._choose(ident, changes, fields_changed)
        if fields_changed:
            self._world = replace(
                self._world,
                **{f: MappingProxyType(dict(self._maps[f])) for f in sorted(fields_changed)},  # type: ignore[arg-type]
            )
        diagnostics = [d for ident in sorted(self._diags) for d in self._diags[ident]]
        return self._world, diagnostics, changes

    def _count(self, pair: Pair, delta: int, touched: set[Identity]) -> None:
        pid = id(pair)
        held = self._pairs.get(pid)
        count = (held[1] if held else 0) + delta
        ident = _ident(pair[0])
        if count > 0:
            self._pairs[pid] = (pair, count)
            if held is None:
                self._candidates.setdefault(ident, []).append(pair)
                touched.add(ident)
            return
        del self._pairs[pid]
        self._candidates[ident].remove(pair)
        touched.add(ident)

    def _choose(self, ident: Identity, changes: set[Change], fields_changed: set[str]) -> None:
        candidates = sorted(self._candidates.get(ident, ()), key=lambda c: _rank(c[1]))
        self._diags.pop(ident, None)
        old = self._winners.get(ident)
        winner = candidates[0] if candidates else None
        if not candidates:
            self._candidates.pop(ident, None)
        diags: list[Diagnostic] = []
        for _loser, ref in candidates[1:]:
            assert winner is not None
            same_group = api_group(ref.api_version) == api_group(winner[1].api_version)
            if same_group:
                reason, msg = "DuplicateObject", "defined more than once; the first definition"
            else:
                reason, msg = "Shadowed", "also defined in another API group; the traefik.io object"
            diags.append(
                Diagnostic(
                    source=ref,
                    field="metadata.name",
                    reason=reason,
                    message=f"{ident[0]} {ident[1]}/{ident[2]} {msg} ({winner[1].describe()}) "
                    "is used",
                    severity="warning" if reason == "Shadowed" else "error",
                )
            )
        if winner is old or (
            # A re-read file brings new objects; only a different content is a change.
            winner is not None and old is not None and winner[1] == old[1] and winner[0] == old[0]
        ):
            if winner is not None:
                self._winners[ident] = winner
            if diags:
                self._diags[ident] = diags
            return
        if old is not None:
            self._withdraw(ident, old, changes, fields_changed)
        if winner is None:
            self._winners.pop(ident, None)
        else:
            self._winners[ident] = winner
            self._place(ident, winner, diags, changes, fields_changed)
        if diags:
            self._diags[ident] = diags

    def _withdraw(
        self, ident: Identity, pair: Pair, changes: set[Change], fields_changed: set[str]
    ) -> None:
        obj = pair[0]
        if isinstance(obj, EndpointSlice):
            svc = obj.service_name
            if svc is None:
                return
            key = (obj.metadata.namespace, svc)
            group = self._slices.get(key, {})
            group.pop(ident, None)
            self._set_slices(key, group, changes, fields_changed)
            return
        fld = FIELDS.get(type(obj))
        if fld is None:
            return
        self._maps[fld].pop(obj.key, None)
        changes.add((fld, obj.key))
        fields_changed.add(fld)

    def _place(
        self,
        ident: Identity,
        pair: Pair,
        diags: list[Diagnostic],
        changes: set[Change],
        fields_changed: set[str],
    ) -> None:
        obj, ref = pair
        if isinstance(obj, EndpointSlice):
            svc = obj.service_name
            if svc is None:
                diags.append(
                    Diagnostic(
                        source=ref,
                        field="metadata.labels",
                        reason="InvalidObject",
                        message="EndpointSlice has no kubernetes.io/service-name label; ignored",
                        severity="warning",
                    )
                )
                return
            key = (obj.metadata.namespace, svc)
            group = self._slices.setdefault(key, {})
            group[ident] = Entry(obj, ref)
            self._set_slices(key, group, changes, fields_changed)
            return
        fld = FIELDS.get(type(obj))
        if fld is None:
            return
        self._maps[fld][obj.key] = Entry(obj, ref)
        changes.add((fld, obj.key))
        fields_changed.add(fld)

    def _set_slices(
        self,
        key: Key,
        group: dict[Identity, Entry[EndpointSlice]],
        changes: set[Change],
        fields_changed: set[str],
    ) -> None:
        if group:
            self._maps["endpointslices"][key] = tuple(group[i] for i in sorted(group))
        else:
            self._slices.pop(key, None)
            self._maps["endpointslices"].pop(key, None)
        changes.add(("endpointslices", key))
        fields_changed.add("endpointslices")


def _ident(obj: Resource) -> Identity:
    return (obj.kind, obj.metadata.namespace, obj.metadata.name)
