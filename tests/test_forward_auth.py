"""forwardAuth through the real control plane and a real Envoy, with a real auth server.

The auth server here answers 200 + X-Auth-User for ``Bearer good`` and 401 + WWW-Authenticate
(and a body) for anything else, and records what it received.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend, free_port
from tests.support import Stack, service_yaml
from translators.options import Options

pytestmark = pytest.mark.envoy

DENIED_BODY = b"go away"


class AuthServer:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                if self.headers.get("Authorization") == "Bearer good":
                    self.send_response(200)
                    self.send_header("X-Auth-User", "alice")
                    self.send_header("X-Auth-Role", "admin")
                    self.send_header("X-Other", "not-copied")
                    self.send_header("Set-Cookie", "session=abc; Path=/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="shop"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(DENIED_BODY)))
                self.end_headers()
                self.wfile.write(DENIED_BODY)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def middleware(name: str, spec: str) -> str:
    return (
        "apiVersion: traefik.io/v1alpha1\nkind: Middleware\n"
        f"metadata: {{name: {name}, namespace: default}}\nspec:\n  forwardAuth: {spec}\n"
    )


def files(auth_port: int, dead_port: int) -> dict[str, str]:
    base = f"http://127.0.0.1:{auth_port}/verify"
    mws = {
        "plain": f"{{address: '{base}', authResponseHeaders: [X-Auth-User, X-Auth-Tenant]}}",
        "regex": f"{{address: '{base}', authResponseHeadersRegex: '^X-Auth-'}}",
        "trust": f"{{address: '{base}', trustForwardHeader: true}}",
        "only": f"{{address: '{base}', authRequestHeaders: [Authorization, X-Keep]}}",
        "cookies": f"{{address: '{base}', addAuthCookiesToResponse: [session]}}",
        "down": f"{{address: 'http://127.0.0.1:{dead_port}/verify'}}",
        "tls": f"{{address: '{base}', tls: {{insecureSkipVerify: true}}}}",
        "typo": f"{{address: '{base}', authResponseHeader: [X-Auth-User]}}",
    }
    routes = "\n".join(
        f"  - match: Host(`{name}.example`)\n    middlewares: [{{name: {name}}}]\n"
        "    services: [{name: app, port: 80}]"
        for name in mws
    )
    return {
        "mw.yaml": "---\n".join(middleware(n, s) for n, s in mws.items()),
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


GOOD = {"Authorization": "Bearer good"}


def raw(
    stack: Stack, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def sent(echo: dict[str, object]) -> dict[str, str]:
    return {k.lower(): v for k, v in echo["headers"]}  # type: ignore[attr-defined]


def test_allowed_copies_auth_response_headers_upstream(stack: Stack, auth: AuthServer) -> None:
    status, backend, echo = stack.request(
        "/a/b?x=1",
        host="plain.example",
        headers={**GOOD, "X-Auth-User": "forged", "X-Auth-Tenant": "smuggled"},
    )
    assert (status, backend) == (200, "app")
    upstream = sent(echo)
    assert upstream["x-auth-user"] == "alice"  # the auth server's value replaced the client's
    # Listed but not returned by the auth server: the client's copy is removed, as Traefik does.
    assert "x-auth-tenant" not in upstream
    assert "x-auth-role" not in upstream and "x-other" not in upstream  # not listed
    assert upstream["authorization"] == "Bearer good"


def test_request_shape(stack: Stack, auth: AuthServer) -> None:
    stack.request(
        "/a/b?x=1",
        host="plain.example",
        headers={**GOOD, "X-Custom": "1", "X-Forwarded-Uri": "/forged"},
        method="POST",
    )
    (seen,) = auth.seen
    h = seen["headers"]
    assert h["x-forwarded-method"] == "POST"
    assert h["x-forwarded-uri"] == "/a/b?x=1"  # untrusted: the client's value replaced
    assert h["x-forwarded-host"] == "plain.example"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-custom"] == "1"  # no authRequestHeaders: every header is sent
    assert h.get("content-length", "0") == "0"  # never the body
    # Documented deviation: Envoy keeps the method and appends the request path to the
    # address path (Traefik: GET /verify).
    assert (seen["method"], seen["path"]) == ("POST", "/verify/a/b?x=1")


def test_trust_forward_header_keeps_client_values(stack: Stack, auth: AuthServer) -> None:
    stack.request("/p", host="trust.example", headers={**GOOD, "X-Forwarded-Uri": "/from-proxy"})
    stack.request("/q", host="trust.example", headers=GOOD)
    first, second = auth.seen
    assert first["headers"]["x-forwarded-uri"] == "/from-proxy"
    assert second["headers"]["x-forwarded-uri"] == "/q"


def test_response_headers_regex_fails_closed(stack: Stack) -> None:
    # Traefik deletes the client's headers matching the regex before copying the auth server's;
    # Envoy removes headers by name only, so a client could smuggle one: the route answers 500.
    assert stack.request("/", host="regex.example", headers=GOOD)[0] == 500


def test_denied_returns_the_auth_response(stack: Stack, auth: AuthServer, app: Backend) -> None:
    before = app.requests
    for headers in ({"Authorization": "Bearer bad"}, {}):
        status, h, body = raw(stack, "plain.example", "/secret", headers)
        assert status == 401
        assert h["www-authenticate"] == 'Bearer realm="shop"'
        assert body == DENIED_BODY
    assert app.requests == before  # the backend never saw them
    assert len(auth.seen) == 2


def test_fails_closed(stack: Stack, app: Backend) -> None:
    before = app.requests
    for host in ("down", "tls", "typo", "only"):
        status, _, _ = raw(stack, f"{host}.example", headers=GOOD)
        assert status == 500, host
    assert app.requests == before


def test_diagnostics(tmp_path: Path, app: Backend) -> None:
    for name, text in {"svc.yaml": service_yaml("app", [app]), **files(1, 2)}.items():
        (tmp_path / name).write_text(text)
    config, diags = translate_directory(tmp_path, Options())
    found = {(d.source.name, d.field, d.reason) for d in diags if d.source.kind == "Middleware"}
    assert found == {
        ("tls", "spec.forwardAuth.tls", "Unsupported"),
        ("typo", "spec.forwardAuth.authResponseHeader", "InvalidMiddleware"),
        ("only", "spec.forwardAuth.authRequestHeaders", "Unsupported"),
        ("regex", "spec.forwardAuth.authResponseHeadersRegex", "Unsupported"),
    }
    clusters = json.dumps(config)
    assert "forwardAuth/127.0.0.1/1" in clusters and "STRICT_DNS" in clusters


def test_auth_cookies_to_response(stack: Stack) -> None:
    status, headers, _ = raw(stack, "cookies.example", headers=GOOD)
    assert (status, headers["set-cookie"]) == (200, "session=abc; Path=/")
    status, headers, _ = raw(stack, "plain.example", headers=GOOD)
    assert status == 200 and "set-cookie" not in headers
