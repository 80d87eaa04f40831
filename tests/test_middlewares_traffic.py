"""retry, compress, buffering, grpcWeb, contentType through a real Envoy with real backends."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend
from tests.support import Stack, service_yaml
from tests.support import middleware_yaml as middleware
from translators.options import Options

pytestmark = pytest.mark.envoy


class ContentServer:
    """Answers ``/?type=<content type>&size=<bytes>`` with that body; records request headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append({k.lower(): v for k, v in self.headers.items()})
                query = parse_qs(urlsplit(self.path).query)
                ctype = query.get("type", ["text/html"])[0]
                body = b"compress me " * (int(query.get("size", ["2400"])[0]) // 12)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


MIDDLEWARES = "---\n".join(
    [
        middleware("retry-status", "  retry: {attempts: 3, status: ['500-599']}"),
        middleware("retry-once", "  retry: {attempts: 1, status: ['500-599']}"),
        middleware("retry-net", "  retry: {attempts: 2, initialInterval: 10ms}"),
        middleware("gzip-only", "  compress: {encodings: [gzip]}"),
        middleware("compress", "  compress: {excludedContentTypes: [image/png]}"),
        middleware("buffer", "  buffering: {maxRequestBodyBytes: 100, memRequestBodyBytes: 50}"),
        middleware("grpcweb", "  grpcWeb: {}"),
        middleware("nosniff", "  contentType: {autoDetect: false}"),
        middleware("sniff", "  contentType: {autoDetect: true}"),
        middleware("bad-attempts", "  retry: {attempts: -1}"),
        middleware("bad-interval", "  retry: {attempts: 2, initialInterval: abc}"),
        middleware("bad-encoding", "  compress: {encodings: [gzip, deflate]}"),
    ]
)


def route(host: str, service: str, *mws: str) -> str:
    names = ", ".join(f"{{name: {m}}}" for m in mws)
    return (
        f"  - match: Host(`{host}`)\n    middlewares: [{names}]\n"
        f"    services: [{{name: {service}, port: 80}}]"
    )


ROUTES = "\n".join(
    [
        "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
        "metadata: {name: traffic, namespace: default}\nspec:\n  routes:",
        route("status.example", "flaky", "retry-status"),
        route("once.example", "flaky2", "retry-once"),
        route("net.example", "half", "retry-net"),
        route("gzip.example", "content", "gzip-only"),
        route("compress.example", "content", "compress"),
        route("buffer.example", "app", "buffer"),
        route("grpcweb.example", "content", "grpcweb"),
        route("nosniff.example", "app", "nosniff"),
        route("sniff.example", "app", "sniff"),
        route("bad1.example", "app", "bad-attempts"),
        route("bad2.example", "app", "bad-interval"),
        route("bad3.example", "app", "bad-encoding"),
    ]
)


@pytest.fixture
def content() -> Iterator[ContentServer]:
    server = ContentServer()
    yield server
    server.stop()


@pytest.fixture
def stack(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], content: ContentServer
) -> Iterator[Stack]:
    dead = backends("dead")
    dead.stop()  # a closed port: connections are refused
    failing = [Backend("bad", status=503).start(), Backend("bad2", status=503).start()]
    s = make_stack(
        {
            "svc.yaml": "---\n".join(
                [
                    service_yaml("app", [backends("app")]),
                    service_yaml("flaky", [failing[0], backends("good")]),
                    service_yaml("flaky2", [failing[1], backends("good2")]),
                    service_yaml("half", [dead, backends("good3")]),
                    service_yaml("content", [content]),  # type: ignore[list-item]
                ]
            ),
            "mw.yaml": MIDDLEWARES,
            "ir.yaml": ROUTES,
        }
    )
    s.wait_serving(lambda: s.request("/", host="buffer.example")[0] == 200, "routes served")
    s.failing = failing  # type: ignore[attr-defined]
    yield s
    for b in failing:
        b.stop()


