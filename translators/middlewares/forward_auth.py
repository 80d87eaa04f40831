"""forwardAuth: each request is first sent to an authentication server at ``address``.

Runs on Envoy's ext_authz filter with an HTTP service (the ``forward_auth`` filter kind): the
listener holds one disabled instance, and each route overrides the service per route
(``ExtAuthzPerRoute.check_settings.http_service``, honoured by Envoy 1.40), so a change of
address or headers is an RDS update. The auth server is reached through a STRICT_DNS cluster per
``host:port`` (``names.forward_auth_cluster_name``).

Where Envoy differs from Traefik (documented in docs/compatibility.md):
- Envoy sends the original method (body dropped) to ``<address path><original path?query>``;
  Traefik sends GET (the original method with ``preserveRequestMethod``) to the address as is.
  The original method and URI also travel in X-Forwarded-Method / X-Forwarded-Uri, as in Traefik.
- A header named in ``authResponseHeaders`` that the client sent and the auth server did not
  return is kept (Traefik deletes it).
- ``authRequestHeaders`` is Unsupported: Envoy 1.40 ignores a per-route list of headers to send.
- A relative ``Location`` of a denial is passed as is (``preserveLocationHeader: true``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import re2

from translators.ir import FilterUse
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported
from translators.names import forward_auth_cluster_name

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")
KNOWN_FIELDS = frozenset(
    {
        "address",
        "trustForwardHeader",
        "authResponseHeaders",
        "authResponseHeadersRegex",
        "authRequestHeaders",
        "addAuthCookiesToResponse",
        "tls",
        "headerField",
        "forwardBody",
        "maxBodySize",
        "preserveLocationHeader",
        "preserveRequestMethod",
        "authSigninURL",
        "maxResponseBodySize",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAuthConfig:
    """One forwardAuth Middleware as Envoy's ext_authz HTTP service runs it."""

    cluster: str  # the auth server's cluster (``names.forward_auth_cluster_name``)
    host: str
    port: int
    path: str  # the address path (Envoy: ``path_prefix``)
    trust_forward_header: bool = False
    response_headers: tuple[str, ...] = ()
    response_headers_regex: str = ""
    auth_cookies: bool = False


def forward_auth_clusters(uses: Iterable[FilterUse]) -> dict[str, ForwardAuthConfig]:
    """The auth-server clusters that ``uses`` need, by name."""
    out: dict[str, ForwardAuthConfig] = {}
    for use in uses:
        if use.kind == "forward_auth" and isinstance(use.config, ForwardAuthConfig):
            out.setdefault(use.config.cluster, use.config)
    return out


def _headers(spec: Mapping[str, Any], key: str, field: str) -> tuple[str, ...]:
    value = spec.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _TOKEN.match(v) for v in value
    ):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a list of HTTP header names")
    return tuple(dict.fromkeys(v.lower() for v in value))


def _address(spec: Mapping[str, Any], field: str) -> tuple[str, int, str]:
    address = spec.get("address")
    if not isinstance(address, str) or not address:
        raise MiddlewareError(f"{field}.address", "address is required")
    try:
        url = urlsplit(address)
        port = url.port
    except ValueError as exc:
        raise MiddlewareError(f"{field}.address", f"not a URL: {address!r}") from exc
    if url.scheme == "https":
        raise Unsupported(f"{field}.address", "an https auth server is not translated yet")
    if url.scheme != "http" or not url.hostname or not _HOST.match(url.hostname):
        raise MiddlewareError(f"{field}.address", f"address must be an http:// URL: {address!r}")
    if url.query or url.fragment:
        raise Unsupported(
            f"{field}.address", "a query in address cannot be sent (Envoy appends the request's)"
        )
    return url.hostname.lower(), port or 80, url.path.rstrip("/")


def forward_auth(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    for key in spec:
        if key not in KNOWN_FIELDS:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    host, port, path = _address(spec, field)
    if spec.get("tls"):
        raise Unsupported(f"{field}.tls", "TLS to the auth server is not translated yet")
    if spec.get("forwardBody") is True:
        raise Unsupported(f"{field}.forwardBody", "the request body is not sent to the auth server")
    if spec.get("authSigninURL"):
        raise Unsupported(f"{field}.authSigninURL", "authSigninURL is not translated yet")
    max_resp = spec.get("maxResponseBodySize")
    if max_resp is not None and max_resp != -1:
        raise Unsupported(
            f"{field}.maxResponseBodySize", "a limit on the auth response body is not translated"
        )
    if _headers(spec, "authRequestHeaders", field):
        # Envoy takes the list of headers sent to the auth server from the listener only; sending
        # more headers than asked could change the auth server's decision, so fail closed.
        raise Unsupported(
            f"{field}.authRequestHeaders",
            "Envoy cannot restrict the headers sent to the auth server per route",
        )
    regex = spec.get("authResponseHeadersRegex") or ""
    if not isinstance(regex, str):
        raise MiddlewareError(f"{field}.authResponseHeadersRegex", "must be a regular expression")
    if regex:
        try:
            re2.compile(regex)
        except re2.error as exc:
            raise Unsupported(
                f"{field}.authResponseHeadersRegex",
                f"not an RE2 regular expression Envoy can run: {exc}",
            ) from exc
        # Traefik first deletes the client's headers that match; Envoy can only remove headers
        # by name, so a client could smuggle a matching header past the auth server. Fail closed.
        raise Unsupported(
            f"{field}.authResponseHeadersRegex",
            "the client's own headers matching the regex cannot be removed before the check",
        )
    cookies = spec.get("addAuthCookiesToResponse") or []
    if not isinstance(cookies, list):
        raise MiddlewareError(f"{field}.addAuthCookiesToResponse", "must be a list of cookie names")
    config = ForwardAuthConfig(
        cluster=forward_auth_cluster_name(host, port),
        host=host,
        port=port,
        path=path,
        trust_forward_header=spec.get("trustForwardHeader") is True,
        response_headers=_headers(spec, "authResponseHeaders", field),
        response_headers_regex=regex,
        auth_cookies=bool(cookies),
    )
    # headerField only names the access-log user in Traefik; maxBodySize only bounds forwardBody.
    # The client must not supply the headers the auth server vouches for: Traefik deletes them
    # before copying the auth server's; here a header_mutation instance runs just before the check.
    strip = StripRequestHeaders(names=config.response_headers)
    return [
        (plan.add_filter("strip_request_headers", strip) if strip.names else plan).add_filter(
            "forward_auth", config
        )
        for plan in plans
    ]


@dataclass(frozen=True, slots=True)
class StripRequestHeaders:
    """Request headers removed by a filter placed before another (``header_mutation``)."""

    names: tuple[str, ...]
