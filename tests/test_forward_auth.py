"""forwardAuth through the real control plane and a real Envoy, with a real auth server.

Default mode: Envoy asks Switchman's authorization service, which calls the auth server with
Traefik's exact request (controlplane/forward_auth.py). The auth server here records every
request as it arrived (method, target, header lines with their spelling, body) and answers by the
Authorization header: ``Bearer good`` → 200 with identity headers and cookies; ``Bearer
redirect`` → 302 to a relative Location with two cookies and an HTML body; ``Bearer big`` → 200
with a large body; anything else → 401 with WWW-Authenticate and a body. The opt-in ``envoy``
mode (Envoy's HTTP client) is checked for its documented request shape at the end.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.service.auth.v3 import external_auth_pb2 as auth_v3
from google.rpc import code_pb2

import controlplane.forward_auth as fa
from controlplane.cli import translate_directory
from controlplane.forward_auth import (
    ForwardAuthService,
    Incoming,
    build_auth_request,
    canonical,
    signin_redirect,
)
from controlplane.localrun import Backend, free_port
from tests.envoy_validate import validate_resources
from tests.pki import make_ca, make_leaf
from tests.support import Stack, middleware_yaml, service_yaml
from translators.errors import SourceRef
from translators.ir import IR, DirectResponse, FilterUse, Match, PathMatch, Route
from translators.middlewares.forward_auth import ForwardAuthConfig, ForwardAuthTLS
from translators.options import Options

pytestmark = pytest.mark.envoy

GOLDEN = Path(__file__).parent / "golden"

DENIED_BODY = b"go away"
REDIRECT_BODY = b"<html>please log in</html>"
HUGE_BODY = b"y" * 300_000
GOOD = {"Authorization": "Bearer good"}
UTF8_VALUE = "café".encode().decode("latin-1")  # sent as the UTF-8 bytes of "café"


class AuthServer:
    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "lines": list(self.headers.items()),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                auth = self.headers.get("Authorization")
                if auth == "Bearer good":
                    self.send_response(200)
                    for name, value in (
                        ("X-Auth-User", "alice"),
                        ("X-Auth-Role", "admin"),
                        ("X-Other", "not-copied"),
                        ("X-Multi", "a"),
                        ("X-Multi", "b"),
                        ("Set-Cookie", "session=abc; Path=/"),
                        ("Set-Cookie", "other=1; Path=/"),
                        ("Content-Length", "0"),
                    ):
                        self.send_header(name, value)
                    self.end_headers()
                    return
                if auth == "Bearer big":
                    self._send(200, [("Content-Type", "text/plain")], b"x" * 64)
                    return
                if auth == "Bearer huge":
                    self._send(403, [("Content-Type", "text/plain")], HUGE_BODY)
                    return
                if auth == "Bearer binary":
                    self._send(403, [("Content-Type", "image/png")], b"\x89PNG\xff\xfe")
                    return
                if auth == "Bearer redirect":
                    self._send(
                        302,
                        [
                            ("Location", "/login?rd=x"),
                            ("Set-Cookie", "csrf=1; Path=/"),
                            ("Set-Cookie", "csrf2=2; Path=/"),
                            ("Content-Type", "text/html"),
                        ],
                        REDIRECT_BODY,
                    )
                    return
                self._send(
                    401,
                    [("WWW-Authenticate", 'Bearer realm="shop"'), ("Content-Type", "text/plain")],
                    DENIED_BODY,
                )

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def mws(base: str, dead_port: int) -> dict[str, str]:
    return {
        "plain": f"{{address: '{base}?from=traefik', "
        "authResponseHeaders: [X-Auth-User, X-Auth-Tenant, X-Multi]}",
        "regex": f"{{address: '{base}', authResponseHeadersRegex: '^X-Auth-'}}",
        "trust": f"{{address: '{base}', trustForwardHeader: true}}",
        "untrusted": f"{{address: '{base}', trustForwardHeader: false}}",
        "only": f"{{address: '{base}', authRequestHeaders: [Authorization, x-keep]}}",
        "cookies": f"{{address: '{base}', addAuthCookiesToResponse: [session]}}",
        "method": f"{{address: '{base}', preserveRequestMethod: true}}",
        "body": f"{{address: '{base}', forwardBody: true, maxBodySize: 16}}",
        "location": f"{{address: '{base}', preserveLocationHeader: true}}",
        "signin": f"{{address: '{base}', authSigninURL: 'https://login.example/start?a=1'}}",
        "maxresp": f"{{address: '{base}', maxResponseBodySize: 8}}",
        "down": f"{{address: 'http://127.0.0.1:{dead_port}/verify'}}",
        # Bad input: each route answers 500, with a diagnostic on the Middleware.
        "typo": f"{{address: '{base}', authResponseHeader: [X-Auth-User]}}",
        "badregex": f"{{address: '{base}', authResponseHeadersRegex: '(unclosed'}}",
        "nolimit": f"{{address: '{base}', forwardBody: true}}",
        "noaddress": "{authResponseHeaders: [X-Auth-User]}",
        "nosecret": f"{{address: '{base}', tls: {{caSecret: missing}}}}",
    }


def files(auth_port: int, dead_port: int) -> dict[str, str]:
    spec = mws(f"http://127.0.0.1:{auth_port}/verify", dead_port)
    routes = "\n".join(
        f"  - match: Host(`{name}.example`)\n    middlewares: [{{name: {name}}}]\n"
        "    services: [{name: app, port: 80}]"
        for name in spec
    )
    return {
        "mw.yaml": "---\n".join(middleware_yaml(n, f"  forwardAuth: {s}") for n, s in spec.items()),
        "ir.yaml": "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
        f"metadata: {{name: fa, namespace: default}}\nspec:\n  routes:\n{routes}\n",
    }


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    server = AuthServer()
    yield server
    server.stop()


@pytest.fixture
def app(backends: Callable[[str], Backend]) -> Backend:
    return backends("app")


@pytest.fixture
def stack(app: Backend, auth: AuthServer, make_stack: Callable[..., Stack]) -> Stack:
    s = make_stack({"svc.yaml": service_yaml("app", [app]), **files(auth.port, free_port())})
    s.wait_serving(
        lambda: s.request("/", host="plain.example", headers=GOOD)[0] == 200, "forwardAuth served"
    )
    auth.seen.clear()
    return s


def raw(
    stack: Stack,
    host: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=60)
    conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data


def header(lines: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in lines if k.lower() == name.lower()]


def sent(echo: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in echo["headers"]:  # type: ignore[attr-defined]
        out.setdefault(k.lower(), []).append(v)
    return out


def test_request_shape_is_traefiks(stack: Stack, auth: AuthServer) -> None:
    stack.request(
        "/a/b?x=1",
        host="plain.example",
        headers={
            **GOOD,
            "X-Custom": "1",
            "X-Name": UTF8_VALUE,
            "X-Forwarded-Uri": "/forged",
            "X-Forwarded-Prefix": "/forged",
            "X-Real-Ip": "6.6.6.6",
            "X-Forwarded-For": "6.6.6.6",
        },
        method="POST",
    )
    (seen,) = auth.seen
    # GET to the address as written, path and query, whatever the request's method and path.
    assert (seen["method"], seen["path"]) == ("GET", "/verify?from=traefik")
    h = seen["headers"]
    assert h["x-forwarded-method"] == "POST"
    assert h["x-forwarded-uri"] == "/a/b?x=1"  # the client's value replaced
    assert h["x-forwarded-host"] == "plain.example"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-for"] == "127.0.0.1"  # the TCP peer, never the client's header
    # Set by Traefik's entry point before the middleware: the peer, the Host's port, its host name.
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-port"] == "80"
    assert h["x-forwarded-server"] == socket.gethostname()
    assert "x-forwarded-prefix" not in h  # a client's X-Forwarded-* never passes
    assert h["x-custom"] == "1" and h["authorization"] == "Bearer good"
    assert h["x-name"] == UTF8_VALUE  # the same bytes (http.client and http.server: Latin-1)
    assert h["host"] == f"127.0.0.1:{auth.port}"
    assert "content-length" not in h and seen["body"] == b""
    assert not any(k.startswith(("x-envoy", "x-switchman")) for k in h)
    # Only what the client sent (http.client: Accept-Encoding identity), nothing of aiohttp's.
    assert "user-agent" not in h and "accept" not in h and h["accept-encoding"] == "identity"
    # Header names as Go writes them.
    assert {"X-Custom", "X-Forwarded-Uri", "Authorization"} <= {k for k, _ in seen["lines"]}


def test_trust_forward_header_settings(stack: Stack, auth: AuthServer) -> None:
    extra = {**GOOD, "X-Forwarded-Uri": "/from-proxy", "X-Forwarded-For": "6.6.6.6"}
    stack.request("/p?q", host="trust.example:8000", headers=extra)
    stack.request("/p?q", host="untrusted.example:8000", headers=extra)
    assert len(auth.seen) == 2
    trusted, untrusted = (s["headers"] for s in auth.seen)
    # Traefik's entry point trusts no forwarded headers: the client's never reach the auth
    # server; true keeps the entry point's own X-Real-Ip and X-Forwarded-Server, false drops them.
    for h in (trusted, untrusted):
        assert h["x-forwarded-uri"] == "/p?q"
        assert h["x-forwarded-for"] == "127.0.0.1"
        assert h["x-forwarded-port"] == "8000"
        assert h["x-forwarded-host"].startswith(("trust.example:8000", "untrusted.example:8000"))
    assert trusted["x-real-ip"] == "127.0.0.1"
    assert trusted["x-forwarded-server"] == socket.gethostname()
    assert "x-real-ip" not in untrusted and "x-forwarded-server" not in untrusted


def test_auth_request_headers_filter(stack: Stack, auth: AuthServer) -> None:
    stack.request("/f", host="only.example", headers={**GOOD, "X-Keep": "k", "X-Drop": "d"})
    (seen,) = auth.seen
    assert sorted(k for k, _ in seen["lines"]) == [
        "Authorization",
        "Host",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Method",
        "X-Forwarded-Proto",
        "X-Forwarded-Uri",
        "X-Keep",
    ]


def test_allowed_copies_auth_response_headers(stack: Stack, auth: AuthServer) -> None:
    status, backend, echo = stack.request(
        "/a",
        host="plain.example",
        headers={**GOOD, "X-Auth-User": "forged", "X-Auth-Tenant": "smuggled"},
    )
    assert (status, backend) == (200, "app")
    upstream = sent(echo)
    assert upstream["x-auth-user"] == ["alice"]  # the auth server's value replaced the client's
    assert "x-auth-tenant" not in upstream  # listed, not returned: the client's copy removed
    assert upstream["x-multi"] == ["a,b"]  # both values (one line)
    assert "x-auth-role" not in upstream and "x-other" not in upstream  # not listed
    assert upstream["authorization"] == ["Bearer good"]


def test_response_headers_regex(stack: Stack) -> None:
    status, backend, echo = stack.request(
        "/", host="regex.example", headers={**GOOD, "X-Auth-Smuggled": "1", "X-Keep": "k"}
    )
    assert (status, backend) == (200, "app")
    upstream = sent(echo)
    assert upstream["x-auth-user"] == ["alice"] and upstream["x-auth-role"] == ["admin"]
    assert "x-auth-smuggled" not in upstream  # the client's matching headers are removed
    assert upstream["x-keep"] == ["k"] and "x-other" not in upstream


def test_denied_returns_the_auth_response(stack: Stack, auth: AuthServer, app: Backend) -> None:
    before = app.requests
    for headers in ({"Authorization": "Bearer bad"}, {}):
        status, h, body = raw(stack, "plain.example", "/secret", headers)
        assert (status, body) == (401, DENIED_BODY)
        assert header(h, "www-authenticate") == ['Bearer realm="shop"']
        assert header(h, "content-type") == ["text/plain"]
    assert app.requests == before  # the backend never saw them
    assert len(auth.seen) == 2


def test_denied_bodies_large_and_binary(stack: Stack) -> None:
    status, _, body = raw(stack, "plain.example", "/", {"Authorization": "Bearer huge"})
    assert (status, len(body), body == HUGE_BODY) == (403, len(HUGE_BODY), True)
    # Documented limit: Envoy carries a denial's body as text; a binary one becomes a 500.
    assert raw(stack, "plain.example", "/", {"Authorization": "Bearer binary"})[:3:2] == (500, b"")


def test_denied_redirect_with_location_and_cookies(stack: Stack, auth: AuthServer) -> None:
    redirect = {"Authorization": "Bearer redirect"}
    status, h, body = raw(stack, "plain.example", "/secret", redirect)
    assert (status, body) == (302, REDIRECT_BODY)
    # A relative Location is made absolute against the auth server's address, as Traefik does.
    assert header(h, "location") == [f"http://127.0.0.1:{auth.port}/login?rd=x"]
    assert header(h, "set-cookie") == ["csrf=1; Path=/", "csrf2=2; Path=/"]
    assert header(h, "content-type") == ["text/html"]
    status, h, _ = raw(stack, "location.example", "/secret", redirect)
    assert (status, header(h, "location")) == (302, ["/login?rd=x"])  # preserveLocationHeader


def test_auth_signin_url(stack: Stack) -> None:
    status, h, body = raw(stack, "signin.example", "/secret")
    assert status == 302
    assert header(h, "location") == ["https://login.example/start?a=1"]
    assert header(h, "content-type") == ["text/html; charset=utf-8"]
    assert body == b'<a href="https://login.example/start?a=1">Found</a>.\n\n'
    assert "www-authenticate" not in dict(h)  # the auth server's headers are not passed
    status, h, body = raw(stack, "signin.example", "/secret", method="POST", body=b"")
    assert (status, body, header(h, "content-type")) == (302, b"", [])


def test_preserve_request_method_and_forward_body(stack: Stack, auth: AuthServer) -> None:
    stack.request("/m", host="method.example", headers=GOOD, method="DELETE")
    status, _, data = raw(stack, "body.example", "/b", GOOD, "POST", b"sixteen bytes!!!")
    assert status == 200 and json.loads(data)["body"] == "sixteen bytes!!!"  # backend gets it
    method_seen, body_seen = auth.seen
    assert method_seen["method"] == "DELETE"
    assert (body_seen["method"], body_seen["body"]) == ("GET", b"sixteen bytes!!!")
    assert body_seen["headers"]["content-length"] == "16"
    # One byte over maxBodySize: 401 and nobody is asked.
    status, _, data = raw(stack, "body.example", "/b", GOOD, "POST", b"seventeen bytes!!")
    assert (status, data, len(auth.seen)) == (401, b"", 2)


def test_max_response_body_size(stack: Stack, app: Backend) -> None:
    before = app.requests
    # The auth server allows, but its body is over the limit: Traefik answers 401.
    assert raw(stack, "maxresp.example", "/", {"Authorization": "Bearer big"})[:3:2] == (401, b"")
    assert raw(stack, "maxresp.example", "/", {"Authorization": "Bearer x"})[0] == 401
    assert app.requests == before
    assert raw(stack, "maxresp.example", "/", GOOD)[0] == 200


def test_auth_cookies_to_response(stack: Stack) -> None:
    status, h, _ = raw(stack, "cookies.example", headers=GOOD)
    assert (status, header(h, "set-cookie")) == (200, ["session=abc; Path=/"])
    status, h, _ = raw(stack, "plain.example", headers=GOOD)
    assert status == 200 and not header(h, "set-cookie")


def test_fails_closed(stack: Stack, app: Backend) -> None:
    before = app.requests
    for host in ("down", "typo", "badregex", "nolimit", "noaddress", "nosecret"):
        assert raw(stack, f"{host}.example", headers=GOOD)[0] == 500, host
    assert raw(stack, "down.example", headers=GOOD)[2] == b""  # Traefik: 500, empty body
    assert app.requests == before


def test_concurrent_checks_share_the_pool(stack: Stack, auth: AuthServer) -> None:
    def one(i: int) -> int:
        return raw(stack, "plain.example", f"/c{i}", GOOD)[0]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(40))) == [200] * 40
    assert sorted(s["headers"]["x-forwarded-uri"] for s in auth.seen) == sorted(
        f"/c{i}" for i in range(40)
    )


def test_diagnostics(tmp_path: Path, app: Backend) -> None:
    for name, text in {"svc.yaml": service_yaml("app", [app]), **files(1, 2)}.items():
        (tmp_path / name).write_text(text)
    config, diags = translate_directory(tmp_path, Options())
    found = {(d.source.name, d.field, d.reason) for d in diags if d.source.kind == "Middleware"}
    assert found == {
        ("typo", "spec.forwardAuth.authResponseHeader", "InvalidMiddleware"),
        ("badregex", "spec.forwardAuth.authResponseHeadersRegex", "InvalidMiddleware"),
        ("nolimit", "spec.forwardAuth.maxBodySize", "Unsupported"),
        ("noaddress", "spec.forwardAuth.address", "InvalidMiddleware"),
        ("nosecret", "spec.forwardAuth.tls.caSecret", "SecretNotFound"),
    }
    # The service mode needs no cluster for the auth server: the control plane calls it.
    assert "forwardAuth/" not in json.dumps(config["clusters"])


def test_golden_configuration_passes_envoy_validate(tmp_path: Path) -> None:
    """The golden case's Envoy resources, as Envoy itself judges them."""
    doc = yaml.safe_load((GOLDEN / "middleware_forward_auth.envoy.yaml").read_text())
    validate_resources(doc, tmp_path)


