"""Incremental translation: a change recomputes only the IngressRoutes that read what changed.

Each IngressRoute is translated against a World whose maps record every key they are asked for
(found or not: an object that appears later must invalidate the routes that looked for it).
The result — routes, diagnostics, the clusters those routes use — is kept with that read set.
On the next update, the ``WorldIndex`` says which (field, key) pairs changed; a reverse index
gives the IngressRoutes that read one of them, and only those are translated again. Everything
is then assembled exactly as ``translate_world`` assembles it, and the equality of the two is
tested on random edit sequences (tests/test_incremental.py).

Why per IngressRoute: it is the unit Traefik's own provider rebuilds, every reference a route
makes (Middlewares, TraefikServices, Services, EndpointSlices, Secrets, ServersTransports) is
read while translating it, and the only cross-route step (priority order, listeners) is cheap.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from translators.errors import Diagnostic, SourceRef
from translators.ingressroute import IngressRouteTranslator
from translators.ir import Cluster, Route, Translation, route_order
from translators.models import Resource
from translators.options import Options
from translators.scopes import unscopable
from translators.service import ServiceResolver
from translators.translate import (
    Present,
    _referenced,
    assemble,
    filter_uses,
    route_features,
)
from translators.world import WORLD_FIELDS, Change, Key, World, WorldIndex

RouteKey = tuple[str, int, str, int, int]
ALL: Key = ("*", "*")  # "every key of this field": a read that iterated the whole map


class _Recording(Mapping[Key, Any]):
    """A read-only view of one World map that notes every key asked for."""

    __slots__ = ("_data", "_deps", "_field")

    def __init__(self, data: Mapping[Key, Any], fld: str, deps: set[Change]) -> None:
        self._data = data
        self._field = fld
        self._deps = deps

    def __getitem__(self, key: Key) -> Any:
        self._deps.add((self._field, key))
        return self._data[key]

    def get(self, key: Key, default: Any = None) -> Any:
        self._deps.add((self._field, key))
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple):
            self._deps.add((self._field, key))
        return key in self._data

    def __iter__(self) -> Iterator[Key]:
        self._deps.add((self._field, ALL))
        return iter(self._data)

    def __len__(self) -> int:
        self._deps.add((self._field, ALL))
        return len(self._data)


@dataclass(frozen=True, slots=True)
class _Result:
    """One IngressRoute's translation and what it read."""

    routes: tuple[Route, ...]
    diagnostics: tuple[Diagnostic, ...]
    clusters: Mapping[str, Cluster]
    deps: frozenset[Change]


