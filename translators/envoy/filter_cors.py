"""Envoy's cors filter for the headers middleware's CORS fields (a CorsPolicy per route)."""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2 as cors_v3
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from translators.envoy.filters import FilterKind, register
from translators.middlewares.headers import CorsConfig


def _listener() -> cors_v3.Cors:
    return cors_v3.Cors()


def _per_route(config: object) -> cors_v3.CorsPolicy:
    assert isinstance(config, CorsConfig)
    origins = [string_pb2.StringMatcher(exact=o) for o in config.origins]
    origins += [
        string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=r))
        for r in config.origin_regexes
    ]
    return cors_v3.CorsPolicy(
        allow_origin_string_match=origins,
        allow_methods=config.allow_methods,
        allow_headers=config.allow_headers,
        expose_headers=config.expose_headers,
        max_age=config.max_age,
        allow_credentials=wrappers_pb2.BoolValue(value=config.allow_credentials),
        # Traefik answers every preflight itself, whatever the origin.
        forward_not_matching_preflights=wrappers_pb2.BoolValue(value=False),
    )


register("cors", FilterKind("envoy.filters.http.cors", _listener, _per_route))