# --- TLS to the auth server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:  # pragma: no cover
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("fa-pki")
    make_ca(d, "ca")
    make_leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    return d


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_tls_options(
    pki: Path, app: Backend, make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    ctx.verify_mode = ssl.CERT_REQUIRED  # the middleware's client certificate is required
    ctx.load_verify_locations(pki / "ca.crt")
    server = AuthServer(ctx)
    try:
        base = f"https://127.0.0.1:{server.port}/verify"
        secrets = (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: auth-ca, namespace: default}\n"
            f"data: {{ca.crt: {_b64(pki / 'ca.crt')}}}\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata: {name: auth-client, namespace: default}\n"
            "type: kubernetes.io/tls\n"
            f"data: {{tls.crt: {_b64(pki / 'client.crt')}, tls.key: {_b64(pki / 'client.key')}}}\n"
        )
        tls = {
            "verified": "caSecret: auth-ca, certSecret: auth-client",
            "skip": "insecureSkipVerify: true, certSecret: auth-client",
            "system": "certSecret: auth-client",
            "nocert": "caSecret: auth-ca",
        }
        spec = {n: f"{{address: '{base}', tls: {{{t}}}}}" for n, t in tls.items()}
        routes = "\n".join(
            f"  - match: Host(`{n}.example`)\n    middlewares: [{{name: {n}}}]\n"
            "    services: [{name: app, port: 80}]"
            for n in spec
        )
        stack = make_stack(
            {
                "svc.yaml": service_yaml("app", [app]),
                "secrets.yaml": secrets,
                "mw.yaml": "---\n".join(
                    middleware_yaml(n, f"  forwardAuth: {s}") for n, s in spec.items()
                ),
                "ir.yaml": "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
                f"metadata: {{name: fa, namespace: default}}\nspec:\n  routes:\n{routes}\n",
            }
        )
        stack.wait_serving(
            lambda: stack.request("/", host="verified.example", headers=GOOD)[0] == 200, "TLS"
        )
        assert stack.request("/", host="skip.example", headers=GOOD)[0] == 200
        # Not trusted by the system roots / no client certificate for the server: 500.
        assert stack.request("/", host="system.example", headers=GOOD)[0] == 500
        assert stack.request("/", host="nocert.example", headers=GOOD)[0] == 500
        assert stack.request("/", host="verified.example")[0] == 401
    finally:
        server.stop()


