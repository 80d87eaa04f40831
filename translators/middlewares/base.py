"""The pieces every middleware translation shares.

A route's middlewares are applied, in order, to a ``Plan``: what the route will do to the request
and response. A middleware that splits the route (``stripPrefix`` with several prefixes: which one
is stripped depends on the request) returns several plans, each with the extra path condition
that selects it; the route becomes one Envoy route per plan, in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from translators.errors import Diagnostic, SourceRef
from translators.ir import (
    ClusterPolicy,
    DirectResponse,
    FilterUse,
    HeaderMatch,
    HeaderOps,
    Redirect,
    Retry,
    Rewrite,
)
from translators.options import Options
from translators.world import World

if TYPE_CHECKING:  # translators.service imports this module (through transport)
    from translators.service import ServiceResolver

# Middlewares that protect a route: when one cannot be translated the route answers an error,
# it is never forwarded without its protection.
SECURITY = frozenset(
    {
        "basicAuth",
        "digestAuth",
        "forwardAuth",
        "ipAllowList",
        "ipWhiteList",
        "rateLimit",
        "encodedCharacters",
    }
)


class MiddlewareError(Exception):
    """A Middleware that cannot be translated as written; names the field."""

    def __init__(self, field: str, message: str, reason: str = "InvalidMiddleware") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.reason = reason


class Unsupported(MiddlewareError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, "Unsupported")


@dataclass(frozen=True, slots=True)
class PathState:
    """The path as the middlewares so far have made it, relative to the original path O.

    current = ``added`` + (O without the literal prefix ``stripped``), unless ``replaced`` is set,
    in which case current = ``replaced`` (a literal, or a substitution of ``pattern`` on O).
    """

    stripped: str = ""
    added: str = ""
    replaced: str | None = None
    pattern: str | None = None

    @property
    def identity(self) -> bool:
        return not self.stripped and not self.added and self.replaced is None

    def rewrite(self) -> Rewrite | None:
        if self.identity:
            return None
        if self.pattern is not None:
            assert self.replaced is not None
            return Rewrite(pattern=self.pattern, substitution=self.replaced)
        if self.replaced is not None:
            return Rewrite(pattern="^.*$", substitution=_sub_escape(self.replaced))
        # Traefik: TrimPrefix, then a leading slash if the rest has none; then the added prefix.
        stripped = _re_escape(self.stripped)
        return Rewrite(pattern=f"^{stripped}/?(.*)$", substitution=f"{_sub_escape(self.added)}/\\1")


def _re_escape(text: str) -> str:
    import re2

    return str(re2.escape(text))


def _sub_escape(text: str) -> str:
    return text.replace("\\", "\\\\")


@dataclass(frozen=True, slots=True)
class Plan:
    conditions: tuple[HeaderMatch, ...] = ()
    path: PathState = PathState()
    request_set: tuple[tuple[str, str], ...] = ()
    request_remove: tuple[str, ...] = ()
    response_set: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()
    response_append: tuple[tuple[str, str], ...] = ()
    redirect: Redirect | None = None
    # A variant a middleware answers itself (encodedCharacters' 400): the middlewares listed
    # after it never see it, as in Traefik, where the request stops there.
    reply: DirectResponse | None = None
    filters: tuple[FilterUse, ...] = ()
    retry: Retry | None = None
    # circuitBreaker, inFlightReq: set on every plan alike (they act on the route's clusters).
    cluster_policy: ClusterPolicy | None = None

    def add_filter(self, kind: str, config: object) -> Plan:
        return replace(self, filters=(*self.filters, FilterUse(kind=kind, config=config)))

    def set_request(self, name: str, value: str) -> Plan:
        kept = tuple((k, v) for k, v in self.request_set if k.lower() != name.lower())
        return replace(self, request_set=(*kept, (name, value)))

    def remove_request(self, name: str) -> Plan:
        kept = tuple((k, v) for k, v in self.request_set if k.lower() != name.lower())
        return replace(self, request_set=kept, request_remove=(*self.request_remove, name))

    def set_response(self, name: str, value: str) -> Plan:
        kept = tuple((k, v) for k, v in self.response_set if k.lower() != name.lower())
        return replace(self, response_set=(*kept, (name, value)))

    def remove_response(self, name: str) -> Plan:
        kept = tuple((k, v) for k, v in self.response_set if k.lower() != name.lower())
        return replace(self, response_set=kept, response_remove=(*self.response_remove, name))

    def append_response(self, name: str, value: str) -> Plan:
        return replace(self, response_append=(*self.response_append, (name, value)))

    def header_ops(self) -> HeaderOps:
        return HeaderOps(
            request_set=self.request_set,
            request_remove=self.request_remove,
            response_set=self.response_set,
            response_remove=self.response_remove,
            response_append=self.response_append,
        )


@dataclass(frozen=True, slots=True)
class Context:
    world: World
    options: Options
    namespace: str
    source: SourceRef
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Translated, but the user should know: collected after the handler returns.
    warnings: list[Diagnostic] = field(default_factory=list)
    # The route's service resolver, for middlewares that send requests to a Service (errors).
    resolver: ServiceResolver | None = None

    def warn(self, field: str, message: str, reason: str = "Approximated") -> None:
        self.warnings.append(
            Diagnostic(
                source=self.source, field=field, reason=reason, message=message, severity="warning"
            )
        )
