"""Envoy's ext_authz filter for forwardAuth, in its two modes (middlewares/forward_auth.py).

``forward_auth`` (default): gRPC to Switchman's authorization service on the xDS port, which
calls the auth server the way Traefik does. The listener instance sends every request header as
received (``encode_raw_headers``: repeated headers stay separate), the body as bytes when a route
asks for it, and Envoy's host name in the call's metadata (``%HOSTNAME%``, Traefik's
X-Forwarded-Server). A route sends its Middleware's key and, with ``forwardBody``, its body limit.
Fails closed: the service unreachable or slower than ``CHECK_TIMEOUT_SECONDS`` answers 500.

``forward_auth_http`` (``--forward-auth=envoy``): Envoy's HTTP ext_authz client calls the auth
server itself. The listener instance names a placeholder service that no route uses; every route
that turns the filter on carries its Middleware's HTTP service in ``ExtAuthzPerRoute``. Envoy
rejects ``:``-prefixed names in ``headers_to_add`` (at request time, fatally), so the method and
path of the check cannot be set: it sends the original method to
``<address path><original path?query>``.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2 as cluster_v3
from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.core.v3 import config_source_pb2 as config_source_v3
from envoy.config.core.v3 import grpc_service_pb2 as grpc_service_v3
from envoy.config.core.v3 import http_uri_pb2 as http_uri_v3
from envoy.config.endpoint.v3 import endpoint_components_pb2 as endpoint_components_v3
from envoy.config.endpoint.v3 import endpoint_pb2 as endpoint_v3
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as ext_authz_v3
from envoy.type.matcher.v3 import regex_pb2 as regex_v3
from envoy.type.matcher.v3 import string_pb2 as string_v3
from envoy.type.v3 import http_status_pb2 as http_status_v3

from translators.envoy.common import duration
from translators.envoy.filter_ext_authz import XDS_CLUSTER
from translators.envoy.filters import FilterKind, register
from translators.middlewares.forward_auth import ForwardAuthConfig, NativeForwardAuth

# Traefik's forwardAuth client gives up after 30 s.
TIMEOUT_SECONDS = 30
# The service answers within TIMEOUT_SECONDS (500 when the auth server is slower); Envoy's own
# deadline is a little later so that answer, not Envoy's, is what the client gets.
CHECK_TIMEOUT_SECONDS = TIMEOUT_SECONDS + 5
# The context extension that carries a route's key to the authorization service.
FORWARD_AUTH_KEY = "switchman.forward_auth"
# gRPC metadata with the Envoy's host name (Traefik sends its own as X-Forwarded-Server).
HOSTNAME_METADATA = "x-switchman-hostname"
_PLACEHOLDER_CLUSTER = "forwardAuth/unused"


def _service_listener() -> ext_authz_v3.ExtAuthz:
    return ext_authz_v3.ExtAuthz(
        grpc_service=grpc_service_v3.GrpcService(
            envoy_grpc=grpc_service_v3.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER),
            timeout=duration(CHECK_TIMEOUT_SECONDS),
            initial_metadata=[base_v3.HeaderValue(key=HOSTNAME_METADATA, value="%HOSTNAME%")],
        ),
        transport_api_version=config_source_v3.ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=http_status_v3.HttpStatus(code=http_status_v3.InternalServerError),
        encode_raw_headers=True,
        # Only routes with forwardBody buffer (per route); pack_as_bytes is read from here only
        # (Envoy 1.40 ignores it in a route's with_request_body).
        with_request_body=ext_authz_v3.BufferSettings(
            max_request_bytes=1, allow_partial_message=True, pack_as_bytes=True
        ),
    )


def _service_per_route(config: object) -> ext_authz_v3.ExtAuthzPerRoute:
    assert isinstance(config, ForwardAuthConfig)
    settings = ext_authz_v3.CheckSettings(context_extensions={FORWARD_AUTH_KEY: config.key})
    if config.forward_body:
        settings.with_request_body.CopyFrom(
            ext_authz_v3.BufferSettings(
                max_request_bytes=config.buffered_body,
                allow_partial_message=True,
                pack_as_bytes=True,
            )
        )
    else:
        settings.disable_request_body_buffering = True
    return ext_authz_v3.ExtAuthzPerRoute(check_settings=settings)


def _exact(name: str) -> string_v3.StringMatcher:
    return string_v3.StringMatcher(exact=name, ignore_case=True)


def _any() -> string_v3.StringMatcher:
    return string_v3.StringMatcher(safe_regex=regex_v3.RegexMatcher(regex=".*"))


def _http_service(cluster: str, uri: str, path: str) -> ext_authz_v3.HttpService:
    return ext_authz_v3.HttpService(
        server_uri=http_uri_v3.HttpUri(uri=uri, cluster=cluster, timeout=duration(TIMEOUT_SECONDS)),
        path_prefix=path,
    )


def _http_listener() -> ext_authz_v3.ExtAuthz:
    return ext_authz_v3.ExtAuthz(
        http_service=_http_service(_PLACEHOLDER_CLUSTER, "http://unused", ""),
        # Every request header goes to the auth server, as in Traefik without
        # authRequestHeaders. Envoy 1.40 reads this list from the listener instance only (a
        # per-route ``authorization_request.allowed_headers`` is ignored).
        allowed_headers=string_v3.ListStringMatcher(patterns=[_any()]),
        failure_mode_allow=False,
        status_on_error=http_status_v3.HttpStatus(code=http_status_v3.InternalServerError),
    )


def _forwarded(trust: bool) -> list[tuple[str, str]]:
    # Envoy replaces a client's header of the same name; with trustForwardHeader the client's
    # value, when present, is kept (``%REQ(A?B)%``: A, else B).
    own = {
        "x-forwarded-method": "%REQ(:method)%",
        "x-forwarded-host": "%REQ(:authority)%",
        "x-forwarded-uri": "%REQ(:path)%",
    }
    out = [(k, f"%REQ({k}?{v[5:-2]})%" if trust else v) for k, v in own.items()]
    # The connection manager has already set X-Forwarded-Proto (and X-Forwarded-For, per its
    # trusted hops) on the request.
    out.append(("x-forwarded-proto", "%REQ(x-forwarded-proto)%"))
    if trust:
        out.append(("x-forwarded-for", "%REQ(x-forwarded-for)%"))
    else:
        out.append(("x-forwarded-for", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"))
    return out


def _http_per_route(config: object) -> ext_authz_v3.ExtAuthzPerRoute:
    assert isinstance(config, NativeForwardAuth)
    service = _http_service(
        config.cluster, f"http://{config.host}:{config.port}{config.path}", config.path
    )
    request = service.authorization_request
    for key, value in _forwarded(config.trust_forward_header):
        request.headers_to_add.add(key=key, value=value)
    response = service.authorization_response
    upstream = [_exact(h) for h in config.response_headers]
    if upstream:
        response.allowed_upstream_headers.patterns.extend(upstream)
    else:  # Traefik copies none: a pattern no auth server sends, rather than an absent list
        response.allowed_upstream_headers.patterns.append(_exact("x-switchman-none"))
    if config.auth_cookies:
        response.allowed_client_headers_on_success.patterns.append(_exact("set-cookie"))
    # allowed_client_headers left empty: a denial carries all the auth server's headers.
    return ext_authz_v3.ExtAuthzPerRoute(
        check_settings=ext_authz_v3.CheckSettings(http_service=service)
    )


def build_forward_auth_cluster(config: NativeForwardAuth) -> cluster_v3.Cluster:
    address = address_v3.Address(
        socket_address=address_v3.SocketAddress(address=config.host, port_value=config.port)
    )
    return cluster_v3.Cluster(
        name=config.cluster,
        type=cluster_v3.Cluster.DiscoveryType.STRICT_DNS,
        connect_timeout=duration(TIMEOUT_SECONDS),
        dns_lookup_family=cluster_v3.Cluster.DnsLookupFamily.V4_PREFERRED,
        load_assignment=endpoint_v3.ClusterLoadAssignment(
            cluster_name=config.cluster,
            endpoints=[
                endpoint_components_v3.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_v3.LbEndpoint(
                            endpoint=endpoint_components_v3.Endpoint(address=address)
                        )
                    ]
                )
            ],
        ),
    )


register(
    "forward_auth",
    FilterKind("envoy.filters.http.ext_authz", _service_listener, _service_per_route),
)
register(
    "forward_auth_http",
    FilterKind("envoy.filters.http.ext_authz", _http_listener, _http_per_route),
)
