"""errors: a response whose status is listed is replaced by a page fetched from another service.

Traefik (``pkg/middlewares/customerrors``): when the backend answers a status in ``status``, its
body is dropped and ``GET http://<original Host><query>`` goes to ``service`` with every header of
the request; the client gets that page's headers and body with the caught status, or the one
``statusRewrites`` maps it to (whatever status the error service itself answered). In ``query``,
``{status}`` is the status the client gets, ``{originalStatus}`` the caught one, ``{url}`` the
escaped request URL. 1xx statuses are never caught.

Envoy: the ``custom_response`` filter on the route. On a listed status a RedirectPolicy re-runs the
request — as a GET without body, every header kept — against an internal route:

- the redirect goes to the host ``ERROR_PAGE_HOST`` with a header naming the internal route
  (``ERROR_PAGE_HEADER``: the listener strips it from every client request before routing, so no
  client can reach an error service) and, when the page's path depends on the status, the caught
  status in ``STATUS_HEADER`` (``%RESPONSE_CODE%``);
- the internal routes (one per error service and page path, on each entry point that uses them,
  above every user route and alone in the virtual host of ``ERROR_PAGE_HOST``) rewrite the path to
  the query, send the original Host (from X-Forwarded-Host, which the listener sets from the
  client's Host; ``passHostHeader: false``: the server's ip:port, as in Traefik) and forward to the
  service's cluster. Response header changes and the compress and CORS filters of the middlewares
  listed before errors apply to the page, as Traefik's outer middlewares wrap it;
- Envoy 1.40 gives the page the caught status (whatever the error service answered) unless the
  policy sets ``status_code``: one policy per status the client gets, so a route costs one policy
  per ``statusRewrites`` target (+1), however wide the ranges (a policy is ~1.4 KiB in Envoy).

Not translated (``Unsupported``, the route is not served): ``{url}`` (Envoy cannot put the
request URL in the page's path), ``errorRequestHeaders`` (Envoy sends every header), two errors
middlewares on one route where the inner one's page status is caught by the outer one. Envoy
re-runs only a complete request: an answer sent before the request body has been fully received
passes through unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from translators import names
from translators.errors import SourceRef
from translators.ir import (
    ERROR_PAGE_HEADER,
    OMIT_DEFAULT,
    DirectResponse,
    FilterUse,
    Forward,
    HeaderMatch,
    HeaderOps,
    Match,
    Mirror,
    Rewrite,
    Route,
)
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported
from translators.models import LoadBalancerSpec
from translators.service import BackendError, integer_weights

KIND = "custom_response"
# The host error-page requests are redirected to: ``.invalid`` names no real host (RFC 2606).
ERROR_PAGE_HOST = "errors.switchman.invalid"
# The caught status, for internal routes whose page path depends on it.
STATUS_HEADER = "x-switchman-error-status"
# Where the internal route finds the client's Host (set by the listener before routing).
ORIGINAL_HOST_HEADER = "x-forwarded-host"
# Above every user route: Traefik's highest priority is MaxInt64 - 1000.
ERROR_PAGE_PRIORITY = 2**63
KNOWN_FIELDS = frozenset({"status", "statusRewrites", "service", "query", "errorRequestHeaders"})
# Filters of the middlewares before errors that act on the response the client gets: they run on
# the internal route too (the ones acting on the request already ran on the original request).
_RESPONSE_SIDE = frozenset({"cors", "compressor", "compressor_br", "compressor_zstd"})
_RANGE = re.compile(r"(\d{3})(?:-(\d{3}))?")
# RFC 3986 path and query characters: what Go's URL parser keeps as written.
_PATH_OK = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_QUERY_OK = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPolicy:
    """Caught statuses answered alike: the page with ``status`` (None: the caught status)."""

    codes: tuple[int, ...]
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPage:
    """One internal route: the page's path for the caught statuses ``codes`` (empty: all)."""

    path: str
    codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorService:
    """Where the pages come from and what is done to them on the way back."""

    action: Forward | DirectResponse
    pages: tuple[ErrorPage, ...]
    response: HeaderOps = field(default_factory=HeaderOps)
    filters: tuple[FilterUse, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPages:
    """custom_response settings of one route.

    With ``service``: a route's errors middleware; its policies send caught responses to the
    internal routes of ``key``. Without: an internal route, which only turns the filter on so that
    the page gets the status the policy chose.
    """

    key: str = field(default="", metadata=OMIT_DEFAULT)
    policies: tuple[ErrorPolicy, ...] = field(default=(), metadata=OMIT_DEFAULT)
    # The page's path depends on the status: the status is sent along.
    by_status: bool = field(default=False, metadata=OMIT_DEFAULT)
    service: ErrorService | None = field(default=None, metadata=OMIT_DEFAULT)
    source: SourceRef = field(default=SourceRef(), metadata=OMIT_DEFAULT)


def status_regex(codes: Iterable[int]) -> str:
    """A full-match RE2 for exactly these 3-digit statuses, compact (500-599 → ``5[0-9][0-9]``)."""
    by_hundred: dict[int, dict[int, set[int]]] = {}
    for c in sorted(set(codes)):
        by_hundred.setdefault(c // 100, {}).setdefault(c // 10 % 10, set()).add(c % 10)
    parts = []
    for hundred, tens in sorted(by_hundred.items()):
        groups: dict[tuple[int, ...], list[int]] = {}
        for ten, units in sorted(tens.items()):
            groups.setdefault(tuple(sorted(units)), []).append(ten)
        for units_key, tens_list in sorted(groups.items(), key=lambda kv: kv[1]):
            parts.append(f"{hundred}{_digits(tens_list)}{_digits(units_key)}")
    return "|".join(parts)


def _digits(digits: Iterable[int]) -> str:
    ds = sorted(digits)
    if len(ds) == 1:
        return str(ds[0])
    runs: list[list[int]] = []
    for d in ds:
        if runs and d == runs[-1][1] + 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    items = [str(a) if a == b else f"{a}{b}" if b == a + 1 else f"{a}-{b}" for a, b in runs]
    return "[" + "".join(items) + "]"


def _codes(item: object, field: str, ctx: Context) -> set[int]:
    """Traefik's status syntax: ``404``, ``500-599``, or a comma-separated mix of them."""
    text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
    if not isinstance(text, str):
        raise MiddlewareError(field, f"{item!r} is not a status code or range like 500-599")
    codes: set[int] = set()
    for part in text.split(","):
        m = _RANGE.fullmatch(part)
        if m is None:
            raise MiddlewareError(field, f"{text!r} is not a status code or range like 500-599")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise MiddlewareError(field, f"{text!r}: HTTP statuses run from 100 to 599")
        if low > high:
            ctx.warn(
                field,
                f"range {part!r} runs backwards and catches nothing (as in Traefik)",
                "EmptyRange",
            )
        codes.update(range(low, high + 1))
    return codes


def _caught(spec: Mapping[str, Any], field: str, ctx: Context) -> list[int]:
    raw = spec.get("status")
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise MiddlewareError(f"{field}.status", "status must be a list of codes or ranges")
    codes: set[int] = set()
    for i, item in enumerate(items):
        codes |= _codes(item, f"{field}.status[{i}]", ctx)
    # A 1xx answer is informational: Traefik passes it on and waits for the final one.
    return sorted(c for c in codes if c >= 200)


def _rewrites(spec: Mapping[str, Any], field: str, ctx: Context) -> list[tuple[set[int], int]]:
    raw = spec.get("statusRewrites")
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise MiddlewareError(
            f"{field}.statusRewrites", "statusRewrites must map statuses or ranges to a status"
        )
    out: list[tuple[set[int], int]] = []
    for key, value in raw.items():
        path = f"{field}.statusRewrites[{key}]"
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
            raise MiddlewareError(path, f"{value!r} is not a status from 200 to 599")
        codes = _codes(key, path, ctx)
        for earlier, target in out:
            if earlier & codes and target != value:
                ctx.warn(
                    path,
                    f"overlaps another rewrite with a different status: Traefik picks either at "
                    f"random for {min(earlier & codes)}; Switchman uses the one listed first",
                    "AmbiguousRewrite",
                )
                break
        out.append((codes, value))
    return out


def _query(spec: Mapping[str, Any], field: str) -> str:
    query = spec.get("query", "")
    if query is None:
        return ""
    if not isinstance(query, str):
        raise MiddlewareError(f"{field}.query", "query must be a string (the error page's path)")
    if "{url}" in query:
        raise Unsupported(
            f"{field}.query",
            "{url} (the request URL in the error page's path) cannot be expressed: Envoy's "
            "redirect to the error service has a fixed path",
        )
    return query


def _page_path(query: str, status: int, original: int, field: str) -> str:
    """Traefik: ``"/" + TrimPrefix(query, "/")``, placeholders replaced, fragment dropped."""
    text = query.replace("{status}", str(status)).replace("{originalStatus}", str(original))
    path, _, rest = ("/" + text.removeprefix("/")).split("#", 1)[0].partition("?")
    if not _PATH_OK.fullmatch(path) or not _QUERY_OK.fullmatch(rest):
        raise Unsupported(
            f"{field}.query",
            f"{query!r} gives the path {path + ('?' + rest if rest else '')!r}, with characters "
            "that are not valid in a URL as written (Traefik would percent-encode some of them); "
            "write them percent-encoded",
        )
    return path + ("?" + rest if rest else "")


def _service(
    spec: Mapping[str, Any], field: str, ctx: Context
) -> tuple[Forward | DirectResponse, tuple[FilterUse, ...]]:
    """The error service through the route resolver: its clusters join the IR like a route's."""
    raw = spec.get("service")
    if not raw:
        raise MiddlewareError(
            f"{field}.service", "service is required (the Service that serves the error pages)"
        )
    if not isinstance(raw, Mapping):
        raise MiddlewareError(f"{field}.service", "service must be a Service reference")
    try:
        ref = LoadBalancerSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise MiddlewareError(
            f"{field}.service.{loc}" if loc else f"{field}.service", err["msg"]
        ) from None
    if ctx.resolver is None:
        raise RuntimeError("the errors middleware needs the route's service resolver")
    path = f"{field}.service"
    try:
        backends = ctx.resolver.resolve_single(ref, ctx.namespace, ctx.source, path)
    except BackendError as exc:
        d = exc.diagnostic
        if d.source == ctx.source:
            raise MiddlewareError(d.field, d.message, d.reason) from None
        raise MiddlewareError(
            path, f"{d.source.describe()}: {d.field}: {d.message}", d.reason
        ) from None
    ctx.warnings.extend(backends.warnings)
    if backends.failover is not None or backends.pin is not None:
        what = "a failover service" if backends.failover is not None else "a sticky weighted split"
        raise Unsupported(path, f"{what} as the error service is not translated")
    weighted = integer_weights(backends.shares)
    if not weighted:
        return DirectResponse(status=503, body="no service available\n"), ()
    if len(backends.pass_host_header) > 1:
        ctx.warn(
            path,
            "services disagree on passHostHeader; Envoy sets it per route, so the Host header "
            "is rewritten for all of them",
            "Unsupported",
        )
    pass_host = all(backends.pass_host_header)
    action = Forward(
        backends=weighted,
        pass_host_header=pass_host,
        mirrors=tuple(Mirror(cluster=c, fraction=float(f)) for c, f in backends.mirrors),
        hash_client_ip=backends.hash_client_ip,
        host_header=ORIGINAL_HOST_HEADER if pass_host else "",
    )
    if backends.session is None:
        return action, ()
    return action, (FilterUse(kind="stateful_session", config=backends.session),)


def _pages(query: str, status_of: Mapping[int, int], field: str) -> tuple[ErrorPage, ...]:
    by_path: dict[str, list[int]] = {}
    for code, status in status_of.items():
        by_path.setdefault(_page_path(query, status, code, field), []).append(code)
    if len(by_path) == 1:
        return (ErrorPage(path=next(iter(by_path))),)
    return tuple(ErrorPage(path=p, codes=tuple(c)) for p, c in sorted(by_path.items()))


def _policies(status_of: Mapping[int, int]) -> tuple[ErrorPolicy, ...]:
    groups: dict[int | None, list[int]] = {}
    for code, status in status_of.items():
        groups.setdefault(None if status == code else status, []).append(code)
    return tuple(
        ErrorPolicy(codes=tuple(codes), status=status)
        for status, codes in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    )


def _check_earlier(plan: Plan, status_of: Mapping[int, int], field: str) -> None:
    """Traefik lets an earlier (outer) errors middleware replace a later one's page when it
    catches the page's status; Envoy runs one redirect per request."""
    answered = set(status_of.values())
    for use in plan.filters:
        if use.kind == KIND and isinstance(use.config, ErrorPages):
            earlier = {c for p in use.config.policies for c in p.codes}
            both = sorted(answered & earlier)
            if both:
                raise Unsupported(
                    f"{field}.status",
                    f"an earlier errors middleware on this route also catches "
                    f"{', '.join(map(str, both[:5]))}{'…' if len(both) > 5 else ''}: Traefik "
                    "would replace this page with that one's, Envoy answers one error page",
                )


def errors(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    for key in spec:
        if key not in KNOWN_FIELDS:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    caught = _caught(spec, field, ctx)
    rewrites = _rewrites(spec, field, ctx)
    query = _query(spec, field)
    if spec.get("errorRequestHeaders") is not None:
        raise Unsupported(
            f"{field}.errorRequestHeaders",
            "Envoy sends the error service every header of the request; it cannot keep only some",
        )
    # Traefik builds the service even when nothing is caught: a broken reference still fails.
    action, session = _service(spec, field, ctx)
    if not caught:
        return plans
    status_of = {c: next((to for codes, to in rewrites if c in codes), c) for c in caught}
    pages = _pages(query, status_of, field)
    policies = _policies(status_of)
    out = []
    for plan in plans:
        _check_earlier(plan, status_of, field)
        service = ErrorService(
            action=action,
            pages=pages,
            response=HeaderOps(
                response_set=plan.response_set,
                response_remove=plan.response_remove,
                response_append=plan.response_append,
            ),
            filters=(*(u for u in plan.filters if u.kind in _RESPONSE_SIDE), *session),
        )
        config = ErrorPages(
            key=hashlib.sha256(repr(service).encode()).hexdigest()[:16],
            policies=policies,
            by_status=len(pages) > 1,
            service=service,
            source=ctx.source,
        )
        # HEAD is left alone: Envoy 1.40 sometimes writes the page's body after the headers of
        # a redirected HEAD answer, which corrupts the client's next answer on that connection
        # (tests/test_middleware_errors.py). A HEAD gets the backend's own answer instead.
        out.append(replace(plan, conditions=(*plan.conditions, _HEAD)))
        served = plan.add_filter(KIND, config)
        out.append(replace(served, conditions=(*served.conditions, replace(_HEAD, invert=True))))
    return out


_HEAD = HeaderMatch(name=":method", kind="exact", value="HEAD")


def error_services(routes: Iterable[Route]) -> dict[tuple[str, str], ErrorPages]:
    """The error services the routes use, by (entry point, key); the first source names it."""
    found: dict[tuple[str, str], ErrorPages] = {}
    for r in routes:
        for use in r.filters:
            cfg = use.config
            if use.kind == KIND and isinstance(cfg, ErrorPages) and cfg.service is not None:
                prev = found.get((r.entrypoint, cfg.key))
                if prev is None or cfg.source < prev.source:
                    found[(r.entrypoint, cfg.key)] = cfg
    return found


def error_page_clusters(routes: Iterable[Route]) -> set[str]:
    out: set[str] = set()
    for cfg in error_services(routes).values():
        assert cfg.service is not None  # error_services keeps only those
        if isinstance(cfg.service.action, Forward):
            out.update(b.cluster for b in cfg.service.action.backends)
            out.update(m.cluster for m in cfg.service.action.mirrors)
    return out


def error_page_routes(routes: Iterable[Route]) -> list[Route]:
    """The internal routes the routes' errors middlewares redirect to."""
    out = []
    for (entrypoint, key), cfg in sorted(error_services(routes).items()):
        service = cfg.service
        assert service is not None  # error_services keeps only those
        for i, page in enumerate(service.pages):
            conditions = [HeaderMatch(name=ERROR_PAGE_HEADER, kind="exact", value=key)]
            if page.codes:
                conditions.append(
                    HeaderMatch(name=STATUS_HEADER, kind="regex", value=status_regex(page.codes))
                )
            out.append(
                Route(
                    name=names.error_page_route_name(key, i),
                    router=names.error_page_route_name(key),
                    entrypoint=entrypoint,
                    match=Match(headers=tuple(conditions), exact_host=ERROR_PAGE_HOST),
                    action=service.action,
                    priority=ERROR_PAGE_PRIORITY,
                    source=cfg.source,
                    index=i,
                    headers=HeaderOps(
                        request_remove=(ERROR_PAGE_HEADER, STATUS_HEADER),
                        response_set=service.response.response_set,
                        response_remove=service.response.response_remove,
                        response_append=service.response.response_append,
                    ),
                    rewrite=Rewrite(pattern="^.*$", substitution=page.path.replace("\\", "\\\\")),
                    filters=(*service.filters, FilterUse(kind=KIND, config=ErrorPages())),
                )
            )
    return out
