"""The one order in which Envoy runs the HTTP filters of every listener.

Traefik runs each router's middlewares in the order the router lists them; Envoy runs one chain
per listener. The front end compares a route's list with this order and says when they differ;
the back end lays the listener's filters out in it.
"""

from __future__ import annotations

FILTER_ORDER: tuple[str, ...] = (
    "cors",
    "ip_allow_list",
    "rate_limit",
    "basic_auth",
    "pass_tls_client_cert",
    "ext_authz",
    "strip_request_headers",
    "forward_auth",
    "forward_auth_http",
    "buffer",
    "compressor",
    "compressor_br",
    "compressor_zstd",
    "grpc_web",
    "custom_response",
    "stateful_session",
)
