"""The World: a frozen, de-duplicated view of every object translation may read.

Built from whatever the sources hold (files, the Kubernetes API). Collisions are resolved the way
Traefik resolves them: for the same kind/namespace/name in both Traefik API groups the
``traefik.io`` object wins; two objects with the same identity from files (impossible in a cluster)
keep the first by file and line, and the other is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    ingressroutes: tuple[Entry[IngressRoute], ...] = ()
    middlewares: Mapping[Key, Entry[Middleware]] = field(default_factory=_empty)  # type: ignore[arg-type]
    traefikservices: Mapping[Key, Entry[TraefikService]] = field(default_factory=_empty)  # type: ignore[arg-type]
    services: Mapping[Key, Entry[Service]] = field(default_factory=_empty)  # type: ignore[arg-type]
    secrets: Mapping[Key, Entry[Secret]] = field(default_factory=_empty)  # type: ignore[arg-type]
    configmaps: Mapping[Key, Entry[ConfigMap]] = field(default_factory=_empty)  # type: ignore[arg-type]
    serverstransports: Mapping[Key, Entry[ServersTransport]] = field(default_factory=_empty)  # type: ignore[arg-type]
    # EndpointSlices by the (namespace, service name) they belong to.
    endpointslices: Mapping[Key, tuple[Entry[EndpointSlice], ...]] = field(default_factory=_empty)  # type: ignore[arg-type]


_GROUP_RANK = {"traefik.io": 0, "traefik.containo.us": 1}


def _rank(ref: SourceRef) -> tuple[int, str, int]:
    return (_GROUP_RANK.get(api_group(ref.api_version), 0), ref.file, ref.line)


def build_world(objects: Iterable[tuple[Resource, SourceRef]]) -> tuple[World, list[Diagnostic]]:
    """Index objects by kind and identity; resolve collisions deterministically."""
    by_identity: dict[tuple[str, str, str], list[tuple[Resource, SourceRef]]] = {}
    for obj, ref in objects:
        key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
        by_identity.setdefault(key, []).append((obj, ref))

    diagnostics: list[Diagnostic] = []
    chosen: list[tuple[Resource, SourceRef]] = []
    for key in sorted(by_identity):
        candidates = sorted(by_identity[key], key=lambda c: _rank(c[1]))
        winner = candidates[0]
        chosen.append(winner)
        for _loser, ref in candidates[1:]:
            same_group = api_group(ref.api_version) == api_group(winner[1].api_version)
            if same_group:
                reason, msg = "DuplicateObject", "defined more than once; the first definition"
            else:
                reason, msg = "Shadowed", "also defined in another API group; the traefik.io object"
            diagnostics.append(
                Diagnostic(
                    source=ref,
                    field="metadata.name",
                    reason=reason,
                    message=f"{key[0]} {key[1]}/{key[2]} {msg} ({winner[1].describe()}) is used",
                    severity="warning" if reason == "Shadowed" else "error",
                )
            )

    irs: list[Entry[IngressRoute]] = []
    mws: dict[Key, Entry[Middleware]] = {}
    tss: dict[Key, Entry[TraefikService]] = {}
    svcs: dict[Key, Entry[Service]] = {}
    secrets: dict[Key, Entry[Secret]] = {}
    configmaps: dict[Key, Entry[ConfigMap]] = {}
    transports: dict[Key, Entry[ServersTransport]] = {}
    slices: dict[Key, list[Entry[EndpointSlice]]] = {}
    for obj, ref in chosen:
        if isinstance(obj, IngressRoute):
            irs.append(Entry(obj, ref))
        elif isinstance(obj, Middleware):
            mws[obj.key] = Entry(obj, ref)
        elif isinstance(obj, TraefikService):
            tss[obj.key] = Entry(obj, ref)
        elif isinstance(obj, Service):
            svcs[obj.key] = Entry(obj, ref)
        elif isinstance(obj, Secret):
            secrets[obj.key] = Entry(obj, ref)
        elif isinstance(obj, ConfigMap):
            configmaps[obj.key] = Entry(obj, ref)
        elif isinstance(obj, ServersTransport):
            transports[obj.key] = Entry(obj, ref)
        elif isinstance(obj, EndpointSlice):
            svc = obj.service_name
            if svc is None:
                diagnostics.append(
                    Diagnostic(
                        source=ref,
                        field="metadata.labels",
                        reason="InvalidObject",
                        message="EndpointSlice has no kubernetes.io/service-name label; ignored",
                        severity="warning",
                    )
                )
                continue
            slices.setdefault((obj.metadata.namespace, svc), []).append(Entry(obj, ref))
    world = World(
        ingressroutes=tuple(irs),
        middlewares=MappingProxyType(mws),
        traefikservices=MappingProxyType(tss),
        services=MappingProxyType(svcs),
        secrets=MappingProxyType(secrets),
        configmaps=MappingProxyType(configmaps),
        serverstransports=MappingProxyType(transports),
        endpointslices=MappingProxyType({k: tuple(v) for k, v in sorted(slices.items())}),
    )
    return world, diagnostics