def _send(
    stack: Stack, method: str, host: str, path: str = "/", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    body = headers.pop("body", None)
    conn.request(method, path, body=body, headers={"Host": host, **headers})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def test_retry_on_status_moves_to_a_healthy_endpoint(stack: Stack) -> None:
    bad: Backend = stack.failing[0]  # type: ignore[attr-defined]
    for _ in range(6):
        assert stack.request("/", host="status.example")[:2] == (200, "good")
    assert bad.requests >= 1  # some tries hit the failing endpoint and were retried
    # Traefik retries on status for idempotent methods only: a POST gets the failing answer.
    before = bad.requests
    statuses = [_send(stack, "POST", "status.example", body="x")[0] for _ in range(6)]
    assert statuses.count(503) == bad.requests - before >= 1
    assert set(statuses) == {200, 503}


def test_one_attempt_is_no_retry(stack: Stack) -> None:
    bad: Backend = stack.failing[1]  # type: ignore[attr-defined]
    statuses = [stack.request("/", host="once.example")[0] for _ in range(6)]
    assert statuses.count(503) == bad.requests >= 1


def test_retry_on_network_error(stack: Stack) -> None:
    # One endpoint refuses connections; every request still reaches the other.
    for _ in range(6):
        assert stack.request("/", host="net.example")[:2] == (200, "good3")


def test_compress_by_accept_encoding(stack: Stack, content: ContentServer) -> None:
    accepts = {"gzip": "gzip", "br": "br", "zstd": "zstd", "gzip, br, zstd": "zstd"}
    for accept, expected in accepts.items():
        status, h, body = _send(stack, "GET", "compress.example", **{"Accept-Encoding": accept})
        assert (status, h.get("content-encoding")) == (200, expected), accept
        assert len(body) < 2400
    status, h, body = _send(stack, "GET", "compress.example", **{"Accept-Encoding": "gzip"})
    assert gzip.decompress(body) == b"compress me " * 200
    assert "content-encoding" not in _send(stack, "GET", "compress.example")[1]  # not accepted
    # encodings: [gzip] only
    assert (
        _send(stack, "GET", "gzip.example", **{"Accept-Encoding": "br"})[1].get("content-encoding")
        is None
    )
    assert (
        _send(stack, "GET", "gzip.example", **{"Accept-Encoding": "zstd, gzip"})[1][
            "content-encoding"
        ]
        == "gzip"
    )
    # Below minResponseBodyBytes (1024), excluded and never-compressed types: sent as they are.
    for path in ("/?size=600", "/?type=image/png", "/?type=application/grpc"):
        status, h, body = _send(
            stack, "GET", "compress.example", path, **{"Accept-Encoding": "gzip"}
        )
        assert status == 200 and "content-encoding" not in h, path


def test_buffering_limits_the_request_body(stack: Stack) -> None:
    status, _, _ = _send(stack, "POST", "buffer.example", body="x" * 200)
    assert status == 413
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    conn.request("POST", "/", body="y" * 50, headers={"Host": "buffer.example"})
    resp = conn.getresponse()
    echo = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and echo["body"] == "y" * 50


def test_grpc_web_reaches_the_backend_as_grpc(stack: Stack, content: ContentServer) -> None:
    frame = b"\x00\x00\x00\x00\x00"  # an empty gRPC message
    _send(
        stack,
        "POST",
        "grpcweb.example",
        "/pkg.Svc/Method",
        body=frame,  # type: ignore[arg-type]
        **{"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"},
    )
    assert content.seen[-1]["content-type"] == "application/grpc"  # Envoy drops "+proto"


def test_content_type(stack: Stack) -> None:
    assert stack.request("/", host="nosniff.example")[0] == 200  # no sniffing: a no-op
    assert stack.request("/", host="sniff.example")[0] == 404  # autoDetect: not served


def test_bad_input_is_reported_and_the_route_not_served(stack: Stack) -> None:
    for host in ("bad1.example", "bad2.example", "bad3.example", "sniff.example"):
        assert stack.request("/", host=host)[0] == 404, host
    assert stack.request("/", host="buffer.example")[0] == 200  # others unaffected
    _, diags = translate_directory(stack.config, Options())
    found = {(d.source.name, d.field, d.reason) for d in diags}
    assert ("bad-attempts", "spec.retry.attempts", "InvalidMiddleware") in found
    assert ("bad-interval", "spec.retry.initialInterval", "InvalidMiddleware") in found
    assert ("bad-encoding", "spec.compress.encodings[1]", "InvalidMiddleware") in found
    assert ("sniff", "spec.contentType.autoDetect", "Unsupported") in found
