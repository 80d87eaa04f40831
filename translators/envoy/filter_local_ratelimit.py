"""Envoy's local_ratelimit filter for the rateLimit middleware: a token bucket per source, per
route (each route's own config, so each route has its own buckets, as each Traefik router has).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.route.v3 import route_components_pb2 as route_v3
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as ratelimit_v3
from envoy.extensions.filters.http.local_ratelimit.v3 import (
    local_rate_limit_pb2 as local_ratelimit_v3,
)
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from translators.envoy.filters import FilterKind, register
from translators.middlewares.ratelimit import MAX_SOURCES, RateLimitConfig

_STAT_PREFIX = "rate_limit"


def _all(key: str) -> base_v3.RuntimeFractionalPercent:
    return base_v3.RuntimeFractionalPercent(
        runtime_key=key,
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
    )


def _listener() -> local_ratelimit_v3.LocalRateLimit:
    # Disabled on the listener; every route that enables it brings its own buckets.
    return local_ratelimit_v3.LocalRateLimit(stat_prefix=_STAT_PREFIX)


def _action(config: RateLimitConfig) -> route_v3.RateLimit.Action:
    if config.source == "header":
        assert config.header is not None
        return route_v3.RateLimit.Action(
            request_headers=route_v3.RateLimit.Action.RequestHeaders(
                header_name=config.header, descriptor_key="header"
            )
        )
    if config.source == "host":
        return route_v3.RateLimit.Action(
            request_headers=route_v3.RateLimit.Action.RequestHeaders(
                header_name=":authority", descriptor_key="host"
            )
        )
    return route_v3.RateLimit.Action(remote_address=route_v3.RateLimit.Action.RemoteAddress())


def _per_route(config: object) -> local_ratelimit_v3.LocalRateLimit:
    assert isinstance(config, RateLimitConfig)
    seconds, nanos = divmod(config.fill_interval_ns, 1_000_000_000)
    bucket = token_bucket_pb2.TokenBucket(
        max_tokens=config.max_tokens,
        tokens_per_fill=wrappers_pb2.UInt32Value(value=config.tokens_per_fill),
        fill_interval=duration_pb2.Duration(seconds=seconds, nanos=nanos),
    )
    key = {"header": "header", "host": "host"}.get(config.source, "remote_address")
    headers = [
        base_v3.HeaderValueOption(
            header=base_v3.HeaderValue(key=name, value=value),
            append_action=base_v3.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for name, value in (("Retry-After", config.retry_after), ("X-Retry-In", config.retry_in))
    ]
    return local_ratelimit_v3.LocalRateLimit(
        stat_prefix=_STAT_PREFIX,
        status=http_status_pb2.HttpStatus(code=http_status_pb2.TooManyRequests),
        # Requests that yield no descriptor (the header is absent) share this bucket.
        token_bucket=bucket,
        filter_enabled=_all("switchman.rate_limit.enabled"),
        filter_enforced=_all("switchman.rate_limit.enforced"),
        response_headers_to_add=headers,
        rate_limits=[route_v3.RateLimit(actions=[_action(config)])],
        # An empty value: one bucket per distinct value (dynamic descriptors).
        descriptors=[
            ratelimit_v3.LocalRateLimitDescriptor(
                entries=[ratelimit_v3.RateLimitDescriptor.Entry(key=key, value="")],
                token_bucket=bucket,
            )
        ],
        max_dynamic_descriptors=wrappers_pb2.UInt32Value(value=MAX_SOURCES),
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
    )


register("rate_limit", FilterKind("envoy.filters.http.local_ratelimit", _listener, _per_route))
