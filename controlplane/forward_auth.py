"""forwardAuth's check, made by Switchman's authorization service exactly as Traefik makes it.

Envoy's ext_authz filter sends the request (headers as received, the body when ``forwardBody``)
with the Middleware's key; this module looks the Middleware up in the latest translation, sends
the auth request the way Traefik's ``pkg/middlewares/auth/forward.go`` does, and answers with a
``CheckResponse``:

Request: GET (the original method with ``preserveRequestMethod``) to ``address`` as written (its
path and query), no redirects followed, 30 s in all, the middleware's TLS options. Headers: the
client's, as Traefik's entry point leaves them (it trusts no forwarded headers: the client's
X-Forwarded-*/X-Real-Ip are dropped and its own X-Real-Ip, X-Forwarded-Proto/-Port/-Host/-Server
set), hop-by-hop headers removed, filtered by ``authRequestHeaders``, then X-Forwarded-For/-Method/
-Proto/-Host/-Uri (and -Port) as ``writeHeader``/``oldWriteHeader`` set them for
``trustForwardHeader`` true/false/absent. Header names go out in Go's canonical form.

Answer: 2xx → the request goes on with ``authResponseHeaders`` set from the auth response (or
removed when it has none) and ``authResponseHeadersRegex`` applied (the client's matching headers
removed, the auth server's copied); ``addAuthCookiesToResponse`` cookies are added to the client's
response. Anything else → the client gets the auth server's status, headers (hop-by-hop ones
removed; a relative Location resolved against ``address`` unless ``preserveLocationHeader``) and
body; with ``authSigninURL``, a 401 becomes a 302 to it. Errors answer as Traefik does: the auth
server unreachable, timed out, or a body unreadable → 500; a body over ``maxResponseBodySize`` or a
request body over ``maxBodySize`` → 401; all with an empty body. Nothing here raises into gRPC.

Differences that remain (docs/compatibility.md): no User-Agent is sent when the client had none
(Go sends ``Go-http-client/1.1`` when ``trustForwardHeader`` is absent); several values of one
``authResponseHeaders`` header reach the backend as one comma-joined line; the client's X-Request-Id
is Envoy's; a denial body must be UTF-8 text (gzip/deflate is decoded) and at most
``MAX_DENIED_BODY`` bytes, else 500; a header value that is not UTF-8 is sent as its Latin-1
reading, in UTF-8 (aiohttp writes UTF-8 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import re
import ssl
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import re2
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.service.auth.v3 import attribute_context_pb2 as attribute_v3
from envoy.service.auth.v3 import external_auth_pb2 as auth_v3
from envoy.type.v3 import http_status_pb2 as http_status_v3
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDict
from yarl import URL

from translators.envoy.filter_forward_auth import TIMEOUT_SECONDS
from translators.ir import CLIENT_IP_HEADER, IR
from translators.middlewares.forward_auth import (
    ForwardAuthConfig,
    ForwardAuthTLS,
    forward_auth_table,
)

log = logging.getLogger("switchman.forward_auth")

# A denial's body travels inside one gRPC message to Envoy: bounded even when the middleware
# sets no maxResponseBodySize (Traefik: unbounded).
MAX_DENIED_BODY = 16 * 1024 * 1024
# Hop-by-hop headers (forward.go's hopHeaders, and what Envoy's codec would strip anyway).
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
# Headers Envoy adds before the check that Traefik's request never carries.
_ENVOY_ADDED = frozenset(
    {"content-length", "x-envoy-external-address", "x-envoy-internal",
     "x-envoy-auth-partial-body", CLIENT_IP_HEADER}
)  # fmt: skip
# Traefik's managed X-headers (forwardedheaders.XHeadersSet).
X_HEADERS = (
    "X-Forwarded-Proto", "X-Forwarded-Scheme", "X-Forwarded-For", "X-Forwarded-Host",
    "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Uri", "X-Forwarded-Method",
    "X-Forwarded-Prefix", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info",
    "X-Scheme", "X-Real-Ip",
)  # fmt: skip
_X_SET = frozenset(X_HEADERS)
# Request headers an ext_authz answer must not remove (Envoy refuses, or the body breaks).
_KEEP = frozenset({"host", "content-length", "transfer-encoding"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_OVERWRITE = base_v3.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_v3.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

Headers = list[tuple[str, str]]


def canonical(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-auth-user`` → ``X-Auth-User``."""
    if not name or any(c not in _TOKEN for c in name):
        return name
    out, upper = [], True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def _text(raw: bytes) -> str:
    """Header bytes as text that aiohttp and protobuf write back as the same bytes (UTF-8)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _managed(name: str) -> bool:
    """forwardedheaders.isManagedXHeader: also the ``X_Forwarded_Proto`` spellings."""
    return name in _X_SET or ("_" in name and canonical(name.replace("_", "-")) in _X_SET)


def _values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    low = name.lower()
    return [v for k, v in headers if k.lower() == low]


def _without(headers: Headers, names: Iterable[str]) -> Headers:
    low = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in low]


def _set(headers: Headers, name: str, value: str) -> Headers:
    return [*_without(headers, [name]), (name, value)]


def _host_port(host: str) -> str:
    """The port of ``host`` as Go's net.SplitHostPort finds it ("" when none or malformed)."""
    if host.startswith("["):
        rest = host[host.find("]") + 1 :] if "]" in host else ""
        return rest[1:] if rest.startswith(":") else ""
    return host.split(":", 1)[1] if host.count(":") == 1 else ""