# --- the opt-in envoy mode ------------------------------------------------------------------


def test_envoy_mode_request_shape(
    app: Backend, auth: AuthServer, make_stack: Callable[..., Stack]
) -> None:
    base = f"http://127.0.0.1:{auth.port}/verify"
    spec = {
        "plain": f"{{address: '{base}', authResponseHeaders: [X-Auth-User]}}",
        "refused": f"{{address: '{base}', authRequestHeaders: [Authorization]}}",
    }
    routes = "\n".join(
        f"  - match: Host(`{n}.example`)\n    middlewares: [{{name: {n}}}]\n"
        "    services: [{name: app, port: 80}]"
        for n in spec
    )
    stack = make_stack(
        {
            "svc.yaml": service_yaml("app", [app]),
            "mw.yaml": "---\n".join(
                middleware_yaml(n, f"  forwardAuth: {s}") for n, s in spec.items()
            ),
            "ir.yaml": "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
            f"metadata: {{name: fa, namespace: default}}\nspec:\n  routes:\n{routes}\n",
        },
        ["--forward-auth", "envoy"],
    )
    stack.wait_serving(
        lambda: stack.request("/", host="plain.example", headers=GOOD)[0] == 200, "envoy mode"
    )
    auth.seen.clear()
    status, backend, echo = stack.request(
        "/a/b?x=1", host="plain.example", headers={**GOOD, "X-Auth-User": "forged"}, method="POST"
    )
    assert (status, backend, sent(echo)["x-auth-user"]) == (200, "app", ["alice"])
    (seen,) = auth.seen
    # Documented deviation: Envoy keeps the method and appends the request path to the address.
    assert (seen["method"], seen["path"]) == ("POST", "/verify/a/b?x=1")
    assert seen["headers"]["x-forwarded-uri"] == "/a/b?x=1"
    status, h, body = raw(stack, "plain.example", "/s", {"Authorization": "Bearer bad"})
    assert (status, body, header(h, "www-authenticate")) == (
        401,
        DENIED_BODY,
        ['Bearer realm="shop"'],
    )
    assert stack.request("/", host="refused.example", headers=GOOD)[0] == 500


