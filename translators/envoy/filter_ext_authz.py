"""Envoy's ext_authz filter for basicAuth/digestAuth checked by Switchman's own service.

The listener instance asks the control plane itself (the bootstrap's ``switchman_xds`` cluster,
HTTP/2 to the xDS port, where ``envoy.service.auth.v3.Authorization`` is served next to ADS).
It fails closed: an unreachable or failing service answers 500, never lets the request through.
A route sends only the key of its Middleware; the service looks the users up itself.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2 as config_source_v3
from envoy.config.core.v3 import grpc_service_pb2 as grpc_service_v3
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as ext_authz_v3
from envoy.type.v3 import http_status_pb2 as http_status_v3
from google.protobuf import duration_pb2

from translators.envoy.filters import FilterKind, register
from translators.middlewares.auth import AuthServiceConfig

# Envoy's static cluster for the control plane (controlplane/bootstrap.py builds it).
XDS_CLUSTER = "switchman_xds"
# The context extension that carries a route's key to the authorization service.
AUTH_KEY = "switchman.auth"
# bcrypt at a high cost takes a while; Envoy's default of 200 ms would turn it into 500s.
CHECK_TIMEOUT_SECONDS = 5


def _listener() -> ext_authz_v3.ExtAuthz:
    return ext_authz_v3.ExtAuthz(
        grpc_service=grpc_service_v3.GrpcService(
            envoy_grpc=grpc_service_v3.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER),
            timeout=duration_pb2.Duration(seconds=CHECK_TIMEOUT_SECONDS),
        ),
        transport_api_version=config_source_v3.ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=http_status_v3.HttpStatus(code=http_status_v3.InternalServerError),
    )


def _per_route(config: object) -> ext_authz_v3.ExtAuthzPerRoute:
    assert isinstance(config, AuthServiceConfig)
    return ext_authz_v3.ExtAuthzPerRoute(
        check_settings=ext_authz_v3.CheckSettings(context_extensions={AUTH_KEY: config.key})
    )


register("ext_authz", FilterKind("envoy.filters.http.ext_authz", _listener, _per_route))
