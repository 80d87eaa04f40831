"""Middlewares: a route's list, ``chain`` expanded in place, applied in order to a ``Plan``.

Resolution follows Traefik: a reference's namespace defaults to the route's; another namespace
needs ``allowCrossNamespace``; ``name@provider`` names another provider (Switchman has one).
Each Middleware has exactly one type. A middleware that cannot be translated as written stops
the route: a security middleware makes the route answer an error (never forward without the
auth or allow-list its author asked for); any other makes the route not served. Either way the
diagnostic names the Middleware object and the field.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from translators.errors import Diagnostic, SourceRef
from translators.filter_order import FILTER_ORDER
from translators.middlewares.auth import basic_auth, digest_auth
from translators.middlewares.base import (
    SECURITY,
    Context,
    MiddlewareError,
    Plan,
)
from translators.middlewares.encoded import encoded_characters
from translators.middlewares.errors import errors
from translators.middlewares.forward_auth import forward_auth
from translators.middlewares.headers import headers
from translators.middlewares.ipallowlist import ip_allow_list
from translators.middlewares.passtls import pass_tls_client_cert
from translators.middlewares.paths import (
    add_prefix,
    replace_path,
    replace_path_regex,
    strip_prefix,
    strip_prefix_regex,
)
from translators.middlewares.ratelimit import rate_limit
from translators.middlewares.redirect import redirect_regex, redirect_scheme
from translators.middlewares.resilience import circuit_breaker, in_flight_req
from translators.middlewares.traffic import buffering, compress, content_type, grpc_web, retry
from translators.models import MiddlewareRef
from translators.options import Options
from translators.service import ServiceResolver
from translators.world import World

Handler = Callable[[Mapping[str, Any], list[Plan], Context, str], list[Plan]]

HANDLERS: dict[str, Handler] = {
    "addPrefix": add_prefix,
    "stripPrefix": strip_prefix,
    "stripPrefixRegex": strip_prefix_regex,
    "replacePath": replace_path,
    "replacePathRegex": replace_path_regex,
    "headers": headers,
    "redirectScheme": redirect_scheme,
    "redirectRegex": redirect_regex,
    "basicAuth": basic_auth,
    "digestAuth": digest_auth,
    "forwardAuth": forward_auth,
    "retry": retry,
    "compress": compress,
    "buffering": buffering,
    "grpcWeb": grpc_web,
    "contentType": content_type,
    "ipAllowList": ip_allow_list,
    "ipWhiteList": ip_allow_list,
    "rateLimit": rate_limit,
    "encodedCharacters": encoded_characters,
    "errors": errors,
    "circuitBreaker": circuit_breaker,
    "inFlightReq": in_flight_req,
    "passTLSClientCert": pass_tls_client_cert,
}
# Every open-source HTTP middleware type Traefik knows (pkg/config/dynamic/middlewares.go).
KNOWN = frozenset(
    {
        *HANDLERS,
        "stripPrefixRegex",
        "chain",
        "ipWhiteList",
        "ipAllowList",
        "rateLimit",
        "redirectRegex",
        "basicAuth",
        "digestAuth",
        "forwardAuth",
        "inFlightReq",
        "buffering",
        "circuitBreaker",
        "compress",
        "passTLSClientCert",
        "retry",
        "contentType",
        "grpcWeb",
        "errors",
        "plugin",
        "encodedCharacters",
    }
)
MAX_CHAIN_DEPTH = 16
_FAMILY = {"compressor_br": "compressor", "compressor_zstd": "compressor"}


@dataclass(slots=True)
class Outcome:
    """The plans for a route, or why it is not served / answers an error."""

    plans: list[Plan] = field(default_factory=lambda: [Plan()])
    diagnostics: list[Diagnostic] = field(default_factory=list)
    not_served: bool = False
    fail_closed: bool = False


@dataclass(slots=True)
class MiddlewareTranslator:
    world: World
    options: Options
    # The route's resolver, so services named by middlewares (errors) join the IR's clusters.
    resolver: ServiceResolver | None = None

    def apply(
        self, refs: list[MiddlewareRef], namespace: str, source: SourceRef, path: str
    ) -> Outcome:
        out = Outcome()
        for i, ref in enumerate(refs):
            self._apply_ref(ref, namespace, source, f"{path}[{i}]", out, ())
            if out.not_served or out.fail_closed:
                break
        if not (out.not_served or out.fail_closed):
            self._check_order(out, source, path)
        return out

    def _check_order(self, out: Outcome, source: SourceRef, path: str) -> None:
        """Say so when the listed order differs from the one order Envoy runs filters in."""
        # One middleware may add several instances of one family (compress: one per encoding).
        kinds = [_FAMILY.get(f.kind, f.kind) for f in out.plans[0].filters] if out.plans else []
        for earlier, later in itertools.pairwise(kinds):
            if FILTER_ORDER.index(earlier) > FILTER_ORDER.index(later):
                out.diagnostics.append(
                    Diagnostic(
                        source=source,
                        field=path,
                        reason="FilterOrder",
                        message=f"the route lists {earlier} before {later}, but Envoy runs "
                        f"{later} first (one filter order per listener)",
                        severity="warning",
                    )
                )

    def _stop(self, out: Outcome, diag: Diagnostic, security: bool) -> None:
        out.diagnostics.append(diag)
        if security:
            out.fail_closed = True
        else:
            out.not_served = True

    def _apply_ref(
        self,
        ref: MiddlewareRef,
        namespace: str,
        source: SourceRef,
        path: str,
        out: Outcome,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        ns = ref.namespace or namespace
        name = ref.name
        if "@" in name:
            self._stop(
                out,
                _diag(
                    source,
                    f"{path}.name",
                    "Unsupported",
                    f"cross-provider middleware {name!r}: Switchman has one provider; "
                    "the route is not served",
                ),
                security=False,
            )
            return
        if ns != namespace and not self.options.allow_cross_namespace:
            self._stop(
                out,
                _diag(
                    source,
                    f"{path}.namespace",
                    "CrossNamespaceRefused",
                    f"middleware {ns}/{name} is in another namespace "
                    "(enable --allow-cross-namespace); the route is not served",
                ),
                security=False,
            )
            return
        entry = self.world.middlewares.get((ns, name))
        if entry is None:
            self._stop(
                out,
                _diag(
                    source,
                    f"{path}.name",
                    "MiddlewareNotFound",
                    f"middleware {ns}/{name} not found; the route is not served",
                ),
                security=False,
            )
            return
        mw_ref = entry.ref
        kinds = entry.obj.types
        if len(kinds) != 1:
            what = "no type" if not kinds else f"several types ({', '.join(kinds)})"
            self._stop(
                out,
                _diag(
                    mw_ref,
                    "spec",
                    "InvalidMiddleware",
                    f"a Middleware has exactly one type; this one has {what}",
                ),
                security=any(k in SECURITY for k in kinds),
            )
            return
        kind = kinds[0]
        spec = entry.obj.spec[kind]
        field_path = f"spec.{kind}"
        if kind not in KNOWN:
            self._stop(
                out,
                _diag(mw_ref, field_path, "InvalidMiddleware", f"unknown middleware type {kind!r}"),
                security=False,
            )
            return
        if kind == "chain":
            key = (ns, name)
            if key in stack or len(stack) >= MAX_CHAIN_DEPTH:
                self._stop(
                    out,
                    _diag(
                        mw_ref,
                        f"{field_path}.middlewares",
                        "CyclicReference",
                        "chain refers back to itself (or nests too deep)",
                    ),
                    security=False,
                )
                return
            members = spec.get("middlewares") if isinstance(spec, Mapping) else None
            if not isinstance(members, list):
                self._stop(
                    out,
                    _diag(
                        mw_ref,
                        f"{field_path}.middlewares",
                        "InvalidMiddleware",
                        "chain.middlewares must be a list",
                    ),
                    security=False,
                )
                return
            for j, member in enumerate(members):
                try:
                    member_ref = MiddlewareRef.model_validate(member)
                except ValueError:
                    self._stop(
                        out,
                        _diag(
                            mw_ref,
                            f"{field_path}.middlewares[{j}]",
                            "InvalidMiddleware",
                            "each chain member needs a name",
                        ),
                        security=False,
                    )
                    return
                # Chain members resolve in the chain's own namespace.
                self._apply_ref(
                    member_ref, ns, mw_ref, f"{field_path}.middlewares[{j}]", out, (*stack, key)
                )
                if out.not_served or out.fail_closed:
                    return
            return
        handler = HANDLERS.get(kind)
        security = kind in SECURITY
        if handler is None:
            self._stop(
                out,
                _diag(
                    mw_ref,
                    field_path,
                    "Unsupported",
                    f"middleware type {kind} is not translated yet; "
                    + (
                        "the route answers 500 rather than forward without it"
                        if security
                        else "the route is not served rather than served without it"
                    ),
                ),
                security=security,
            )
            return
        if not isinstance(spec, Mapping):
            self._stop(
                out,
                _diag(mw_ref, field_path, "InvalidMiddleware", f"{kind} must be an object"),
                security=security,
            )
            return
        ctx = Context(
            world=self.world,
            options=self.options,
            namespace=ns,
            source=mw_ref,
            resolver=self.resolver,
        )
        try:
            # A variant already answered (a reply) is out of the chain: later ones never see it.
            answered = [p for p in out.plans if p.reply is not None]
            live = [p for p in out.plans if p.reply is None]
            out.plans = [*handler(spec, live, ctx, field_path), *answered] if live else answered
            out.diagnostics.extend(ctx.warnings)
        except MiddlewareError as exc:
            self._stop(
                out,
                _diag(
                    mw_ref,
                    exc.field,
                    exc.reason,
                    f"{exc.message}; "
                    + (
                        "the route answers 500 rather than forward without it"
                        if security
                        else "the route is not served"
                    ),
                ),
                security=security,
            )


def _diag(source: SourceRef, field: str, reason: str, message: str) -> Diagnostic:
    return Diagnostic(source=source, field=field, reason=reason, message=message)