# --- the service's parts, in process --------------------------------------------------------


def _incoming(**kw: Any) -> Incoming:
    base: dict[str, Any] = {
        "method": "PUT",
        "scheme": "http",
        "host": "shop.example:8443",
        "path": "/cart?id=1",
        "client_ip": "10.1.2.3",
        "headers": [
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x_forwarded_proto", "smuggled"),
            ("x-custom", "1"),
            ("x-custom", "2"),
            ("connection", "keep-alive"),
            ("content-length", "12"),
            ("x-envoy-external-address", "10.1.2.3"),
            ("x-switchman-client-ip", "10.1.2.3"),
        ],
    }
    return Incoming(**{**base, **kw})


def test_canonical_header_names() -> None:
    assert canonical("x-auth-user") == "X-Auth-User"
    assert canonical("WWW-AUTHENTICATE") == "Www-Authenticate"
    assert canonical("x_forwarded_proto") == "X_forwarded_proto"
    assert canonical("bad header") == "bad header"  # not a token: left alone, as Go does


@pytest.mark.parametrize("trust", [None, True, False])
def test_build_auth_request_per_trust_setting(trust: bool | None) -> None:
    config = ForwardAuthConfig(key="ns/fa", address="http://a/v?x=1", trust_forward_header=trust)
    req = build_auth_request(config, _incoming(), "gw-1")
    h: dict[str, list[str]] = {}
    for k, v in req.headers:
        h.setdefault(k, []).append(v)
    assert (req.method, req.url, req.body) == ("GET", "http://a/v?x=1", None)
    assert h["X-Custom"] == ["1", "2"] and h["Authorization"] == ["Bearer t"]
    assert h["X-Forwarded-For"] == ["10.1.2.3"]
    assert h["X-Forwarded-Method"] == ["PUT"] and h["X-Forwarded-Uri"] == ["/cart?id=1"]
    assert h["X-Forwarded-Host"] == ["shop.example:8443"]
    assert h["X-Forwarded-Proto"] == ["http"] and h["X-Forwarded-Port"] == ["8443"]
    for gone in ("Connection", "Content-Length", "X_forwarded_proto", "X-Envoy-External-Address"):
        assert gone not in h
    assert not any(k.lower() == "x-switchman-client-ip" for k in h)
    if trust is False:
        assert "X-Real-Ip" not in h and "X-Forwarded-Server" not in h
    else:
        assert h["X-Real-Ip"] == ["10.1.2.3"] and h["X-Forwarded-Server"] == ["gw-1"]


