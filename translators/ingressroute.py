"""IngressRoute → IR routes.

Each route of an IngressRoute is a Traefik *router*: its rule becomes one Envoy route per
disjunct, its services a flat weighted backend set, on every entry point it names (all of them
when it names none). A route that cannot be served exactly as written is not served at all, with a
diagnostic; the other routes are untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from translators import names, rules
from translators.errors import Diagnostic, SourceRef
from translators.errors import diagnostic as _diag
from translators.ir import (
    Action,
    DirectResponse,
    FilterUse,
    Forward,
    HeaderMatch,
    Match,
    Mirror,
    Route,
    RouteTLS,
    WeightedBackend,
)
from translators.match import UnsupportedMatcher, rule_to_matches
from translators.middlewares import MiddlewareTranslator
from translators.middlewares.base import Plan
from translators.middlewares.resilience import with_cluster_policy
from translators.middlewares.traffic import BufferConfig
from translators.models import IngressRoute
from translators.options import Options
from translators.rules import RuleError, Syntax
from translators.service import BackendError, ServiceResolver, pinned_variants
from translators.tls import TLSError, TLSResolver
from translators.world import Entry, World


@functools.lru_cache(maxsize=1 << 16)
def compile_rule(rule: str, syntax: Syntax, limit: int, max_program_size: int) -> tuple[Match, ...]:
    """A rule's Envoy matches, parsed and built once per distinct rule: a pure function of its
    arguments (frozen results), and an IngressRoute translated again (its document moved in its
    file, a service it names changed) usually has the same rules. Errors are not cached."""
    return rule_to_matches(rules.parse_rule(rule, syntax), syntax, limit, max_program_size)


@dataclass(slots=True)
class IngressRouteTranslator:
    world: World
    options: Options
    resolver: ServiceResolver
    middlewares: MiddlewareTranslator = field(init=False)

    def __post_init__(self) -> None:
        self.middlewares = MiddlewareTranslator(
            world=self.world, options=self.options, resolver=self.resolver
        )

    def translate(self, entry: Entry[IngressRoute]) -> tuple[list[Route], list[Diagnostic]]:
        ir, ref = entry.obj, entry.ref
        ns = ir.metadata.namespace
        diags: list[Diagnostic] = []
        known = {ep.name for ep in self.options.entrypoints}
        if not ir.spec.entry_points:  # absent or empty: every entry point, as in Traefik
            entrypoints = sorted(known)
        else:
            entrypoints = []
            for i, name in enumerate(ir.spec.entry_points):
                if name in known:
                    entrypoints.append(name)
                else:
                    diags.append(
                        _diag(
                            ref,
                            f"spec.entryPoints[{i}]",
                            "EntryPointNotFound",
                            f"entry point {name!r} is not defined "
                            f"(have: {', '.join(sorted(known))})",
                        )
                    )
        route_tls: RouteTLS | None = None
        if ir.spec.tls is not None:
            resolver = TLSResolver(world=self.world, options=self.options)
            try:
                route_tls = resolver.resolve(entry)
            except TLSError as exc:
                # Never served without the TLS it asked for, nor on plaintext connections.
                return [], [*diags, *resolver.warnings, exc.diagnostic]
            diags.extend(resolver.warnings)
        if ir.spec.parent_refs:
            diags.append(
                _diag(
                    ref,
                    "spec.parentRefs",
                    "Unsupported",
                    "multi-layer routing (parentRefs) is not translated yet; not served",
                )
            )
            return [], diags

        out: list[Route] = []
        for index in range(len(ir.spec.routes)):
            path = f"spec.routes[{index}]"
            routes, rdiags = self._route(ir, ref, ns, index, path, entrypoints)
            if route_tls is not None:
                routes = [replace(r, tls=route_tls) for r in routes]
            out.extend(routes)
            diags.extend(rdiags)
        return out, diags

    def _route(
        self,
        ir: IngressRoute,
        ref: SourceRef,
        ns: str,
        index: int,
        path: str,
        entrypoints: list[str],
    ) -> tuple[list[Route], list[Diagnostic]]:
        route = ir.spec.routes[index]
        diags: list[Diagnostic] = []
        if route.kind not in (None, "", "Rule"):
            return [], [
                _diag(ref, f"{path}.kind", "InvalidRoute", f"kind must be Rule, not {route.kind!r}")
            ]
        syntax = route.syntax or self.options.default_rule_syntax
        try:
            matches = compile_rule(
                route.match,
                syntax,
                self.options.max_rule_alternatives,
                self.options.max_regex_program_size,
            )
        except UnsupportedMatcher as exc:
            return [], [
                _diag(ref, f"{path}.match", "Unsupported", f"{exc}; the route is not served")
            ]
        except RuleError as exc:
            return [], [_diag(ref, f"{path}.match", "InvalidRule", str(exc))]

        if route.observability is not None:
            diags.append(
                _diag(
                    ref,
                    f"{path}.observability",
                    "Unsupported",
                    "per-route observability settings are ignored",
                    "warning",
                )
            )
        policy = self.middlewares.apply(route.middlewares, ns, ref, f"{path}.middlewares")
        diags.extend(policy.diagnostics)
        if policy.not_served:
            return [], diags

        if not route.services:
            return [], [
                *diags,
                _diag(
                    ref,
                    f"{path}.services",
                    "NoService",
                    "the route has no services; it is not served",
                ),
            ]
        try:
            backends = self.resolver.resolve(route.services, ns, ref, f"{path}.services")
        except BackendError as exc:
            return [], [*diags, exc.diagnostic]
        diags.extend(backends.warnings)
        if len(backends.pass_host_header) > 1 and backends.shares:
            diags.append(
                _diag(
                    ref,
                    f"{path}.services",
                    "Unsupported",
                    "services disagree on passHostHeader; Envoy sets it per route, "
                    "so the Host header is rewritten for all of them",
                    "warning",
                )
            )

        def action_for(weighted: tuple[WeightedBackend, ...]) -> Action:
            if not weighted:
                return DirectResponse(status=503, body="no service available\n")
            return Forward(
                backends=weighted,
                pass_host_header=all(backends.pass_host_header),
                mirrors=tuple(Mirror(cluster=c, fraction=float(f)) for c, f in backends.mirrors),
                hash_client_ip=backends.hash_client_ip,
            )

        # A weighted sticky cookie: a variant per cookie value, then the weighted pick.
        variants = [(conds, action_for(w)) for conds, w in pinned_variants(backends)]
        action = variants[-1][1]
        if not isinstance(action, Forward):
            variants = variants[-1:]

        extra: tuple[FilterUse, ...] = ()
        if isinstance(action, Forward) and backends.session is not None:
            extra = (FilterUse(kind="stateful_session", config=backends.session),)
        failover = backends.failover
        if failover is not None:
            if any(p.retry is not None for p in policy.plans):
                return [], [
                    *diags,
                    _diag(
                        ref,
                        f"{path}.middlewares",
                        "Unsupported",
                        "a retry middleware on a route to a failover service is not translated "
                        "(Envoy has one retry policy per route, and the failover uses it); the "
                        "route is not served",
                    ),
                ]
            if failover.max_body is not None:
                # Traefik reads the body up to the limit before the main service sees it.
                extra = (*extra, FilterUse(kind="buffer", config=BufferConfig(failover.max_body)))
        router = names.router_name(ns, ir.metadata.name, route.match)
        priority = route.priority or rules.default_priority(route.match)
        if policy.fail_closed:
            # Never forward without the protection its author asked for.
            plans = [Plan(redirect=None)]
            variants = [((), DirectResponse(status=500, body="Internal Server Error\n"))]
        else:
            plans = policy.plans
        # circuitBreaker, inFlightReq: the route's own copies of its clusters.
        owner, hosts = f"{router}/{index}", tuple(m.exact_host for m in matches)
        variants = [
            (
                conds,
                with_cluster_policy(
                    act, plans, self.resolver.clusters, owner, hosts, ref, path, diags
                ),
            )
            for conds, act in variants
        ]
        out = []
        for ep in entrypoints:
            for d, m in enumerate(matches):
                v = 0
                for plan in _port_variants(plans, m, diags, ref, path):
                    answer = plan.reply or plan.redirect
                    for conds, act in variants if answer is None else [((), answer)]:
                        if v >= _MAX_VARIANTS:
                            return [], [
                                *diags,
                                _diag(
                                    ref,
                                    f"{path}.services",
                                    "Unsupported",
                                    f"the route needs more than {_MAX_VARIANTS} Envoy routes per "
                                    "rule alternative (sticky cookie values times middleware "
                                    "variants); the route is not served",
                                ),
                            ]
                        forward = isinstance(act, Forward)
                        out.append(
                            Route(
                                name=names.route_name(router, index, d, v),
                                router=router,
                                entrypoint=ep,
                                match=replace(m, headers=(*m.headers, *plan.conditions, *conds)),
                                action=act,
                                priority=priority,
                                source=ref,
                                rule=route.match,
                                index=index,
                                disjunct=d * _MAX_VARIANTS + v,
                                headers=plan.header_ops(),
                                rewrite=plan.path.rewrite(),
                                filters=(*plan.filters, *(extra if forward else ())),
                                retry=failover.retry
                                if failover is not None and forward
                                else plan.retry,
                            )
                        )
                        v += 1
        return out, diags


# Routes one rule alternative may become (the route order keeps them apart by this factor).
_MAX_VARIANTS = 1000
_NO_PORT = HeaderMatch(name=":authority", kind="regex", value=r"[^:]*|\[[^\]]*\]")


def _port_variants(
    plans: list[Plan], m: Match, diags: list[Diagnostic], ref: SourceRef, path: str
) -> list[Plan]:
    """Traefik's scheme redirect drops the request's port for the target's default port; Envoy
    keeps it. A request without a port needs nothing; with one, the Location names the route's
    host without it when the rule pins one host."""
    out: list[Plan] = []
    for plan in plans:
        r = plan.redirect
        if r is None or not r.strip_port:
            out.append(plan)
            continue
        out.append(replace(plan, conditions=(*plan.conditions, _NO_PORT)))
        with_port = (*plan.conditions, replace(_NO_PORT, invert=True))
        if m.exact_host is not None:
            out.append(replace(plan, conditions=with_port, redirect=replace(r, host=m.exact_host)))
        else:
            diags.append(
                _diag(
                    ref,
                    f"{path}.middlewares",
                    "Unsupported",
                    "redirectScheme on a rule without a plain Host(): a request that names a "
                    "port keeps it in Location (Traefik drops it)",
                    "warning",
                )
            )
            out.append(replace(plan, conditions=with_port))
    return out
