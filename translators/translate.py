"""The front end's driver: World → IR + diagnostics. Pure and deterministic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from translators import names
from translators.errors import Diagnostic
from translators.ingressroute import IngressRouteTranslator
from translators.ir import IR, Cluster, Forward, Listener, Route, Translation
from translators.options import Options
from translators.service import ServiceResolver
from translators.world import World


def route_order(route: Route) -> tuple[str, int, str, int, int]:
    """Highest priority first; ties by router name, then route index, then disjunct (documented)."""
    return (route.entrypoint, -route.priority, route.router, route.index, route.disjunct)


def translate_world(world: World, options: Options) -> Translation:
    """The reference translation: every IngressRoute, one shared resolver."""
    resolver = ServiceResolver(world=world, options=options)
    irt = IngressRouteTranslator(world=world, options=options, resolver=resolver)
    routes: list[Route] = []
    diags: list[Diagnostic] = []
    for key in sorted(world.ingressroutes):
        r, d = irt.translate(world.ingressroutes[key])
        routes.extend(r)
        diags.extend(d)
    clusters = [resolver.clusters[k] for k in sorted(_referenced(routes))]
    return assemble(sorted(routes, key=route_order), clusters, diags, options)


def assemble(
    routes: Sequence[Route],
    clusters: Sequence[Cluster],
    diags: Iterable[Diagnostic],
    options: Options,
    slots: Mapping[str, tuple[tuple[str, int], ...]] | None = None,
) -> Translation:
    """The IR from routes already in priority order (``route_order``), the clusters they use
    (in name order) and, per entry point, the filter slots (computed unless the caller kept
    them)."""
    listeners = tuple(
        Listener(
            name=names.listener_name(ep.name),
            address=ep.address,
            port=ep.port,
            route_config=names.route_config_name(ep.name),
            filter_slots=slots.get(ep.name, ())
            if slots is not None
            else _filter_slots([r for r in routes if r.entrypoint == ep.name]),
        )
        for ep in sorted(options.entrypoints, key=lambda e: e.name)
    )
    ir = IR(
        listeners=listeners,
        routes=tuple(routes),
        clusters=tuple(clusters),
    )
    return Translation(ir=ir, diagnostics=tuple(sorted(set(diags))))


def _filter_slots(routes: Iterable[Route]) -> tuple[tuple[str, int], ...]:
    """Per filter kind, the most uses on any one route (each use needs its own instance)."""
    slots: dict[str, int] = {}
    for r in routes:
        for kind, n in filter_uses(r).items():
            slots[kind] = max(slots.get(kind, 0), n)
    return tuple(sorted(slots.items()))


def filter_uses(route: Route) -> dict[str, int]:
    """How many instances of each filter kind one route uses."""
    counts: dict[str, int] = {}
    for use in route.filters:
        counts[use.kind] = counts.get(use.kind, 0) + 1
    return counts


def _referenced(routes: Iterable[Route]) -> set[str]:
    """Only clusters some served route uses: a dropped route leaves nothing behind."""
    out: set[str] = set()
    for r in routes:
        if isinstance(r.action, Forward):
            out.update(b.cluster for b in r.action.backends)
            out.update(m.cluster for m in r.action.mirrors)
    return out
