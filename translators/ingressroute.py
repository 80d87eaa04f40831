"""IngressRoute → IR routes.

Each route of an IngressRoute is a Traefik *router*: its rule becomes one Envoy route per
disjunct, its services a flat weighted backend set, on every entry point it names (all of them
when it names none). A route that cannot be served exactly as written is not served at all, with a
diagnostic; the other routes are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from translators import names, rules
from translators.errors import Diagnostic, SourceRef
from translators.ir import Action, DirectResponse, Forward, Route
from translators.match import UnsupportedMatcher, rule_to_matches
from translators.models import IngressRoute
from translators.options import Options
from translators.rules import RuleError
from translators.service import BackendError, ServiceResolver, integer_weights
from translators.world import Entry, World


@dataclass(slots=True)
class IngressRouteTranslator:
    world: World
    options: Options
    resolver: ServiceResolver

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
        if ir.spec.tls is not None:
            diags.append(
                _diag(
                    ref,
                    "spec.tls",
                    "Unsupported",
                    "TLS termination is not translated yet; "
                    "the routes of this IngressRoute are not served "
                    "(Traefik serves them on TLS only)",
                )
            )
            return [], diags
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
            expr = rules.parse_rule(route.match, syntax)
            matches = rule_to_matches(
                expr,
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
        for i, mw in enumerate(route.middlewares):
            mw_ns = mw.namespace or ns
            field = f"{path}.middlewares[{i}]"
            if "@" in mw.name:
                diags.append(
                    _diag(
                        ref,
                        f"{field}.name",
                        "Unsupported",
                        f"cross-provider middleware {mw.name!r}; the route is not served",
                    )
                )
            elif mw_ns != ns and not self.options.allow_cross_namespace:
                diags.append(
                    _diag(
                        ref,
                        f"{field}.namespace",
                        "CrossNamespaceRefused",
                        f"middleware {mw_ns}/{mw.name} is in another namespace "
                        "(enable --allow-cross-namespace); the route is not served",
                    )
                )
            elif (found := self.world.middlewares.get((mw_ns, mw.name))) is None:
                diags.append(
                    _diag(
                        ref,
                        f"{field}.name",
                        "MiddlewareNotFound",
                        f"middleware {mw_ns}/{mw.name} not found; the route is not served",
                    )
                )
            else:
                kinds = ", ".join(found.obj.types) or "(empty)"
                diags.append(
                    _diag(
                        ref,
                        f"{field}.name",
                        "Unsupported",
                        f"middleware {mw_ns}/{mw.name} ({kinds}) is not translated yet; "
                        "the route is not served rather than served without it",
                    )
                )
        if any(d.severity == "error" for d in diags):
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
        action: Action
        weighted = integer_weights(backends.shares)
        if not weighted:
            action = DirectResponse(status=503, body="no service available\n")
        else:
            if len(backends.pass_host_header) > 1:
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
            action = Forward(backends=weighted, pass_host_header=all(backends.pass_host_header))

        router = names.router_name(ns, ir.metadata.name, route.match)
        priority = route.priority or rules.default_priority(route.match)
        out = [
            Route(
                name=names.route_name(router, index, d),
                router=router,
                entrypoint=ep,
                match=m,
                action=action,
                priority=priority,
                source=ref,
                rule=route.match,
                index=index,
                disjunct=d,
            )
            for ep in entrypoints
            for d, m in enumerate(matches)
        ]
        return out, diags


def _diag(
    ref: SourceRef, field: str, reason: str, message: str, severity: str = "error"
) -> Diagnostic:
    return Diagnostic(
        source=ref,
        field=field,
        reason=reason,
        message=message,
        severity="warning" if severity == "warning" else "error",
    )
