"""circuitBreaker and inFlightReq: limits on a router's backends, kept on the route's own copy of
each of its clusters (Traefik keeps one instance of each per router; Envoy keeps this state per
cluster, so a route that shares its Service with another gets a cluster of its own).

circuitBreaker → Envoy outlier detection, failure-percentage based. What Envoy can express:
one failure ratio compared with ``>`` or ``>=`` — ``ResponseCodeRatio(500, 600, 0, 600)`` (5xx
answers, connection failures counted as 5xx, as Traefik counts its own 502s) or
``NetworkErrorRatio()`` (connection failures, timeouts and resets only:
``split_external_local_origin_errors``) — optionally ``&&`` ``RequestThreshold() >= N``
(``failure_percentage_request_volume``). ``checkPeriod`` is the detection interval,
``fallbackDuration`` the ejection time (never growing: ``max_ejection_time`` is the same), every
other detector is switched off, ``max_ejection_percent`` is 100 and, as on every cluster,
``healthy_panic_threshold`` is 0, so once every server is ejected Envoy answers with no healthy
upstream (response flag UH), which the listener turns into ``responseCode`` and Go's status
text, as Traefik's fallback does. It is an approximation, said in a warning every time:
Traefik trips the whole router on the router's ratio over the last 10 seconds; Envoy ejects
each server on its own ratio over the last ``checkPeriod``, and an ejected server comes back at
full traffic (no ``recoveryDuration`` ramp). Latency, ``||``, other status ranges and other
comparisons: ``Unsupported``, the route is not served.

inFlightReq → the route's cluster copies' circuit breaker ``max_requests`` = ``amount``;
overflow (response flag UO) becomes Traefik's 429 ``max connections reached: N``. Envoy has no
per-source concurrency limit: the default criterion (the request Host) is exact when the rule
pins one host, and otherwise (a warning) one limit is shared by every host the route matches; a
per-client criterion (``ipStrategy``, ``requestHeaderName``) would turn into one limit for all
clients together, so it is ``Unsupported`` (the route is not served).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any

from translators import names
from translators.errors import Diagnostic, SourceRef, TranslationError
from translators.ir import Action, Cluster, ClusterPolicy, Forward, LocalReply, OutlierDetection
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported
from translators.middlewares.breaker_expression import (
    Comparison,
    Condition,
    ExpressionError,
    comparisons,
    disjunctions,
    parse_expression,
)
from translators.middlewares.ratelimit import SECOND, go_duration, parse_duration

# Go's net/http StatusText: Traefik's fallback writes it as the body.
GO_STATUS_TEXT = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request URI Too Long",
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}

# --- circuitBreaker -----------------------------------------------------------------------------

BREAKER_FIELDS = frozenset(
    {"expression", "checkPeriod", "fallbackDuration", "recoveryDuration", "responseCode"}
)
# Traefik's defaults (dynamic.CircuitBreaker.SetDefaults); oxy's metrics window is 10 s.
CHECK_PERIOD = 100_000_000
FALLBACK_DURATION = 10 * SECOND
RECOVERY_DURATION = 10 * SECOND
RESPONSE_CODE = 503
# Envoy reads these times in whole milliseconds.
_MS = 1_000_000
_UINT32_MAX = 2**32 - 1
_FIVE_XX = "ResponseCodeRatio(500, 600, 0, 600)"


def _known(spec: Mapping[str, Any], known: frozenset[str], field: str) -> None:
    for key in spec:
        if key not in known:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")


def _duration(spec: Mapping[str, Any], key: str, default: int, field: str) -> int:
    """A Traefik duration in ns, rounded to Envoy's milliseconds; unset, zero or negative is
    Traefik's default (oxy only applies a positive value)."""
    value = spec.get(key)
    if value is None or value == "":
        return default
    ns = parse_duration(value, f"{field}.{key}")
    if ns <= 0:
        return default
    return max(_MS, round(ns / _MS) * _MS)


