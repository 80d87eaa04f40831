"""The errors middleware through a real Envoy: error pages from a real error service."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend
from tests.support import Stack, service_yaml
from tests.support import middleware_yaml as middleware
from translators import names
from translators.ir import ERROR_PAGE_HEADER
from translators.middlewares.errors import ERROR_PAGE_HOST, STATUS_HEADER
from translators.options import Options

pytestmark = pytest.mark.envoy


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server:
    """A real HTTP server on 127.0.0.1 whose answers ``answer(path)`` decides; it records every
    request it gets."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                # ``/early…``: answer before reading the body (and close: the body is unread).
                early = self.path.startswith("/early")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length and not early else b""
                server.seen.append(
                    Seen(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                status, headers, out = answer(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if early:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def app_answer(path: str) -> tuple[int, dict[str, str], bytes]:
    """``/code/<status>…`` and ``/early/<status>…`` answer that status; anything else 200."""
    parts = path.split("?")[0].split("/")
    status = int(parts[2]) if len(parts) > 2 and parts[1] in ("code", "early") else 200
    return status, {"Content-Type": "text/plain", "X-App": "yes"}, f"app {status}".encode()


BIG = b"<p>sorry</p>" * 300  # above compress's 1024-byte minimum


def pages_answer(path: str) -> tuple[int, dict[str, str], bytes]:
    """The error service: ``/missing…`` is a 404 page, ``/big…`` a large one, else a small one."""
    if path.startswith("/missing"):
        return 404, {"Content-Type": "text/html"}, f"no page at {path}".encode()
    if path.startswith("/big"):
        return 200, {"Content-Type": "text/html"}, BIG
    return 200, {"Content-Type": "text/html", "X-Page": "yes"}, f"page {path}".encode()


MIDDLEWARES = "---\n".join(
    [
        middleware(
            "e5xx",
            "  errors: {status: ['500-599'], query: '/{status}.html',"
            " service: {name: pages, port: 80}}",
        ),
        middleware(
            "rewrite",
            "  errors:\n    status: ['418', '500-504']\n"
            "    statusRewrites: {'418': 404, '502-504': 500}\n"
            "    query: 'e/{originalStatus}?shown={status}'\n"
            "    service: {name: pages, port: 80}",
        ),
        middleware(
            "missing",
            "  errors: {status: ['503'], query: '/missing/{status}',"
            " service: {name: pages, port: 80}}",
        ),
        middleware(
            "nohost",
            "  errors: {status: ['503'], query: /h,"
            " service: {name: pages, port: 80, passHostHeader: false}}",
        ),
        middleware(
            "big",
            "  errors: {status: ['503'], query: '/big/{status}', service: {name: pages, port: 80}}",
        ),
        middleware(
            "deadpages",
            "  errors: {status: ['503'], query: /x, service: {name: dead, port: 80}}",
        ),
        middleware(
            "e404",
            "  errors: {status: ['404'], query: /nf, service: {name: pages, port: 80}}",
        ),
        middleware("gzip", "  compress: {encodings: [gzip]}"),
        middleware("brand", "  headers: {customResponseHeaders: {X-Brand: switchman}}"),
        middleware(
            "bad-range",
            "  errors: {status: ['500-700'], query: /x, service: {name: pages, port: 80}}",
        ),
        middleware("no-service", "  errors: {status: ['500-599'], query: /x}"),
        middleware(
            "ghost",
            "  errors: {status: ['500-599'], query: /x, service: {name: ghost, port: 80}}",
        ),
        middleware(
            "with-url",
            "  errors: {status: ['500-599'], query: '/x?from={url}',"
            " service: {name: pages, port: 80}}",
        ),
    ]
)


def route(host: str, mws: list[str], service: str = "{name: app, port: 80}") -> str:
    refs = ", ".join(f"{{name: {m}}}" for m in mws)
    return f"  - match: Host(`{host}`)\n    middlewares: [{refs}]\n    services: [{service}]"


ROUTES = "\n".join(
    [
        "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
        "metadata: {name: errors, namespace: default}\nspec:\n  routes:",
        route("errors.example", ["e5xx"]),
        route("rewrite.example", ["rewrite"]),
        route("missing.example", ["missing"]),
        route("nohost.example", ["nohost"]),
        route("mainnohost.example", ["e5xx"], "{name: app, port: 80, passHostHeader: false}"),
        route("dead.example", ["e5xx"], "{name: dead, port: 80}"),
        route("deadpages.example", ["deadpages"]),
        route("chain.example", ["gzip", "brand", "big"]),
        route("double.example", ["e5xx", "e404"]),
        route("plain.example", []),
        route("badrange.example", ["bad-range"]),
        route("noservice.example", ["no-service"]),
        route("ghost.example", ["ghost"]),
        route("url.example", ["with-url"]),
    ]
)


@pytest.fixture
def app() -> Iterator[Server]:
    s = Server(app_answer)
    yield s
    s.stop()


@pytest.fixture
def pages() -> Iterator[Server]:
    s = Server(pages_answer)
    yield s
    s.stop()


@pytest.fixture
def stack(
    backends: Callable[[str], Backend],
    make_stack: Callable[..., Stack],
    app: Server,
    pages: Server,
) -> Stack:
    dead = backends("dead")
    dead.stop()  # a closed port: connections are refused
    s = make_stack(
        {
            "svc.yaml": "---\n".join(
                [
                    service_yaml("app", [app]),  # type: ignore[list-item]
                    service_yaml("pages", [pages]),  # type: ignore[list-item]
                    service_yaml("dead", [dead]),
                ]
            ),
            "mw.yaml": MIDDLEWARES,
            "ir.yaml": ROUTES,
        }
    )
    s.wait_serving(lambda: send(s, "GET", "plain.example")[0] == 200, "routes served")
    return s


def send(
    stack: Stack, method: str, host: str, path: str = "/", body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **headers})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def test_a_caught_status_gets_the_error_page_with_that_status(stack: Stack, pages: Server) -> None:
    status, headers, body = send(
        stack, "GET", "errors.example", "/code/503?q=1", **{"X-Trace": "t1"}
    )
    assert (status, body) == (503, b"page /503.html")
    assert headers["content-type"] == "text/html" and headers["x-page"] == "yes"
    assert "x-app" not in headers  # the page's headers, not the backend's
    page = pages.seen[-1]
    # GET <query> on the error service, the client's Host and headers, not the request's query.
    assert (page.method, page.path) == ("GET", "/503.html")
    assert page.headers["host"] == "errors.example"
    assert page.headers["x-trace"] == "t1"
    assert ERROR_PAGE_HEADER not in page.headers and STATUS_HEADER not in page.headers
    # Another status of the range: {status} follows it.
    assert send(stack, "GET", "errors.example", "/code/500")[::2] == (500, b"page /500.html")
    assert pages.seen[-1].path == "/500.html"


def test_a_post_gets_the_page_from_a_get_without_its_body(stack: Stack, pages: Server) -> None:
    status, _, body = send(stack, "POST", "errors.example", "/code/502", body=b"order=1")
    assert (status, body) == (502, b"page /502.html")
    page = pages.seen[-1]
    assert (page.method, page.path, page.body) == ("GET", "/502.html", b"")
    assert "content-length" not in page.headers


def test_a_head_request_gets_the_backends_answer_and_the_connection_stays_sound(
    stack: Stack, pages: Server
) -> None:
    # Envoy 1.40 sometimes writes a redirected page's body after a HEAD answer (about one run
    # in three), so HEAD is not redirected: the backend's own headers, no body, and the next
    # answer on the same connection is intact. Several rounds, to catch the race if it returns.
    before = len(pages.seen)
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
    try:
        for _ in range(10):
            conn.request("HEAD", "/code/503", headers={"Host": "errors.example"})
            resp = conn.getresponse()
            assert (resp.status, resp.read(), resp.getheader("X-Page")) == (503, b"", None)
            conn.request("GET", "/code/200", headers={"Host": "errors.example"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"app 200")
    finally:
        conn.close()
    assert len(pages.seen) == before  # the error service was never asked


def test_an_answer_before_the_whole_request_body_passes_through(
    stack: Stack, pages: Server
) -> None:
    # Envoy re-runs only a complete request; Traefik would still fetch the page (a deviation).
    before = len(pages.seen)
    with socket.create_connection(("127.0.0.1", stack.web_port), timeout=10) as conn:
        conn.sendall(
            b"POST /early/503 HTTP/1.1\r\nHost: errors.example\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 1000
        )
        data = b""
        while b"app 503" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 503 ") and data.endswith(b"app 503"), data
    assert len(pages.seen) == before


def test_other_statuses_pass_through(stack: Stack, app: Server, pages: Server) -> None:
    before = len(pages.seen)
    for code, expected in (("404", 404), ("200", 200), ("302", 302), ("499", 499)):
        status, headers, body = send(stack, "GET", "errors.example", f"/code/{code}")
        assert (status, body, headers["x-app"]) == (expected, f"app {code}".encode(), "yes")
    assert len(pages.seen) == before  # the error service was never asked
    assert app.seen[-1].path == "/code/499"


def test_status_rewrites(stack: Stack, pages: Server) -> None:
    # {status} is the status the client gets, {originalStatus} the backend's.
    cases = {
        "418": (404, "/e/418?shown=404"),
        "503": (500, "/e/503?shown=500"),
        "501": (501, "/e/501?shown=501"),  # not rewritten
        "500": (500, "/e/500?shown=500"),
    }
    for code, (expected, page) in cases.items():
        status, _, body = send(stack, "GET", "rewrite.example", f"/code/{code}")
        assert (status, body) == (expected, f"page {page}".encode()), code
        assert pages.seen[-1].path == page
    assert send(stack, "GET", "rewrite.example", "/code/505")[0] == 505  # not caught


def test_the_page_keeps_the_caught_status_whatever_the_error_service_answers(
    stack: Stack, pages: Server
) -> None:
    status, _, body = send(stack, "GET", "missing.example", "/code/503")
    assert (status, body) == (503, b"no page at /missing/503")  # the service said 404


def test_host_sent_to_the_error_service(stack: Stack, pages: Server) -> None:
    # passHostHeader false on the error service: the server's own address, as in Traefik.
    assert send(stack, "GET", "nohost.example", "/code/503")[0] == 503
    assert pages.seen[-1].headers["host"] == f"127.0.0.1:{pages.port}"
    # passHostHeader false on the route's own service: the error service still gets the
    # client's Host (Traefik asks for the page with the request's Host).
    assert send(stack, "GET", "mainnohost.example", "/code/504")[::2] == (504, b"page /504.html")
    assert pages.seen[-1].headers["host"] == "mainnohost.example"


def test_an_unreachable_backend_gets_the_page_for_502(stack: Stack, pages: Server) -> None:
    status, _, body = send(stack, "GET", "dead.example", "/")
    assert (status, body) == (502, b"page /502.html")


def test_an_unreachable_error_service_answers_bad_gateway_with_the_caught_status(
    stack: Stack,
) -> None:
    # Traefik: its proxy's "Bad Gateway" for the page, written with the caught status.
    assert send(stack, "GET", "deadpages.example", "/code/503")[::2] == (503, b"Bad Gateway")
    assert send(stack, "GET", "deadpages.example", "/code/500")[::2] == (500, b"app 500")


def test_earlier_middlewares_shape_the_page(stack: Stack) -> None:
    status, headers, body = send(
        stack, "GET", "chain.example", "/code/503", **{"Accept-Encoding": "gzip"}
    )
    assert status == 503
    assert headers["x-brand"] == "switchman"
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == BIG


def test_two_errors_middlewares_with_their_own_statuses(stack: Stack, pages: Server) -> None:
    assert send(stack, "GET", "double.example", "/code/404")[::2] == (404, b"page /nf")
    assert send(stack, "GET", "double.example", "/code/503")[::2] == (503, b"page /503.html")
    assert send(stack, "GET", "double.example", "/code/403")[::2] == (403, b"app 403")


def test_no_client_can_reach_the_error_service_directly(stack: Stack, pages: Server) -> None:
    resources, _ = translate_directory(stack.config, Options())
    keys = {
        h["string_match"]["exact"]
        for rc in resources["routes"]
        for vh in rc["virtual_hosts"]
        if vh["name"] == ERROR_PAGE_HOST
        for r in vh["routes"]
        for h in r["match"]["headers"]
        if h["name"] == ERROR_PAGE_HEADER
    }
    assert keys
    before = len(pages.seen)
    for key in keys:
        for host in (ERROR_PAGE_HOST, "errors.example"):
            status, _, body = send(
                stack, "GET", host, "/code/200", **{ERROR_PAGE_HEADER: key, STATUS_HEADER: "503"}
            )
            assert status in (200, 404) and not body.startswith(b"page"), (key, host)
    assert len(pages.seen) == before


def test_bad_input_is_reported_and_other_routes_are_served(stack: Stack) -> None:
    for host in ("badrange.example", "noservice.example", "ghost.example", "url.example"):
        assert send(stack, "GET", host, "/code/503")[0] == 404, host  # not served
    assert send(stack, "GET", "errors.example", "/code/503")[::2] == (503, b"page /503.html")
    assert send(stack, "GET", "plain.example", "/code/503")[0] == 503
    _, diags = translate_directory(stack.config, Options())
    found = {(d.source.kind, d.source.name, d.field, d.reason) for d in diags}
    assert ("Middleware", "bad-range", "spec.errors.status[0]", "InvalidMiddleware") in found
    assert ("Middleware", "no-service", "spec.errors.service", "InvalidMiddleware") in found
    assert ("Middleware", "ghost", "spec.errors.service.name", "ServiceNotFound") in found
    assert ("Middleware", "with-url", "spec.errors.query", "Unsupported") in found
    assert all(d.source.name not in ("errors", "e5xx") for d in diags)


APP = "service: {name: app, port: 80}"
BAD = [
    # (spec under ``errors``, (field, reason, severity) of its diagnostic)
    (
        f"status: ['500-599'], query: /x, errorRequestHeaders: [Accept], {APP}",
        ("spec.errors.errorRequestHeaders", "Unsupported", "error"),
    ),
    (f"status: ['503'], query: '/a b', {APP}", ("spec.errors.query", "Unsupported", "error")),
    (
        "status: ['503'], query: /x, service: {name: app, port: 81}",
        ("spec.errors.service.port", "PortNotFound", "error"),
    ),
    (
        f"status: ['503'], statusRewrites: {{'503': 99}}, {APP}",
        ("spec.errors.statusRewrites[503]", "InvalidMiddleware", "error"),
    ),
    (f"status: ['503'], colour: red, {APP}", ("spec.errors.colour", "InvalidMiddleware", "error")),
    # Warnings: the route is served.
    (f"status: ['599-500', '503'], {APP}", ("spec.errors.status[0]", "EmptyRange", "warning")),
    (
        f"status: ['500-504'], statusRewrites: {{'500-502': 500, '502': 404}}, {APP}",
        ("spec.errors.statusRewrites[502]", "AmbiguousRewrite", "warning"),
    ),
]


def test_bad_errors_fields_are_named(tmp_path: Path) -> None:
    docs = [service_yaml("app", [])]
    routes = []
    for i, (spec, _) in enumerate(BAD):
        docs.append(middleware(f"m{i}", f"  errors: {{{spec}}}"))
        routes.append(route(f"m{i}.example", [f"m{i}"]))
    # An inner errors middleware whose page status an outer one also catches.
    docs.append(middleware("outer", f"  errors: {{status: ['500-599'], {APP}}}"))
    docs.append(
        middleware("inner", f"  errors: {{status: ['404'], statusRewrites: {{'404': 503}}, {APP}}}")
    )
    routes.append(route("nested.example", ["outer", "inner"]))
    docs.append("\n".join([ROUTES.split("\n  - ")[0], *routes]))
    (tmp_path / "all.yaml").write_text("---\n".join(docs))
    resources, diags = translate_directory(tmp_path, Options(allow_empty_services=True))
    found = {d.source.name: (d.field, d.reason, d.severity) for d in diags}
    for i, (spec, expected) in enumerate(BAD):
        assert found.get(f"m{i}") == expected, spec
    assert found["inner"] == ("spec.errors.status", "Unsupported", "error")
    served = {
        r["name"].split("/")[0]
        for rc in resources["routes"]
        for vh in rc["virtual_hosts"]
        for r in vh.get("routes", [])
    }
    # Only the two routes whose middlewares have warnings are served (and the error-page routes).
    assert {n for n in served if not n.startswith("errors")} == {
        names.router_name("default", "errors", f"Host(`m{i}.example`)") for i in (5, 6)
    }
