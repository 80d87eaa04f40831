"""Envoy's basic_auth filter for the basicAuth middleware (users per route)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2 as basic_auth_v3

from translators.envoy.filters import FilterKind, register
from translators.middlewares.auth import BasicAuthConfig

# The listener instance is disabled and every route that enables it brings its own users, but
# Envoy refuses an empty list: one user whose {SHA} is no password's (a hash of 20 zero bytes).
_NOBODY = "switchman-disabled:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _listener() -> basic_auth_v3.BasicAuth:
    return basic_auth_v3.BasicAuth(users=base_v3.DataSource(inline_string=_NOBODY))


def _per_route(config: object) -> basic_auth_v3.BasicAuthPerRoute:
    assert isinstance(config, BasicAuthConfig)
    return basic_auth_v3.BasicAuthPerRoute(
        users=base_v3.DataSource(inline_string="\n".join(config.users))
    )


register("basic_auth", FilterKind("envoy.filters.http.basic_auth", _listener, _per_route))
