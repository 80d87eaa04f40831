"""forwardAuth: each request is first sent to an authentication server at ``address``.

Two ways to run it (``Options.forward_auth_mode``, ``--forward-auth``):

``service`` (the default) — exact. Envoy's ext_authz filter asks Switchman's own authorization
service over gRPC (``forward_auth`` filter kind; the route sends only its Middleware's key), and
the service makes the HTTP call to the auth server exactly as Traefik's ``forward.go`` does:
GET (the original method with ``preserveRequestMethod``) to ``address`` as written (its path and
query), the request's headers filtered by ``authRequestHeaders``, X-Forwarded-* as Traefik sets
them for each ``trustForwardHeader`` setting, the body with ``forwardBody``, the middleware's TLS
options. A 2xx answer forwards the request with ``authResponseHeaders`` /
``authResponseHeadersRegex`` applied; anything else goes back to the client as the auth server
sent it (controlplane/forward_auth.py). The cost: one more hop, through the control plane.

``envoy`` (opt-in) — Envoy's own ext_authz HTTP client calls the auth server, no extra hop, but
not Traefik's request: the original method to ``<address path><original path?query>``
(``forward_auth_http`` kind, one STRICT_DNS cluster per ``host:port``). Fields Envoy cannot honour
there are refused (the route answers 500): ``authRequestHeaders``, ``authResponseHeadersRegex``,
``tls``, an https or query-carrying address, ``forwardBody``, ``authSigninURL``,
``maxResponseBodySize``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import re2

from translators.ir import IR, REDACT, FilterUse
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
TLS_FIELDS = frozenset({"caSecret", "certSecret", "insecureSkipVerify", "caOptional"})
# Envoy buffers a body for the check in the connection's buffer (1 MiB by default); the service
# needs maxBodySize + 1 bytes to tell "too large" (Traefik: 401) from "exactly maxBodySize".
MAX_FORWARDED_BODY = 1024 * 1024 - 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAuthTLS:
    """``tls`` of a forwardAuth, resolved: PEM text from the named Secrets."""

    ca: str = ""  # PEM bundle; "" = the system roots
    certificate_chain: str = ""
    private_key: str = field(default="", metadata=REDACT, repr=False)
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAuthConfig:
    """One forwardAuth Middleware as Switchman's authorization service runs it."""

    key: str  # ``<namespace>/<middleware>``: what the route sends the service
    address: str  # the URL as written: the auth request goes exactly there
    # None: the field is absent (Traefik's legacy header handling); True/False as written.
    trust_forward_header: bool | None = None
    request_headers: tuple[str, ...] = ()  # authRequestHeaders, as written (() = all)
    response_headers: tuple[str, ...] = ()  # authResponseHeaders, as written
    response_headers_regex: str = ""
    auth_cookies: tuple[str, ...] = ()  # addAuthCookiesToResponse
    forward_body: bool = False
    max_body_size: int = -1  # bytes of the body sent; over it the client gets 401
    preserve_location: bool = False
    preserve_method: bool = False
    signin_url: str = ""  # authSigninURL: a 401 from the auth server becomes a 302 there
    max_response_body_size: int = -1  # over it the client gets 401; -1 = no limit
    tls: ForwardAuthTLS | None = None

    @property
    def buffered_body(self) -> int:
        """Bytes Envoy buffers for the check: one more than may be sent, to see "too large"."""
        return self.max_body_size + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeForwardAuth:
    """One forwardAuth Middleware as Envoy's ext_authz HTTP client runs it (opt-in mode)."""

    cluster: str  # the auth server's cluster (``names.forward_auth_cluster_name``)
    host: str
    port: int
    path: str  # the address path (Envoy: ``path_prefix``)
    trust_forward_header: bool = False
    response_headers: tuple[str, ...] = ()
    auth_cookies: bool = False


@dataclass(frozen=True, slots=True)
class StripRequestHeaders:
    """Request headers removed by a filter placed before another (``header_mutation``)."""

    names: tuple[str, ...]


def forward_auth_clusters(uses: Iterable[FilterUse]) -> dict[str, NativeForwardAuth]:
    """The auth-server clusters that ``uses`` need, by name (only the ``envoy`` mode has any)."""
    out: dict[str, NativeForwardAuth] = {}
    for use in uses:
        if use.kind == "forward_auth_http" and isinstance(use.config, NativeForwardAuth):
            out.setdefault(use.config.cluster, use.config)
    return out


