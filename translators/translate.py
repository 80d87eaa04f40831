"""The front end's driver: World → IR + diagnostics. Pure and deterministic."""

from __future__ import annotations

from translators import names
from translators.errors import Diagnostic
from translators.ingressroute import IngressRouteTranslator
from translators.ir import IR, Forward, Listener, Route, Translation
from translators.options import Options
from translators.service import ServiceResolver
from translators.world import World


def route_order(route: Route) -> tuple[str, int, str, int, int]:
    """Highest priority first; ties by router name, then route index, then disjunct (documented)."""
    return (route.entrypoint, -route.priority, route.router, route.index, route.disjunct)


def translate_world(world: World, options: Options) -> Translation:
    resolver = ServiceResolver(world=world, options=options)
    irt = IngressRouteTranslator(world=world, options=options, resolver=resolver)
    routes: list[Route] = []
    diags: list[Diagnostic] = []
    for entry in world.ingressroutes:
        r, d = irt.translate(entry)
        routes.extend(r)
        diags.extend(d)
    listeners = tuple(
        Listener(
            name=names.listener_name(ep.name),
            address=ep.address,
            port=ep.port,
            route_config=names.route_config_name(ep.name),
            filter_slots=_filter_slots([r for r in routes if r.entrypoint == ep.name]),
        )
        for ep in sorted(options.entrypoints, key=lambda e: e.name)
    )
    ir = IR(
        listeners=listeners,
        routes=tuple(sorted(routes, key=route_order)),
        clusters=tuple(resolver.clusters[k] for k in sorted(_referenced(routes))),
    )
    return Translation(ir=ir, diagnostics=tuple(sorted(set(diags))))


def _filter_slots(routes: list[Route]) -> tuple[tuple[str, int], ...]:
    """Per filter kind, the most uses on any one route (each use needs its own instance)."""
    slots: dict[str, int] = {}
    for r in routes:
        counts: dict[str, int] = {}
        for use in r.filters:
            counts[use.kind] = counts.get(use.kind, 0) + 1
        for kind, n in counts.items():
            slots[kind] = max(slots.get(kind, 0), n)
    return tuple(sorted(slots.items()))


def _referenced(routes: list[Route]) -> set[str]:
    """Only clusters some served route uses: a dropped route leaves nothing behind."""
    out: set[str] = set()
    for r in routes:
        if isinstance(r.action, Forward):
            out.update(b.cluster for b in r.action.backends)
            out.update(m.cluster for m in r.action.mirrors)
    return out
