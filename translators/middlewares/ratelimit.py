"""rateLimit: Envoy's local_ratelimit filter, per route, one token bucket per source.

Traefik keeps a token bucket of ``burst`` tokens refilled at ``average`` per ``period`` for each
source: the TCP peer by default, else the value of ``sourceCriterion.requestHeaderName`` or the
request's Host (``requestHost``). Envoy gets the same bucket per route, with one dynamic
descriptor (one bucket per distinct value, up to Traefik's 65,536 sources) keyed by the peer
address, the header or ``:authority``; requests without the header share one bucket, as they
share Traefik's bucket for the empty value. Envoy (1.40, tested) refills its bucket
continuously at tokens_per_fill / fill_interval, capped at max_tokens, as Traefik's
golang.org/x/time/rate does, so several tokens per fill interval do not make bursts.

Deviations: Traefik *delays* a request whose wait for a token is short (≤ 1/(2·rate), or 500 ms
when rate < 1/s); Envoy answers 429 at once. ``Retry-After`` and ``X-Retry-In`` carry the longest
wait for one token (1/rate), not the exact wait Traefik computes. ``ipStrategy`` (X-Forwarded-For
trust is per listener in Envoy) and ``redis`` are not translated; the route fails closed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported
from translators.middlewares.ipallowlist import ip_strategy_is_default

SECOND = 1_000_000_000
# Envoy refuses a fill interval under 50 ms.
MIN_FILL_NS = 50_000_000
MAX_SOURCES = 65_536
KNOWN_FIELDS = frozenset({"average", "period", "burst", "sourceCriterion", "redis"})
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": SECOND}
_UNITS |= {"m": 60 * SECOND, "h": 3600 * SECOND}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    max_tokens: int
    tokens_per_fill: int
    fill_interval_ns: int
    source: str  # "remote_address", "header" or "host"
    header: str | None
    retry_after: str  # seconds, rounded up
    retry_in: str  # a Go duration


def parse_duration(value: object, field: str) -> int:
    """A Traefik duration in nanoseconds: a number (or digits) of seconds, or a Go duration."""
    if isinstance(value, bool):
        raise MiddlewareError(field, "not a duration")
    if isinstance(value, int):
        return value * SECOND
    if isinstance(value, float) and value.is_integer():
        return int(value) * SECOND
    if not isinstance(value, str):
        raise MiddlewareError(field, "not a duration")
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text) * SECOND
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body == "0":
        return 0
    total = Fraction(0)
    pos = 0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += Fraction(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise MiddlewareError(field, f"{value!r} is not a duration (e.g. 1s, 500ms, 1m)")
    return sign * int(total)


def go_duration(ns: int) -> str:
    """time.Duration.String()."""
    if ns == 0:
        return "0s"
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim(Fraction(ns, size)) + unit
    h, rest = divmod(ns, 3600 * SECOND)
    m, rest = divmod(rest, 60 * SECOND)
    out = _trim(Fraction(rest, SECOND)) + "s"
    if h:
        return f"{h}h{m}m{out}"
    if m:
        return f"{m}m{out}"
    return out


def _trim(value: Fraction) -> str:
    whole = int(value)
    frac = value - whole
    if not frac:
        return str(whole)
    digits = f"{float(frac):.9f}"[2:].rstrip("0")
    return f"{whole}.{digits}"


def _int(spec: Mapping[str, Any], key: str, default: int, field: str) -> int:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be an integer")
    return value


def _source(criterion: object, field: str) -> tuple[str, str | None]:
    if criterion is None:
        return "remote_address", None
    if not isinstance(criterion, Mapping):
        raise MiddlewareError(field, "sourceCriterion must be an object")
    for key in criterion:
        if key not in ("ipStrategy", "requestHeaderName", "requestHost"):
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    header = criterion.get("requestHeaderName")
    if header is not None and not isinstance(header, str):
        raise MiddlewareError(f"{field}.requestHeaderName", "requestHeaderName must be a string")
    host = criterion.get("requestHost")
    if host is not None and not isinstance(host, bool):
        raise MiddlewareError(f"{field}.requestHost", "requestHost must be true or false")
    # Traefik's precedence: ipStrategy, then requestHeaderName, then requestHost.
    if criterion.get("ipStrategy") is not None:
        ip_strategy_is_default(criterion["ipStrategy"], f"{field}.ipStrategy")
        return "remote_address", None
    if header:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", header):
            raise MiddlewareError(f"{field}.requestHeaderName", f"{header!r} is not a header name")
        return "header", header.lower()
    if host:
        return "host", None
    return "remote_address", None


def rate_limit(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    for key in spec:
        if key not in KNOWN_FIELDS:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    if spec.get("redis") is not None:
        raise Unsupported(
            f"{field}.redis", "a rate limit shared through Redis is not translated yet"
        )
    average = _int(spec, "average", 0, field)
    period = (
        SECOND if spec.get("period") is None else parse_duration(spec["period"], f"{field}.period")
    )
    if period < 0:
        raise MiddlewareError(f"{field}.period", "period must not be negative")
    period = period or SECOND
    burst = max(1, _int(spec, "burst", 1, field))
    source, header = _source(spec.get("sourceCriterion"), f"{field}.sourceCriterion")
    if average <= 0:  # Traefik: no limit
        return plans
    if burst > 0xFFFFFFFF:
        raise MiddlewareError(f"{field}.burst", "burst is too large")
    # rate = average / period: the fewest tokens per fill whose interval is a whole number of
    # nanoseconds and at least 50 ms.
    per_token = Fraction(period, average)  # ns per token
    step = per_token.denominator
    tokens = max(1, math.ceil(Fraction(MIN_FILL_NS) / (per_token * step))) * step
    interval = per_token * tokens
    if tokens > 0xFFFFFFFF:
        raise Unsupported(f"{field}.average", "a rate this high is not translated")
    wait = math.ceil(per_token)
    config = RateLimitConfig(
        max_tokens=burst,
        tokens_per_fill=tokens,
        fill_interval_ns=int(interval),
        source=source,
        header=header,
        retry_after=str(max(1, math.ceil(Fraction(wait, SECOND)))),
        retry_in=go_duration(wait),
    )
    return [plan.add_filter("rate_limit", config) for plan in plans]