def _response_code(spec: Mapping[str, Any], field: str) -> int:
    value = spec.get("responseCode")
    if value is None or value == 0:
        return RESPONSE_CODE
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise MiddlewareError(
            f"{field}.responseCode", f"responseCode must be a status from 100 to 599, not {value!r}"
        )
    if value < 200:
        raise Unsupported(
            f"{field}.responseCode",
            f"Envoy's local replies cannot answer with an informational status ({value})",
        )
    return value


def circuit_breaker(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    _known(spec, BREAKER_FIELDS, field)
    expression = spec.get("expression")
    if expression is None or expression == "":
        raise MiddlewareError(
            f"{field}.expression", "expression is required (Traefik refuses an empty one)"
        )
    if not isinstance(expression, str):
        raise MiddlewareError(
            f"{field}.expression", f"expression must be a string, not {expression!r}"
        )
    try:
        condition = parse_expression(expression)
    except ExpressionError as exc:
        raise MiddlewareError(f"{field}.expression", f"{exc.position}: {exc.message}") from None
    check = _duration(spec, "checkPeriod", CHECK_PERIOD, field)
    fallback = _duration(spec, "fallbackDuration", FALLBACK_DURATION, field)
    recovery = _duration(spec, "recoveryDuration", RECOVERY_DURATION, field)
    status = _response_code(spec, field)
    if any(p.cluster_policy is not None and p.cluster_policy.outlier is not None for p in plans):
        raise Unsupported(
            field,
            "a second circuitBreaker on one route is not translated (Envoy has one outlier "
            "detection per cluster)",
        )
    efield = f"{field}.expression"
    ratio, volume = _ratio_and_volume(condition, efield)
    pct = ratio.value * 100
    if ratio.op == ">=":
        threshold, exact = math.ceil(pct), pct.denominator == 1
    else:  # ">": Envoy ejects at or above a whole percentage
        threshold, exact = math.floor(pct) + 1, False
    if threshold > 100:
        ctx.warn(
            efield,
            f"{ratio} can never be true (a ratio is at most 1.0): the circuit breaker never "
            "trips, in Traefik as in Envoy; nothing is translated",
            reason="Ignored",
        )
        return plans
    local = ratio.metric.name == "NetworkErrorRatio"
    outlier = OutlierDetection(
        local_origin=local,
        threshold=threshold,
        request_volume=volume,
        interval=check / SECOND,
        ejection_time=fallback / SECOND,
    )
    reply = LocalReply(flag="UH", status=status, body=GO_STATUS_TEXT.get(status, ""))
    counted = (
        "connection failures, timeouts and resets (Traefik counts 502 and 504 answers, also "
        "those a backend sends itself)"
        if local
        else "5xx answers and connection failures"
    )
    rounding = (
        ""
        if exact
        else f" (Traefik: {'over' if ratio.op == '>' else 'from'} {float(pct):g}%; Envoy's "
        "threshold is a whole percentage)"
    )
    minimum = f" (with at least {volume} requests)" if volume > 1 else ""
    ctx.warn(
        field,
        f"approximated with Envoy outlier detection: every {go_duration(check)}, each server of "
        f"the route's services whose {counted} reached {threshold}% of its requests in that "
        f"period{minimum}{rounding} is ejected for {go_duration(fallback)}; the route answers "
        f"{status} only once every server is ejected. Traefik trips the whole route on the "
        "route's ratio over the last 10s (metrics reset on each trip), and brings traffic back "
        f"over recoveryDuration ({go_duration(recovery)}); Envoy returns an ejected server at "
        "full traffic",
    )
    return [_merge(plan, replace(_policy(plan), outlier=outlier), reply) for plan in plans]


def _ratio_and_volume(condition: Condition, field: str) -> tuple[Comparison, int]:
    """The one failure-ratio comparison of the condition, and the request volume it needs."""
    ors = disjunctions(condition)
    if ors:
        raise Unsupported(
            field,
            f"{ors[0].position}: || is not translated: Envoy's outlier detection ejects on one "
            "failure ratio per circuit breaker",
        )
    ratios: list[Comparison] = []
    volume = 1
    for c in comparisons(condition):
        name = c.metric.name
        if name == "LatencyAtQuantileMS":
            raise Unsupported(
                field,
                f"{c.metric.position}: {c} is not translated: Envoy's outlier detection has no "
                "latency criterion",
            )
        if name == "RequestThreshold":
            if c.op not in (">", ">="):
                raise Unsupported(
                    field,
                    f"{c.position}: {c} is not translated: only RequestThreshold() >= N or > N "
                    "(a minimum number of requests) has an Envoy equivalent",
                )
            assert isinstance(c.value, int)  # the typing pass compares it with an int
            needed = c.value + (1 if c.op == ">" else 0)
            volume = max(volume, min(needed, _UINT32_MAX))
            continue
        if c.op not in (">", ">="):
            raise Unsupported(
                field,
                f"{c.position}: {c} is not translated: Envoy ejects a server when its failure "
                "ratio is high; only > and >= have an equivalent",
            )
        if name == "ResponseCodeRatio":
            low, high, div_low, div_high = c.metric.args
            if (low, high) != (500, 600) or div_low > 100 or div_high < 600:
                raise Unsupported(
                    field,
                    f"{c.metric.position}: {c.metric} is not translated: Envoy's failure "
                    f"percentage is 5xx answers among all answers, i.e. {_FIVE_XX}",
                )
        if ratios:
            raise Unsupported(
                field,
                f"{c.position}: a second failure ratio is not translated: Envoy ejects on each "
                "ratio alone (as with ||), never on both together",
            )
        ratios.append(c)
    if not ratios:
        raise Unsupported(
            field,
            f"no failure ratio to translate: Envoy's outlier detection needs {_FIVE_XX} or "
            "NetworkErrorRatio() compared with > or >=",
        )
    value = ratios[0].value
    assert isinstance(value, Fraction)  # the typing pass compares ratios with floats
    return ratios[0], volume


def _policy(plan: Plan) -> ClusterPolicy:
    return plan.cluster_policy if plan.cluster_policy is not None else ClusterPolicy()


def _merge(plan: Plan, policy: ClusterPolicy, reply: LocalReply) -> Plan:
    replies = (*(r for r in policy.replies if r.flag != reply.flag), reply)
    return replace(
        plan, cluster_policy=replace(policy, replies=tuple(sorted(replies, key=lambda r: r.flag)))
    )


# --- inFlightReq --------------------------------------------------------------------------------

IN_FLIGHT_FIELDS = frozenset({"amount", "sourceCriterion"})
_CRITERIA = ("ipStrategy", "requestHeaderName", "requestHost")


def _per_client(criterion: object, field: str) -> None:
    """Traefik's source extractor: the request Host unless a per-client criterion is set."""
    if criterion is None:
        return
    if not isinstance(criterion, Mapping):
        raise MiddlewareError(field, "sourceCriterion must be an object")
    for key in criterion:
        if key not in _CRITERIA:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    header = criterion.get("requestHeaderName")
    if header is not None and not isinstance(header, str):
        raise MiddlewareError(f"{field}.requestHeaderName", "requestHeaderName must be a string")
    host = criterion.get("requestHost")
    if host is not None and not isinstance(host, bool):
        raise MiddlewareError(f"{field}.requestHost", "requestHost must be true or false")
    chosen = [
        key
        for key, on in (
            ("ipStrategy", criterion.get("ipStrategy") is not None),
            ("requestHeaderName", bool(header)),
            ("requestHost", bool(host)),
        )
        if on
    ]
    if len(chosen) > 1:
        raise MiddlewareError(
            f"{field}.{chosen[1]}",
            f"{chosen[0]} and {chosen[1]} are mutually exclusive (Traefik refuses both)",
        )
    if chosen and chosen[0] != "requestHost":
        what = "client address" if chosen[0] == "ipStrategy" else f"value of {header}"
        raise Unsupported(
            f"{field}.{chosen[0]}",
            f"a limit per {what} is not translated: Envoy has no per-source concurrency limit, "
            "and one limit shared by every client would hold them all to the per-client amount",
        )


def in_flight_req(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    _known(spec, IN_FLIGHT_FIELDS, field)
    amount = spec.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        raise MiddlewareError(f"{field}.amount", f"amount must be an integer, not {amount!r}")
    if amount is None or amount <= 0:
        raise MiddlewareError(
            f"{field}.amount",
            f"amount must be a positive integer, not {amount if amount is not None else 'unset'} "
            "(Traefik would answer every request with 429)",
        )
    _per_client(spec.get("sourceCriterion"), f"{field}.sourceCriterion")
    out = []
    for plan in plans:
        policy = _policy(plan)
        limit = min(amount, _UINT32_MAX)
        if policy.max_requests is not None:  # two limiters in a row: the smaller one rejects
            limit = min(limit, policy.max_requests)
        reply = LocalReply(flag="UO", status=429, body=f"max connections reached: {limit}")
        out.append(_merge(plan, replace(policy, max_requests=limit), reply))
    return out


# --- the route's own clusters, and the listener's answers for them -----------------------------


def with_cluster_policy(
    action: Action,
    plans: Sequence[Plan],
    clusters: dict[str, Cluster],
    owner: str,
    hosts: Sequence[str | None],
    ref: SourceRef,
    path: str,
    diags: list[Diagnostic],
) -> Action:
    """Point a forwarding route at its own copies of its clusters, carrying what its
    middlewares ask of them; the copies are added to ``clusters`` (named
    ``<cluster>/route/<owner>``, ``owner`` being ``<router>/<route index>``). ``hosts``: the one
    host each alternative of the route's rule pins (None: not pinned)."""
    # The variants that forward: one answered by a middleware (a reply, a redirect) skips the
    # middlewares after it, so it may lack the policy.
    policies = {p.cluster_policy for p in plans if p.reply is None and p.redirect is None}
    if len(policies) > 1:
        raise TranslationError(f"the variants of route {owner} disagree on their cluster policy")
    policy = policies.pop() if policies else None
    if policy is None or not isinstance(action, Forward):
        return action
    backends = []
    for backend in action.backends:
        base = clusters[backend.cluster]
        name = names.cluster_variant(base.name, f"route/{owner}")
        clusters[name] = replace(base, name=name, policy=policy)
        backends.append(replace(backend, cluster=name))
    limit = policy.max_requests
    if limit is not None:
        pinned = sorted({h for h in hosts if h is not None})
        if None in hosts or len(pinned) != 1:
            shared = (
                " and ".join(f"Host(`{h}`)" for h in pinned)
                if pinned and None not in hosts
                else "all the hosts the rule matches"
            )
            _warn_once(
                diags,
                ref,
                f"{path}.middlewares",
                f"inFlightReq: Traefik allows {limit} in-flight requests per request Host; Envoy "
                f"has no per-source concurrency limit, so {shared} share one limit of {limit}",
            )
        if len(backends) > 1:
            _warn_once(
                diags,
                ref,
                f"{path}.services",
                f"inFlightReq: Envoy limits each of the {len(backends)} services of this route "
                f"to {limit} in-flight requests on its own (Traefik: {limit} for the route as a "
                "whole)",
            )
    return replace(action, backends=tuple(backends))


def _warn_once(diags: list[Diagnostic], ref: SourceRef, field: str, message: str) -> None:
    warning = Diagnostic(
        source=ref, field=field, reason="Approximated", message=message, severity="warning"
    )
    if warning not in diags:
        diags.append(warning)


def local_replies(clusters: Iterable[Cluster]) -> tuple[LocalReply, ...]:
    """The listener's answers for the routes' own clusters, one per distinct answer."""
    grouped: dict[tuple[str, int, str], list[str]] = {}
    for cluster in clusters:
        if cluster.policy is None:
            continue
        for reply in cluster.policy.replies:
            grouped.setdefault((reply.flag, reply.status, reply.body), []).append(cluster.name)
    return tuple(
        LocalReply(flag=flag, status=status, body=body, clusters=tuple(sorted(names_)))
        for (flag, status, body), names_ in sorted(grouped.items())
    )
