"""Envoy's Lua filter for the passTLSClientCert middleware.

Every listener carries the script once (``source_codes``); a route runs it by name and passes its
Middleware's selection as the filter context, so a change of selection is an RDS update only.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.extensions.filters.http.lua.v3 import lua_pb2 as lua_v3
from google.protobuf import struct_pb2

from translators.envoy.filters import FilterKind, register
from translators.envoy.pass_tls_lua import SCRIPT
from translators.middlewares.passtls import KIND, PassTLSConfig

SCRIPT_NAME = "pass-tls-client-cert"


def _listener() -> lua_v3.Lua:
    return lua_v3.Lua(
        stat_prefix="pass_tls_client_cert",
        source_codes={SCRIPT_NAME: base_v3.DataSource(inline_string=SCRIPT)},
    )


def _per_route(config: object) -> lua_v3.LuaPerRoute:
    assert isinstance(config, PassTLSConfig)
    context = struct_pb2.Struct()
    context.update(
        {
            "pem": config.pem,
            "info": config.info,
            "subject": list(config.subject),
            "issuer": list(config.issuer),
            "serial": config.serial,
            "nb": config.not_before,
            "na": config.not_after,
            "sans": config.sans,
        }
    )
    return lua_v3.LuaPerRoute(name=SCRIPT_NAME, filter_context=context)


register(KIND, FilterKind("envoy.filters.http.lua", _listener, _per_route))