def test_build_auth_request_filter_and_trust() -> None:
    config = ForwardAuthConfig(
        key="ns/fa", address="http://a/", trust_forward_header=True, request_headers=("x-custom",)
    )
    names = {k for k, _ in build_auth_request(config, _incoming(), "gw").headers}
    # trustForwardHeader with authRequestHeaders also lets Traefik's own X-headers through.
    assert names == {
        "X-Custom",
        "X-Real-Ip",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Forwarded-Host",
        "X-Forwarded-Server",
        "X-Forwarded-For",
        "X-Forwarded-Method",
        "X-Forwarded-Uri",
    }


def test_signin_redirect_like_go() -> None:
    def location(url: str, path: str) -> str:
        denied = signin_redirect(url, "GET", path).denied_response
        return next(h.header.value for h in denied.headers if h.header.key == "Location")

    assert location("https://l.example/a?b=c", "/x") == "https://l.example/a?b=c"
    assert location("login", "/app/page?q") == "/app/login"
    assert location("../login/", "/app/sub/page") == "/app/login/"
    assert location("/é", "/") == "/%c3%a9"
    body = signin_redirect("/a?b=<'\">", "GET", "/").denied_response.body
    assert body == '<a href="/a?b=&lt;&#39;&#34;&gt;">Found</a>.\n\n'
    assert signin_redirect("/x", "HEAD", "/").denied_response.body == ""