def forward_auth_table(ir: IR) -> dict[str, ForwardAuthConfig]:
    """Every config the routes of ``ir`` send to the authorization service, by key."""
    out: dict[str, ForwardAuthConfig] = {}
    for route in ir.routes:
        for use in route.filters:
            if use.kind == "forward_auth" and isinstance(use.config, ForwardAuthConfig):
                out.setdefault(use.config.key, use.config)
    return out


def _headers(spec: Mapping[str, Any], key: str, field: str) -> tuple[str, ...]:
    value = spec.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _TOKEN.match(v) for v in value
    ):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a list of HTTP header names")
    return tuple(dict.fromkeys(value))


def _flag(spec: Mapping[str, Any], key: str, field: str) -> bool:
    value = spec.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be true or false")
    return value


def _size(spec: Mapping[str, Any], key: str, field: str) -> int:
    value = spec.get(key)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a number of bytes")
    return value if value >= 0 else -1


def _address(spec: Mapping[str, Any], field: str) -> str:
    address = spec.get("address")
    if not isinstance(address, str) or not address:
        raise MiddlewareError(f"{field}.address", "address is required")
    try:
        url = urlsplit(address)
        url.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise MiddlewareError(f"{field}.address", f"not a URL: {address!r}") from exc
    if url.scheme not in ("http", "https") or not url.hostname:
        raise MiddlewareError(
            f"{field}.address", f"address must be an http:// or https:// URL: {address!r}"
        )
    if any(c <= " " or c == "\x7f" for c in address):
        raise MiddlewareError(f"{field}.address", "address has spaces or control characters")
    return address


def _cookies(spec: Mapping[str, Any], field: str) -> tuple[str, ...]:
    cookies = spec.get("addAuthCookiesToResponse") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) and c for c in cookies):
        raise MiddlewareError(f"{field}.addAuthCookiesToResponse", "must be a list of cookie names")
    return tuple(dict.fromkeys(cookies))


def _regex(spec: Mapping[str, Any], field: str) -> str:
    regex = spec.get("authResponseHeadersRegex") or ""
    if not isinstance(regex, str):
        raise MiddlewareError(f"{field}.authResponseHeadersRegex", "must be a regular expression")
    if regex:
        try:
            re2.compile(regex)
        except re2.error as exc:
            raise MiddlewareError(
                f"{field}.authResponseHeadersRegex", f"not a valid RE2/Go regular expression: {exc}"
            ) from exc
    return regex


