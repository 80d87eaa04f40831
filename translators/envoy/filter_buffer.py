"""Envoy's buffer filter for the buffering middleware (a request limit per route)."""

from __future__ import annotations

from envoy.extensions.filters.http.buffer.v3 import buffer_pb2 as buffer_v3
from google.protobuf import wrappers_pb2

from translators.envoy.filters import FilterKind, register
from translators.middlewares.traffic import BufferConfig


def _listener() -> buffer_v3.Buffer:
    # Disabled in the listener; every route that enables it brings its own limit.
    return buffer_v3.Buffer(max_request_bytes=wrappers_pb2.UInt32Value(value=1))


def _per_route(config: object) -> buffer_v3.BufferPerRoute:
    assert isinstance(config, BufferConfig)
    return buffer_v3.BufferPerRoute(
        buffer=buffer_v3.Buffer(
            max_request_bytes=wrappers_pb2.UInt32Value(value=config.max_request_bytes)
        )
    )


register("buffer", FilterKind("envoy.filters.http.buffer", _listener, _per_route))
