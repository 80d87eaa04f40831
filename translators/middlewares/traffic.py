"""retry, compress, buffering, grpcWeb, contentType: how requests and responses travel.

- ``retry`` becomes the route's Envoy retry policy (``Plan.retry``): ``num_retries = attempts -
  1``; network errors before any byte reached the backend are ``connect-failure,
  refused-stream,reset-before-request``; ``status`` ranges are ``retriable_status_codes``. Traefik
  retries on status only for idempotent methods (not POST, PATCH, LOCK) unless
  ``retryNonIdempotentMethod``; Envoy's policy cannot tell methods apart, so the route is split
  by ``:method``. Backoff: Envoy's jittered exponential backoff from ``initialInterval``, capped
  at twice it (Traefik's cap); without ``initialInterval`` Traefik retries at once, Envoy after at
  most 2 ms. Retries avoid the hosts already tried (Traefik goes back through its load balancer,
  which moves on to the next server). ``timeout`` (a budget after which Traefik stops retrying
  but still returns the last answer) and a ``maxRequestBodyBytes`` limit have no Envoy
  equivalent.
- ``compress`` enables one Envoy compressor instance per encoding (gzip, br, zstd). Envoy reads
  the minimum size and the content types from the listener's instance, so only Traefik's defaults
  translate: ``minResponseBodyBytes`` 1024, and a broad allow-list of compressible types (Envoy's
  list is an allow-list; Traefik compresses every type not excluded). When the client accepts
  several encodings with the same weight, Envoy prefers zstd, then br, then gzip (Traefik's
  default order) whatever the order of ``encodings``.
- ``buffering`` enables Envoy's buffer filter with ``maxRequestBodyBytes``: a larger request gets
  413. ``memRequestBodyBytes`` and ``memResponseBodyBytes`` only choose when Traefik spills to
  disk; Envoy keeps the body in memory, so they are ignored. Response limits and
  ``retryExpression`` are not translated, nor buffering without a request limit.
- ``grpcWeb`` enables Envoy's grpc_web filter; CORS for it (``allowOrigins``) is not translated.
- ``contentType``: Envoy never sniffs a Content-Type, which is what ``autoDetect: false`` asks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from translators.ir import HeaderMatch, Retry
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

# --- shared parsing -------------------------------------------------------------------------

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: object, field: str) -> float:
    """Traefik's duration: a number of seconds, or a Go duration string (``100ms``, ``1m30s``)."""
    if isinstance(value, bool):
        raise MiddlewareError(field, f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text):
            seconds = float(text)
        else:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = _PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise MiddlewareError(field, f"{value!r} is not a duration (e.g. 100ms, 1s)")
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise MiddlewareError(field, f"{value!r} is not a duration")
    if seconds < 0:
        raise MiddlewareError(field, f"{value!r} is negative")
    return seconds


def _int(spec: Mapping[str, Any], key: str, field: str, default: int | None = None) -> int | None:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be an integer, not {value!r}")
    return value


