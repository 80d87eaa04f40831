"""Envoy's ext_authz filter over HTTP for forwardAuth, and the auth servers' clusters.

The listener instance names a placeholder service that no route uses; every route that turns
the filter on carries its Middleware's HTTP service in ``ExtAuthzPerRoute.check_settings``
(Envoy 1.40 honours a per-route ``http_service``). Fails closed: an unreachable auth server
answers 500, as Traefik does. Envoy rejects ``:``-prefixed names in ``headers_to_add`` (at request
time, fatally), so the method and path of the check cannot be set: see
translators/middlewares/forward_auth.py.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2 as cluster_v3
from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import http_uri_pb2 as http_uri_v3
from envoy.config.endpoint.v3 import endpoint_components_pb2 as endpoint_components_v3
from envoy.config.endpoint.v3 import endpoint_pb2 as endpoint_v3
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as ext_authz_v3
from envoy.type.matcher.v3 import regex_pb2 as regex_v3
from envoy.type.matcher.v3 import string_pb2 as string_v3
from envoy.type.v3 import http_status_pb2 as http_status_v3

from translators.envoy.common import duration
from translators.envoy.filters import FilterKind, register
from translators.middlewares.forward_auth import ForwardAuthConfig

# Traefik's forwardAuth client gives up after 30 s.
TIMEOUT_SECONDS = 30
_PLACEHOLDER_CLUSTER = "forwardAuth/unused"


def _exact(name: str) -> string_v3.StringMatcher:
    return string_v3.StringMatcher(exact=name, ignore_case=True)


def _any() -> string_v3.StringMatcher:
    return string_v3.StringMatcher(safe_regex=regex_v3.RegexMatcher(regex=".*"))


def _service(cluster: str, uri: str, path: str) -> ext_authz_v3.HttpService:
    return ext_authz_v3.HttpService(
        server_uri=http_uri_v3.HttpUri(uri=uri, cluster=cluster, timeout=duration(TIMEOUT_SECONDS)),
        path_prefix=path,
    )


def _listener() -> ext_authz_v3.ExtAuthz:
    return ext_authz_v3.ExtAuthz(
        http_service=_service(_PLACEHOLDER_CLUSTER, "http://unused", ""),
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


def _per_route(config: object) -> ext_authz_v3.ExtAuthzPerRoute:
    assert isinstance(config, ForwardAuthConfig)
    service = _service(
        config.cluster, f"http://{config.host}:{config.port}{config.path}", config.path
    )
    request = service.authorization_request
    for key, value in _forwarded(config.trust_forward_header):
        request.headers_to_add.add(key=key, value=value)
    response = service.authorization_response
    upstream = [_exact(h) for h in config.response_headers]
    if config.response_headers_regex:
        upstream.append(
            # Traefik searches the canonical name; Envoy fully matches the lower-case name.
            string_v3.StringMatcher(
                safe_regex=regex_v3.RegexMatcher(
                    regex=f"(?i)(?s:.*)(?:{config.response_headers_regex})(?s:.*)"
                )
            )
        )
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


def build_forward_auth_cluster(config: ForwardAuthConfig) -> cluster_v3.Cluster:
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


register("forward_auth", FilterKind("envoy.filters.http.ext_authz", _listener, _per_route))