def _secret(ctx: Context, name: object, field: str) -> dict[str, str]:
    if not isinstance(name, str) or not name:
        raise MiddlewareError(field, "must name a Secret")
    entry = ctx.world.secrets.get((ctx.namespace, name))
    if entry is None:
        raise MiddlewareError(field, f"Secret {ctx.namespace}/{name} not found", "SecretNotFound")
    data: dict[str, str] = {}
    for k, v in sorted(entry.obj.data.items()):
        try:
            data[k] = base64.b64decode(v, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            message = f"Secret {ctx.namespace}/{name} key {k} is not valid base64 text"
            raise MiddlewareError(field, message) from exc
    data.update(entry.obj.string_data)
    return data


def _tls(spec: Mapping[str, Any], ctx: Context, field: str) -> ForwardAuthTLS | None:
    tls = spec.get("tls")
    if tls is None:
        return None
    path = f"{field}.tls"
    if not isinstance(tls, Mapping):
        raise MiddlewareError(path, "tls must be an object")
    for key in tls:
        if key not in TLS_FIELDS:
            raise MiddlewareError(f"{path}.{key}", f"unknown field {key!r}")
    ca = ""
    if tls.get("caSecret") is not None:
        data = _secret(ctx, tls.get("caSecret"), f"{path}.caSecret")
        # Traefik: tls.ca, else ca.crt, else the only key of a one-key Secret.
        ca = data.get("tls.ca") or data.get("ca.crt") or ""
        if not ca and len(data) == 1:
            ca = next(iter(data.values()))
        if "-----BEGIN CERTIFICATE-----" not in ca:
            message = "the Secret holds no PEM CA certificate (tls.ca or ca.crt)"
            raise MiddlewareError(f"{path}.caSecret", message)
    cert = key = ""
    if tls.get("certSecret") is not None:
        data = _secret(ctx, tls.get("certSecret"), f"{path}.certSecret")
        cert, key = data.get("tls.crt", ""), data.get("tls.key", "")
        if "-----BEGIN CERTIFICATE-----" not in cert or "PRIVATE KEY-----" not in key:
            message = "the Secret needs a PEM tls.crt and tls.key"
            raise MiddlewareError(f"{path}.certSecret", message)
    return ForwardAuthTLS(
        ca=ca,
        certificate_chain=cert,
        private_key=key,
        insecure_skip_verify=_flag(tls, "insecureSkipVerify", path),
    )


def forward_auth(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    for key in spec:
        if key not in KNOWN_FIELDS:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    trust = spec.get("trustForwardHeader")
    if trust is not None and not isinstance(trust, bool):
        raise MiddlewareError(f"{field}.trustForwardHeader", "must be true or false")
    signin = spec.get("authSigninURL") or ""
    if not isinstance(signin, str):
        raise MiddlewareError(f"{field}.authSigninURL", "must be a URL")
    if spec.get("headerField") is not None and not isinstance(spec.get("headerField"), str):
        raise MiddlewareError(f"{field}.headerField", "must be a header name")
    # headerField only names the user in Traefik's access log: nothing to translate.
    config = ForwardAuthConfig(
        key=f"{ctx.source.namespace}/{ctx.source.name}",
        address=_address(spec, field),
        trust_forward_header=trust,
        request_headers=_headers(spec, "authRequestHeaders", field),
        response_headers=_headers(spec, "authResponseHeaders", field),
        response_headers_regex=_regex(spec, field),
        auth_cookies=_cookies(spec, field),
        forward_body=_flag(spec, "forwardBody", field),
        max_body_size=_size(spec, "maxBodySize", field),
        preserve_location=_flag(spec, "preserveLocationHeader", field),
        preserve_method=_flag(spec, "preserveRequestMethod", field),
        signin_url=signin,
        max_response_body_size=_size(spec, "maxResponseBodySize", field),
        tls=_tls(spec, ctx, field),
    )
    if ctx.options.forward_auth_mode == "envoy":
        return _native(config, spec, plans, field)
    if config.forward_body and not 0 <= config.max_body_size <= MAX_FORWARDED_BODY:
        # Traefik reads any body (no maxBodySize) into memory; Envoy buffers it in the
        # connection's 1 MiB buffer, so a larger one could never reach the auth server.
        raise Unsupported(
            f"{field}.maxBodySize",
            f"forwardBody needs maxBodySize between 0 and {MAX_FORWARDED_BODY} bytes "
            "(Envoy buffers the body for the check)",
        )
    return [plan.add_filter("forward_auth", config) for plan in plans]


def _native(
    config: ForwardAuthConfig, spec: Mapping[str, Any], plans: list[Plan], field: str
) -> list[Plan]:
    """The ``envoy`` mode: what Envoy's HTTP ext_authz client can do, the rest refused."""
    url = urlsplit(config.address)
    if url.scheme == "https" or config.tls is not None:
        raise Unsupported(
            f"{field}.tls" if config.tls else f"{field}.address",
            "TLS to the auth server needs --forward-auth=service",
        )
    if not url.hostname or not _HOST.match(url.hostname):
        raise MiddlewareError(f"{field}.address", f"not a host name Envoy resolves: {url.hostname}")
    if url.query or url.fragment:
        raise Unsupported(
            f"{field}.address", "a query in address cannot be sent (Envoy appends the request's)"
        )
    refused = {
        "authRequestHeaders": bool(config.request_headers),
        "authResponseHeadersRegex": bool(config.response_headers_regex),
        "forwardBody": config.forward_body,
        "authSigninURL": bool(config.signin_url),
        "maxResponseBodySize": config.max_response_body_size != -1,
    }
    for key, used in refused.items():
        if used:
            raise Unsupported(
                f"{field}.{key}",
                f"Envoy's HTTP ext_authz cannot do {key}: use --forward-auth=service",
            )
    host, port = url.hostname.lower(), url.port or 80
    native = NativeForwardAuth(
        cluster=forward_auth_cluster_name(host, port),
        host=host,
        port=port,
        path=url.path.rstrip("/"),
        trust_forward_header=spec.get("trustForwardHeader") is True,
        response_headers=tuple(h.lower() for h in config.response_headers),
        auth_cookies=bool(config.auth_cookies),
    )
    # The client must not supply the headers the auth server vouches for: Traefik deletes them
    # before copying the auth server's; here a header_mutation instance runs just before the check.
    strip = StripRequestHeaders(names=native.response_headers)
    return [
        (plan.add_filter("strip_request_headers", strip) if strip.names else plan).add_filter(
            "forward_auth_http", native
        )
        for plan in plans
    ]
