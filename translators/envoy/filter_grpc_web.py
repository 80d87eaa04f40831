"""Envoy's grpc_web filter for the grpcWeb middleware (no settings)."""

from __future__ import annotations

from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2 as grpc_web_v3

from translators.envoy.filters import FilterKind, register
from translators.middlewares.traffic import GrpcWebConfig


def _listener() -> grpc_web_v3.GrpcWeb:
    return grpc_web_v3.GrpcWeb()


def _per_route(config: object) -> None:
    assert isinstance(config, GrpcWebConfig)
    return None  # no per-route settings (Envoy has none for grpc_web): the route only enables it


register("grpc_web", FilterKind("envoy.filters.http.grpc_web", _listener, _per_route))