def _forwarded_port(host: str, headers: Headers, scheme: str) -> str:
    """forwardedPort: the Host's port, else 443 for https, else 80."""
    port = _host_port(host)
    if port:
        return port
    proto = (_values(headers, "X-Forwarded-Proto") or [""])[0]
    return "443" if proto in ("https", "wss") or scheme == "https" else "80"


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming:
    """The client's request, as Envoy's ext_authz filter describes it."""

    method: str
    scheme: str
    host: str
    path: str  # with the query: Go's RequestURI()
    client_ip: str
    headers: Headers  # as received (lower-case names), pseudo-headers excluded
    body: bytes = b""

    @classmethod
    def from_check(cls, request: auth_v3.CheckRequest) -> Incoming:
        http: attribute_v3.AttributeContext.HttpRequest = request.attributes.request.http
        if http.header_map.headers:
            headers = [
                (h.key, _text(h.raw_value) if h.raw_value else h.value)
                for h in http.header_map.headers
            ]
        else:
            headers = list(http.headers.items())
        return cls(
            method=http.method,
            scheme=http.scheme or "http",
            host=http.host,
            path=http.path,
            client_ip=request.attributes.source.address.socket_address.address,
            headers=[(k, v) for k, v in headers if not k.startswith(":")],
            body=http.raw_body or http.body.encode(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    method: str
    url: str
    headers: Headers
    body: bytes | None


def _filter(headers: Headers, allowed: Sequence[str]) -> Headers:
    """filterForwardRequestHeaders: only the named headers, when any are named."""
    if not allowed:
        return headers
    out: Headers = []
    for name in dict.fromkeys(canonical(a) for a in allowed):
        out.extend((name, v) for v in _values(headers, name))
    return out


def build_auth_request(config: ForwardAuthConfig, incoming: Incoming, hostname: str) -> AuthRequest:
    """The request Traefik sends the auth server for ``incoming``."""
    headers: Headers = [
        (canonical(k), v)
        for k, v in incoming.headers
        if k.lower() not in _HOP and k.lower() not in _ENVOY_ADDED
    ]
    # Traefik's entry point (no trusted IPs): the client's X-headers go, its own are set.
    headers = [(k, v) for k, v in headers if not _managed(k)]
    entry: Headers = [
        ("X-Real-Ip", incoming.client_ip),
        ("X-Forwarded-Proto", incoming.scheme),
        ("X-Forwarded-Port", _forwarded_port(incoming.host, [], incoming.scheme)),
    ]
    if incoming.host:
        entry.append(("X-Forwarded-Host", incoming.host))
    if hostname:
        entry.append(("X-Forwarded-Server", hostname))
    headers += entry
    trust = config.trust_forward_header
    if trust is None:  # oldWriteHeader
        headers = _filter(headers, config.request_headers)
        for name, value in (
            ("X-Forwarded-For", incoming.client_ip),
            ("X-Forwarded-Proto", incoming.scheme),
            ("X-Forwarded-Method", incoming.method),
            ("X-Forwarded-Host", incoming.host),
            ("X-Forwarded-Uri", incoming.path),
        ):
            headers = _set(headers, name, value)
    else:  # writeHeader
        allowed: Sequence[str] = config.request_headers
        if trust is False:
            headers = [(k, v) for k, v in headers if not _managed(k)]
        elif allowed:
            allowed = [*allowed, *X_HEADERS]
        headers = _filter(headers, allowed)
        prior = _values(headers, "X-Forwarded-For")
        client = ", ".join([*prior, incoming.client_ip]) if prior else incoming.client_ip
        headers = _set(headers, "X-Forwarded-For", client)
        present = {k.lower() for k, _ in headers}
        for name, value in (
            ("X-Forwarded-Method", incoming.method),
            ("X-Forwarded-Proto", incoming.scheme),
            ("X-Forwarded-Port", _forwarded_port(incoming.host, headers, incoming.scheme)),
            ("X-Forwarded-Host", incoming.host),
            ("X-Forwarded-Uri", incoming.path),
        ):
            if name.lower() not in present:
                headers.append((name, value))
    body: bytes | None = None
    if config.forward_body and incoming.body:
        body = incoming.body
    return AuthRequest(
        method=incoming.method if config.preserve_method else "GET",
        url=config.address,
        headers=headers,
        body=body,
    )


def _option(name: str, value: str, action: int = _OVERWRITE) -> base_v3.HeaderValueOption:
    return base_v3.HeaderValueOption(
        header=base_v3.HeaderValue(key=name, value=value), append_action=action
    )


def deny(
    status: int, headers: Sequence[tuple[str, str]] = (), body: str = ""
) -> auth_v3.CheckResponse:
    """The client gets exactly this; several values of a header stay separate lines."""
    seen: set[str] = set()
    options = []
    for name, value in headers:
        first = name.lower() not in seen
        seen.add(name.lower())
        options.append(_option(name, value, _OVERWRITE if first else _APPEND))
    return auth_v3.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=auth_v3.DeniedHttpResponse(
            status=http_status_v3.HttpStatus(code=status),
            headers=options,
            body=body,
        ),
    )


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def go_url_ok(value: str) -> bool:
    """Would Go's ``url.Parse`` accept it (control characters, bad escapes, bad port)?"""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or _BAD_ESCAPE.search(value):
        return False
    if value.startswith(":"):
        return False
    try:
        urlsplit(value).port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return True


def _location(config: ForwardAuthConfig, value: str) -> str | None:
    """The Location Traefik sends: resolved against ``address`` unless preserved; None: bad."""
    if not go_url_ok(value):
        return None
    return value if config.preserve_location else urljoin(config.address, value)


def _hex_non_ascii(url: str) -> str:
    return "".join(c if ord(c) < 0x80 else "".join(f"%{b:02x}" for b in c.encode()) for c in url)


_GO_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def signin_redirect(url: str, method: str, path: str) -> auth_v3.CheckResponse:
    """Go's ``http.Redirect(rw, req, url, 302)`` for ``authSigninURL``."""
    parts = urlsplit(url) if go_url_ok(url) else None
    if parts is not None and not parts.scheme and not parts.netloc:
        # A relative URL: made absolute against the request's (decoded) path, then cleaned.
        old = unquote(path.split("?", 1)[0]) or "/"
        if not url.startswith("/"):
            url = old[: old.rfind("/") + 1] + url
        url, sep, query = url.partition("?")
        trailing = url.endswith("/")
        cleaned = posixpath.normpath(url)
        if cleaned.startswith("//"):  # POSIX keeps a leading '//'; Go's path.Clean does not
            cleaned = "/" + cleaned.lstrip("/")
        if trailing and not cleaned.endswith("/"):
            cleaned += "/"
        url = cleaned + sep + query
    headers: Headers = [("Location", _hex_non_ascii(url))]
    body = ""
    if method in ("GET", "HEAD"):
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    if method == "GET":  # Fprintln: the line, then one more newline
        body = f'<a href="{url.translate(_GO_HTML)}">Found</a>.\n\n'
    return deny(302, headers, body)


def _decoded(body: bytes, headers: Headers) -> tuple[str, Headers] | None:
    """The body as UTF-8 text (a gzip/deflate body decoded, its Content-Encoding dropped)."""
    with contextlib.suppress(UnicodeDecodeError):
        return body.decode(), headers
    encoding = ",".join(_values(headers, "Content-Encoding")).strip().lower()
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    if encoding in wbits:
        with contextlib.suppress(zlib.error, UnicodeDecodeError):
            d = zlib.decompressobj(wbits[encoding])
            text = d.decompress(body, MAX_DENIED_BODY + 1)
            if len(text) <= MAX_DENIED_BODY:
                return text.decode(), _without(headers, ["Content-Encoding"])
    return None


_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _cookie_name(set_cookie: str) -> str | None:
    """The name of a Set-Cookie line, or None where Go's readSetCookies skips the line."""
    name, sep, _ = set_cookie.split(";", 1)[0].strip().partition("=")
    name = name.strip()
    return name if sep and _COOKIE_NAME.match(name) else None


def allow(
    config: ForwardAuthConfig, incoming: Incoming, response: Headers
) -> auth_v3.CheckResponse:
    """Traefik's 2xx path: the auth server's headers onto the request, its cookies onward."""
    to_set: dict[str, str] = {}  # canonical name → value (several values: one joined line)
    to_remove: dict[str, None] = {}
    for name in config.response_headers:
        key = canonical(name)
        values = _values(response, key)
        if values:
            to_set[key] = ",".join(values)
        else:
            to_remove[key.lower()] = None
    if config.response_headers_regex:
        pattern = re2.compile(config.response_headers_regex)
        for name, _ in incoming.headers:
            if name.lower() not in _KEEP and pattern.search(canonical(name)):
                to_remove[name.lower()] = None
        for name in dict.fromkeys(canonical(k) for k, _ in response):
            if pattern.search(name):
                to_set[name] = ",".join(_values(response, name))
    ok = auth_v3.OkHttpResponse(
        headers=[_option(k, v) for k, v in to_set.items()],
        headers_to_remove=[n for n in to_remove if n not in {k.lower() for k in to_set}],
    )
    cookies = [(line, _cookie_name(line)) for line in _values(response, "Set-Cookie")]
    for line, cookie in cookies:
        if cookie is not None and cookie in config.auth_cookies:
            ok.response_headers_to_add.append(_option("Set-Cookie", line, _APPEND))
    return auth_v3.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


class _TooLarge(Exception):
    pass


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _ssl_context(tls: ForwardAuthTLS) -> ssl.SSLContext:
    """Go's ClientTLS: the given CA only (else the system roots), a client certificate."""
    ctx = ssl.create_default_context(cadata=tls.ca or None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.certificate_chain:
        # The ssl module loads a certificate and key from files only.
        with tempfile.TemporaryDirectory(prefix="switchman-fa-") as d:
            cert, key = Path(d, "tls.crt"), Path(d, "tls.key")
            cert.write_text(tls.certificate_chain)
            key.touch(mode=0o600)
            key.write_text(tls.private_key)
            ctx.load_cert_chain(cert, key)
    return ctx


class ForwardAuthService:
    """Answers forwardAuth checks from the latest translation; one pooled HTTP client."""

    def __init__(self, current_ir: Callable[[], IR | None], *, connections: int = 1024) -> None:
        self._current_ir = current_ir
        self._ir: IR | None = None
        self._table: dict[str, ForwardAuthConfig] = {}
        self._ssl: dict[ForwardAuthTLS, ssl.SSLContext] = {}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def lookup(self, key: str) -> ForwardAuthConfig | None:
        ir = self._current_ir()
        if ir is not self._ir:
            self._ir, self._table = ir, (forward_auth_table(ir) if ir is not None else {})
            live = {c.tls for c in self._table.values()}
            self._ssl = {k: v for k, v in self._ssl.items() if k in live}
        return self._table.get(key)

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, limit_per_host=0),
                # Never a cookie from one client's auth answer in another client's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                # The body goes back as the auth server sent it.
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _context(self, tls: ForwardAuthTLS | None) -> ssl.SSLContext | bool:
        if tls is None:
            return True
        ctx = self._ssl.get(tls)
        if ctx is None:
            ctx = self._ssl[tls] = _ssl_context(tls)
        return ctx

    async def check(
        self, key: str, request: auth_v3.CheckRequest, hostname: str
    ) -> auth_v3.CheckResponse:
        config = self.lookup(key)
        if config is None:
            log.error("forwardAuth check for unknown key %r: denied with 500", key)
            return deny(500)
        try:
            return await self._check(config, Incoming.from_check(request), hostname)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("forwardAuth %s: internal error; denied with 500", config.key)
            return deny(500)

    async def _check(
        self, config: ForwardAuthConfig, incoming: Incoming, hostname: str
    ) -> auth_v3.CheckResponse:
        if config.forward_body and len(incoming.body) > config.max_body_size:
            return deny(401)  # Traefik: request body over maxBodySize
        auth = build_auth_request(config, incoming, hostname)
        limit = config.max_response_body_size
        try:
            ctx = self._context(config.tls)
            status, headers, body = await asyncio.wait_for(
                self._send(auth, ctx, MAX_DENIED_BODY if limit < 0 else limit),
                TIMEOUT_SECONDS,
            )
        except _TooLarge:
            if limit >= 0:
                return deny(401)  # Traefik: auth response body over maxResponseBodySize
            log.warning(
                "forwardAuth %s: the auth response body is over %d bytes; denied with 500",
                config.key,
                MAX_DENIED_BODY,
            )
            return deny(500)
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "forwardAuth %s: calling %s failed (%s: %s); denied with 500",
                config.key,
                config.address,
                type(exc).__name__,
                exc,
            )
            return deny(500)
        if config.signin_url and status == 401:
            return signin_redirect(config.signin_url, incoming.method, incoming.path)
        if 200 <= status < 300:
            return allow(config, incoming, headers)
        out = [
            (k, v) for k, v in headers if k.lower() not in _HOP and k.lower() != "content-length"
        ]
        location = (_values(out, "Location") or [""])[0]
        if location:
            resolved = _location(config, location)
            if resolved is None:
                log.warning(
                    "forwardAuth %s: unreadable Location %r; denied with 500", config.key, location
                )
                return deny(500)
            out = _set(out, "Location", resolved)
        text = _decoded(body, out)
        if text is None:
            log.warning(
                "forwardAuth %s: the denial body is not UTF-8 text; Envoy cannot "
                "carry it, denied with 500",
                config.key,
            )
            return deny(500)
        return deny(status, text[1], text[0])

    async def _send(
        self, auth: AuthRequest, ctx: ssl.SSLContext | bool, limit: int
    ) -> tuple[int, Headers, bytes]:
        session = self._session_for_loop()
        for attempt in range(2):
            try:
                async with session.request(
                    auth.method,
                    URL(auth.url, encoded=True),
                    headers=CIMultiDict(auth.headers),
                    data=auth.body,
                    allow_redirects=False,
                    ssl=ctx,
                    # Go's client sends none of these on its own when the caller sets none.
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                ) as response:
                    headers = [(canonical(_text(k)), _text(v)) for k, v in response.raw_headers]
                    return response.status, headers, await _read(response, limit)
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the server had closed: Go's transport retries too.
                if attempt or auth.method not in _IDEMPOTENT:
                    raise
        raise AssertionError("unreachable")