def _check_request(path: str = "/p") -> auth_v3.CheckRequest:
    req = auth_v3.CheckRequest()
    http_req = req.attributes.request.http
    http_req.method, http_req.path, http_req.host, http_req.scheme = "GET", path, "h", "http"
    http_req.header_map.headers.append(base_v3.HeaderValue(key=":path", raw_value=path.encode()))
    http_req.header_map.headers.append(base_v3.HeaderValue(key="x-a", raw_value=b"1"))
    req.attributes.source.address.socket_address.address = "127.0.0.1"
    return req


def _service(address: str) -> ForwardAuthService:
    """The service over a translation with one forwardAuth route, key ``ns/fa``."""
    config = ForwardAuthConfig(key="ns/fa", address=address)
    route = Route(
        name="r",
        router="r",
        entrypoint="web",
        match=Match(path=PathMatch(kind="prefix", value="/")),
        action=DirectResponse(status=200),
        priority=1,
        source=SourceRef(kind="IngressRoute", namespace="ns", name="r"),
        filters=(FilterUse(kind="forward_auth", config=config),),
    )
    ir = IR(routes=(route,))
    return ForwardAuthService(lambda: ir)


def test_timeout_and_dead_server_answer_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts and never answers: after the timeout, 500 with an empty body."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    monkeypatch.setattr(fa, "TIMEOUT_SECONDS", 0.5)

    async def run() -> list[auth_v3.CheckResponse]:
        silent = _service(f"http://127.0.0.1:{port}/v")
        dead = _service(f"http://127.0.0.1:{free_port()}/v")
        unknown = await silent.check("ns/other", _check_request(), "gw")
        try:
            return [
                await silent.check("ns/fa", _check_request(), "gw"),
                await dead.check("ns/fa", _check_request(), "gw"),
                unknown,
            ]
        finally:
            await silent.close()
            await dead.close()

    try:
        answers = asyncio.run(run())  # returns at all: bounded by the (patched) timeout
    finally:
        listener.close()
    for answer in answers:
        assert answer.status.code == code_pb2.PERMISSION_DENIED
        assert (answer.denied_response.status.code, answer.denied_response.body) == (500, "")