class IncrementalTranslator:
    """Objects → (World, World diagnostics, Translation), reusing what did not change.

    Besides each IngressRoute's result it keeps the aggregates up to date by difference: routes
    in priority order (removed and inserted by bisection), clusters with the number of results
    using them, filter slot counts per entry point, and diagnostic counts. So a change costs
    what it touches plus a few linear passes that run at C speed (copying tuples).
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.index = WorldIndex()
        self._results: dict[Key, _Result] = {}
        self._readers: dict[Change, set[Key]] = {}  # (field, key) → IngressRoutes that read it
        self._order: list[tuple[RouteKey, int]] = []  # (route_order, id), sorted
        self._ordered: list[Route] = []  # the routes, in _order's order
        self._clusters: dict[str, tuple[Cluster, int]] = {}  # name → (cluster, users)
        self._cluster_names: list[str] = []  # sorted
        self._cluster_list: list[Cluster] = []  # in _cluster_names' order
        self._slots: Counter[tuple[str, str, int]] = Counter()  # (entry point, kind, n)
        self._diags: Counter[Diagnostic] = Counter()
        # Routes with an errors middleware, routes with tls, clusters with a policy.
        self._features: Counter[str] = Counter()
        self.last_recomputed = 0

    @property
    def size(self) -> int:
        """IngressRoutes currently translated."""
        return len(self._results)

    def update(
        self, chunks: Iterable[Sequence[tuple[Resource, SourceRef]]]
    ) -> tuple[World, list[Diagnostic], Translation]:
        """``chunks`` as ``ResourceStore.chunks()`` gives them (see ``WorldIndex.update``)."""
        world, world_diags, changes = self.index.update(chunks)
        dirty: set[Key] = set()
        for fld, key in changes:
            if fld == "ingressroutes":
                dirty.add(key)
            dirty.update(self._readers.get((fld, key), ()))
            dirty.update(self._readers.get((fld, ALL), ()))
        for key in sorted(dirty):
            self._forget(key)
            entry = world.ingressroutes.get(key)
            if entry is not None:
                self._remember(key, self._translate_one(world, entry))
        self.last_recomputed = len(dirty)
        routes = self._ordered
        clusters = self._cluster_list
        slots: dict[str, dict[str, int]] = {}
        for (ep, kind, n), count in self._slots.items():
            if count > 0:
                per_ep = slots.setdefault(ep, {})
                per_ep[kind] = max(per_ep.get(kind, 0), n)
        translation = assemble(
            routes,
            clusters,
            self._diags.keys(),
            self.options,
            {ep: tuple(sorted(kinds.items())) for ep, kinds in slots.items()},
            Present(
                error_pages=self._features["error_pages"] > 0,
                tls=self._features["tls"] > 0,
                policies=self._features["policies"] > 0,
                unscopable=frozenset(
                    k.removeprefix("unscopable:")
                    for k, n in self._features.items()
                    if n > 0 and k.startswith("unscopable:")
                ),
            ),
        )
        return world, world_diags, translation

    def _translate_one(self, world: World, entry: Any) -> _Result:
        deps: set[Change] = set()
        recording = World(
            **{f: _Recording(getattr(world, f), f, deps) for f in WORLD_FIELDS},
        )
        resolver = ServiceResolver(world=recording, options=self.options)
        irt = IngressRouteTranslator(world=recording, options=self.options, resolver=resolver)
        routes, diags = irt.translate(entry)
        used = _referenced(routes)
        return _Result(
            routes=tuple(routes),
            diagnostics=tuple(set(diags)),
            clusters={k: resolver.clusters[k] for k in used},
            deps=frozenset(deps),
        )

    def _forget(self, key: Key) -> None:
        old = self._results.pop(key, None)
        if old is None:
            return
        for dep in old.deps:
            readers = self._readers.get(dep)
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self._readers[dep]
        for r in old.routes:
            item = (route_order(r), id(r))
            i = bisect.bisect_left(self._order, item)
            assert self._order[i] == item
            del self._order[i]
            del self._ordered[i]
            self._count_slots(r, -1)
            self._count_features(r, -1)
        for name in old.clusters:
            cluster, users = self._clusters[name]
            if users == 1:
                self._features["policies"] -= cluster.policy is not None
                del self._clusters[name]
                i = bisect.bisect_left(self._cluster_names, name)
                del self._cluster_names[i]
                del self._cluster_list[i]
            else:
                self._clusters[name] = (cluster, users - 1)
        self._diags.subtract(old.diagnostics)
        for d in old.diagnostics:
            if self._diags[d] <= 0:
                del self._diags[d]

    def _remember(self, key: Key, result: _Result) -> None:
        self._results[key] = result
        for dep in result.deps:
            self._readers.setdefault(dep, set()).add(key)
        for r in result.routes:
            item = (route_order(r), id(r))
            i = bisect.bisect_left(self._order, item)
            self._order.insert(i, item)
            self._ordered.insert(i, r)
            self._count_slots(r, 1)
            self._count_features(r, 1)
        for name, cluster in result.clusters.items():
            known = self._clusters.get(name)
            if known is None:
                self._features["policies"] += cluster.policy is not None
                self._clusters[name] = (cluster, 1)
                i = bisect.bisect_left(self._cluster_names, name)
                self._cluster_names.insert(i, name)
                self._cluster_list.insert(i, cluster)
            else:
                # Another reader holds it. When what it was built from changed, every reader is
                # translated again in this update, so the newest build is the current one; an
                # equal one keeps the old object (the back end reuses its proto by identity).
                current = known[0] if known[0] == cluster else cluster
                self._clusters[name] = (current, known[1] + 1)
                self._features["policies"] += (current.policy is not None) - (
                    known[0].policy is not None
                )
                if current is not known[0]:
                    self._cluster_list[bisect.bisect_left(self._cluster_names, name)] = current
        self._diags.update(result.diagnostics)

    def _count_features(self, route: Route, delta: int) -> None:
        error_pages, tls = route_features(route)
        self._features["error_pages"] += delta * error_pages
        self._features["tls"] += delta * tls
        if unscopable(route):
            self._features[f"unscopable:{route.entrypoint}"] += delta

    def _count_slots(self, route: Route, delta: int) -> None:
        for kind, n in filter_uses(route).items():
            key = (route.entrypoint, kind, n)
            self._slots[key] += delta
            if self._slots[key] <= 0:
                del self._slots[key]