def _bool(spec: Mapping[str, Any], key: str, field: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be true or false, not {value!r}")
    return value


def _strings(spec: Mapping[str, Any], key: str, field: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a list of strings")
    return value


# --- retry ----------------------------------------------------------------------------------

NETWORK_ERRORS = ("connect-failure", "refused-stream", "reset-before-request")
# Traefik's non-idempotent methods (pkg/middlewares/retry).
NON_IDEMPOTENT = HeaderMatch(name=":method", kind="regex", value="POST|PATCH|LOCK")
_RANGE = re.compile(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?")


def _status_codes(items: list[str], field: str) -> tuple[int, ...]:
    codes: set[int] = set()
    for i, item in enumerate(items):
        for part in item.split(","):
            m = _RANGE.fullmatch(part)
            if m is None:
                raise MiddlewareError(
                    f"{field}[{i}]", f"{item!r} is not a status code or range like 500-599"
                )
            low = int(m.group(1))
            high = int(m.group(2) or low)
            if not 100 <= low <= high <= 599:
                raise MiddlewareError(f"{field}[{i}]", f"{item!r} is not a range of HTTP statuses")
            codes.update(range(low, high + 1))
    return tuple(sorted(codes))


def retry(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    attempts = _int(spec, "attempts", field)
    if attempts is None or attempts <= 0:
        raise MiddlewareError(
            f"{field}.attempts",
            f"attempts must be a positive integer, not {spec.get('attempts')!r}",
        )
    interval = parse_duration(spec.get("initialInterval", 0), f"{field}.initialInterval")
    if (
        spec.get("timeout") not in (None, "")
        and parse_duration(spec["timeout"], f"{field}.timeout") > 0
    ):
        raise Unsupported(
            f"{field}.timeout",
            "timeout (stop retrying after a while but return the last answer) has no Envoy "
            "equivalent: Envoy's route and per-try timeouts cut the request off",
        )
    body_limit = _int(spec, "maxRequestBodyBytes", field, -1)
    if body_limit != -1:
        raise Unsupported(
            f"{field}.maxRequestBodyBytes",
            "a body limit for status retries is not translated (Envoy buffers request bodies "
            "for retries up to its own buffer limit)",
        )
    codes = _status_codes(_strings(spec, "status", field), f"{field}.status")
    no_network = _bool(spec, "disableRetryOnNetworkError", field)
    any_method = _bool(spec, "retryNonIdempotentMethod", field)
    if no_network and not codes:
        raise MiddlewareError(
            f"{field}.disableRetryOnNetworkError",
            "retry needs status codes or retries on network errors",
        )
    if any(plan.retry is not None for plan in plans):
        raise Unsupported(field, "a second retry middleware on one route is not translated")
    if attempts == 1:
        return plans  # Traefik: one attempt, no retry
    network = () if no_network else NETWORK_ERRORS
    full = Retry(
        num_retries=attempts - 1,
        retry_on=(*network, *(("retriable-status-codes",) if codes else ())),
        status_codes=codes,
        interval=interval,
    )
    if not codes or any_method:
        return [replace(plan, retry=full) for plan in plans]
    network_only = replace(full, retry_on=network, status_codes=()) if network else None
    out = []
    for plan in plans:
        out.append(replace(plan, conditions=(*plan.conditions, NON_IDEMPOTENT), retry=network_only))
        out.append(
            replace(
                plan,
                conditions=(*plan.conditions, replace(NON_IDEMPOTENT, invert=True)),
                retry=full,
            )
        )
    return out


# --- compress -------------------------------------------------------------------------------

ENCODINGS = ("zstd", "br", "gzip")  # Traefik's default order of preference
MIN_BODY_BYTES = 1024
# What the compressor instances compress (Envoy matches media types exactly): the common
# compressible types. Never application/grpc or text/event-stream (Traefik never compresses them),
# nor already compressed formats (images, video, archives), which Traefik would compress again.
COMPRESSIBLE = (
    "application/atom+xml",
    "application/ecmascript",
    "application/geo+json",
    "application/graphql-response+json",
    "application/javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/problem+xml",
    "application/rss+xml",
    "application/vnd.api+json",
    "application/wasm",
    "application/x-javascript",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "application/xhtml+xml",
    "application/xml",
    "application/yaml",
    "font/otf",
    "font/ttf",
    "image/bmp",
    "image/svg+xml",
    "image/x-icon",
    "text/css",
    "text/csv",
    "text/html",
    "text/javascript",
    "text/markdown",
    "text/plain",
    "text/xml",
    "text/yaml",
)


@dataclass(frozen=True, slots=True)
class CompressConfig:
    encoding: str  # "gzip", "br" or "zstd": one compressor instance each


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def compress(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    encodings = _strings(spec, "encodings", field) or list(ENCODINGS)
    for i, enc in enumerate(encodings):
        if enc not in ENCODINGS:
            raise MiddlewareError(
                f"{field}.encodings[{i}]", f"unknown encoding {enc!r} (gzip, br or zstd)"
            )
    minimum = _int(spec, "minResponseBodyBytes", field, MIN_BODY_BYTES)
    assert minimum is not None
    if minimum < 0:
        raise MiddlewareError(f"{field}.minResponseBodyBytes", "must not be negative")
    if minimum not in (0, MIN_BODY_BYTES):  # 0 is Traefik's "unset": the default
        raise Unsupported(
            f"{field}.minResponseBodyBytes",
            "Envoy's compressor reads the minimum size from the listener: only Traefik's "
            f"default ({MIN_BODY_BYTES}) is translated",
        )
    excluded = _strings(spec, "excludedContentTypes", field)
    included = _strings(spec, "includedContentTypes", field)
    if excluded and included:
        raise MiddlewareError(
            f"{field}.includedContentTypes",
            "excludedContentTypes and includedContentTypes are mutually exclusive",
        )
    if included:
        raise Unsupported(
            f"{field}.includedContentTypes",
            "Envoy's compressor reads its content types from the listener: includedContentTypes "
            "is not translated",
        )
    for i, ctype in enumerate(excluded):
        if _media_type(ctype) in COMPRESSIBLE:
            raise Unsupported(
                f"{field}.excludedContentTypes[{i}]",
                f"Envoy's compressor reads its content types from the listener, where "
                f"{_media_type(ctype)} is compressed; excluding it is not translated",
            )
    if spec.get("defaultEncoding") not in (None, ""):
        raise Unsupported(
            f"{field}.defaultEncoding",
            "Envoy compresses only for clients that send Accept-Encoding",
        )
    # Listener order is fixed; which instances a route turns on follows ``encodings``.
    chosen = [enc for enc in ENCODINGS if enc in encodings]
    out = []
    for plan in plans:
        for enc in chosen:
            plan = plan.add_filter(_COMPRESS_KINDS[enc], CompressConfig(encoding=enc))
        out.append(plan)
    return out


_COMPRESS_KINDS = {"gzip": "compressor", "br": "compressor_br", "zstd": "compressor_zstd"}


# --- buffering ------------------------------------------------------------------------------

MAX_BUFFER = 2**32 - 1  # Envoy's max_request_bytes is a uint32


@dataclass(frozen=True, slots=True)
class BufferConfig:
    max_request_bytes: int


def buffering(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    for key in ("memRequestBodyBytes", "memResponseBodyBytes", "maxResponseBodyBytes"):
        value = _int(spec, key, field, 0)
        assert value is not None
        if value < 0:
            raise MiddlewareError(f"{field}.{key}", f"{key} must not be negative")
    if _int(spec, "maxResponseBodyBytes", field, 0):
        raise Unsupported(
            f"{field}.maxResponseBodyBytes",
            "Envoy's buffer filter limits requests only (a too-large response is not a 500)",
        )
    if spec.get("retryExpression") not in (None, ""):
        raise Unsupported(f"{field}.retryExpression", "retryExpression is not translated")
    limit = _int(spec, "maxRequestBodyBytes", field, 0)
    assert limit is not None
    if limit < 0:
        raise MiddlewareError(f"{field}.maxRequestBodyBytes", "must not be negative")
    if limit == 0:
        raise Unsupported(
            f"{field}.maxRequestBodyBytes",
            "buffering without a request limit (Traefik spills to disk) is not translated: "
            "Envoy buffers in memory, up to a limit",
        )
    if limit > MAX_BUFFER:
        raise Unsupported(
            f"{field}.maxRequestBodyBytes", f"Envoy buffers at most {MAX_BUFFER} bytes"
        )
    return [plan.add_filter("buffer", BufferConfig(max_request_bytes=limit)) for plan in plans]


# --- grpcWeb, contentType -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrpcWebConfig:
    pass


def grpc_web(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    if _strings(spec, "allowOrigins", field):
        raise Unsupported(
            f"{field}.allowOrigins", "CORS for gRPC-Web (allowOrigins) is not translated yet"
        )
    return [plan.add_filter("grpc_web", GrpcWebConfig()) for plan in plans]


def content_type(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    if _bool(spec, "autoDetect", field):
        raise Unsupported(f"{field}.autoDetect", "Envoy never sniffs a response's Content-Type")
    return plans  # autoDetect false: no sniffing, which is what Envoy does
