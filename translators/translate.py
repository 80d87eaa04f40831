"""The front end's driver: World → IR + diagnostics. Pure and deterministic."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from translators import names
from translators.errors import Diagnostic
from translators.ingressroute import IngressRouteTranslator
from translators.ir import IR, Cluster, Forward, Listener, Route, Translation, route_order
from translators.middlewares.errors import KIND as ERRORS_KIND
from translators.middlewares.errors import error_page_clusters, error_page_routes
from translators.middlewares.resilience import local_replies
from translators.options import Options
from translators.scopes import scopable_name, scope_blocker, unscoped_warning
from translators.service import ServiceResolver
from translators.tls import all_certificates, tls_chains
from translators.world import World


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


@dataclass(frozen=True, slots=True)
class Present:
    """Which route features occur at all (by default: assume every one may)."""

    error_pages: bool = True  # an errors middleware with a service
    tls: bool = True  # a route with tls
    policies: bool = True  # a cluster with a circuitBreaker/inFlightReq policy
    # The entry points with a route that cannot be scoped (None: not counted, look).
    unscopable: frozenset[str] | None = None


def route_features(route: Route) -> tuple[bool, bool]:
    """(has an errors-middleware filter, has tls) for one route."""
    return any(use.kind == ERRORS_KIND for use in route.filters), route.tls is not None


def assemble(
    routes: Sequence[Route],
    clusters: Sequence[Cluster],
    diags: Iterable[Diagnostic],
    options: Options,
    slots: Mapping[str, tuple[tuple[str, int], ...]] | None = None,
    present: Present | None = None,
) -> Translation:
    """The IR from routes already in priority order (``route_order``), the clusters they use
    (in name order) and, per entry point, the filter slots (computed unless the caller kept
    them)."""
    # The errors middlewares' internal routes, above every user route of their entry point. They
    # use one instance of a filter kind at most, which every listener has: the slots stand.
    # (``present``, from a caller that keeps count, skips the passes that would find nothing.)
    present = present or Present()
    internal = sorted(error_page_routes(routes), key=route_order) if present.error_pages else []
    if internal:
        routes = list(heapq.merge(internal, routes, key=route_order))
    # Answers for the routes' own clusters (circuitBreaker, inFlightReq), on every listener: a
    # mapper names its clusters, so it never fires for another listener's requests.
    replies = local_replies(clusters) if present.policies else ()
    diags = list(diags)
    certificates = all_certificates(routes) if present.tls else ()
    cert_names = tuple(c.name for c in certificates)
    listeners = []
    for ep in sorted(options.entrypoints, key=lambda e: e.name):
        chains = tls_chains(ep.name, routes, cert_names, diags) if present.tls else ()
        scoped = tables = False
        rc = names.route_config_name(ep.name)
        if options.route_scopes == "host":
            tables = scopable_name(rc)
            if chains:
                diags.append(unscoped_warning(ep.name, None, "it terminates TLS"))
            elif not tables:
                diags.append(unscoped_warning(ep.name, None, "its name has ':', '|', '%' or '/'"))
            else:
                look = (
                    present.unscopable is None
                    or ep.name in present.unscopable
                    or any(r.entrypoint == ep.name for r in internal)
                )
                blocker = (
                    scope_blocker(r for r in routes if r.entrypoint == ep.name) if look else None
                )
                scoped = blocker is None
                if blocker is not None:
                    diags.append(unscoped_warning(ep.name, blocker))
        listeners.append(
            Listener(
                name=names.listener_name(ep.name),
                address=ep.address,
                port=ep.port,
                route_config=rc,
                filter_slots=slots.get(ep.name, ())
                if slots is not None
                else _filter_slots([r for r in routes if r.entrypoint == ep.name]),
                local_replies=replies,
                tls_chains=chains,
                certificates=certificates if chains else (),
                scoped=scoped,
                scope_tables=tables,
            )
        )
    ir = IR(
        listeners=tuple(listeners),
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
    return out | error_page_clusters(routes)