def test_connection_closed_between_checks() -> None:
    """The auth server closes its keep-alive connection after each answer: no check fails."""
    served: list[int] = []

    def serve(sock: socket.socket) -> None:
        for _ in range(2):
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                served.append(1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                time.sleep(0.2)  # then close: the pooled connection goes stale

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    thread = threading.Thread(target=serve, args=(sock,), daemon=True)
    thread.start()

    async def run() -> list[int]:
        service = _service(f"http://127.0.0.1:{sock.getsockname()[1]}/v")
        try:
            first = await service.check("ns/fa", _check_request(), "gw")
            await asyncio.sleep(0.5)
            second = await service.check("ns/fa", _check_request(), "gw")
            return [first.status.code, second.status.code]
        finally:
            await service.close()

    try:
        assert asyncio.run(run()) == [code_pb2.OK, code_pb2.OK]
    finally:
        thread.join(5)
        sock.close()
    assert len(served) == 2


def test_denial_body_decoding() -> None:
    text = "<p>denied</p>" * 100
    plain = [("Content-Type", "text/html")]
    assert fa._decoded(text.encode(), plain) == (text, plain)
    gz = gzip.compress(text.encode())
    assert fa._decoded(gz, [*plain, ("Content-Encoding", "gzip")]) == (text, plain)
    assert fa._decoded(b"\xff\xfe", plain) is None


def test_go_url_parse_refusals() -> None:
    for bad in ("/a%zz", "/a\x01", "http://h:port/", ":nope"):
        assert not fa.go_url_ok(bad), bad
    for good in ("/login?rd=%2F", "https://h:8443/x", "login"):
        assert fa.go_url_ok(good), good


def test_tls_key_is_not_shown() -> None:
    tls = ForwardAuthTLS(private_key="-----BEGIN PRIVATE KEY-----secret")
    assert "secret" not in repr(tls)
