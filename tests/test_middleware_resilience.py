"""circuitBreaker and inFlightReq through a real Envoy with real backends.

circuitBreaker: a backend answering 5xx trips the breaker, after which clients get the fallback
status without the backend being called, until fallbackDuration has passed and the backend
is healthy again; another route to the same Service keeps its own state. inFlightReq: with
``amount: 1`` and a backend holding the first request, a concurrent second request is answered
429 by the gateway while the first one completes.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend, wait_for
from tests.envoy_validate import validate_resources
from tests.support import Stack, service_yaml
from tests.support import middleware_yaml as middleware
from translators.options import Options

pytestmark = pytest.mark.envoy

GOLDEN = Path(__file__).parent / "golden"


class GateServer:
    """Holds every request until ``release()``; counts the requests that arrived."""

    def __init__(self) -> None:
        self.entered = 0
        self.gate = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with server._lock:
                    server.entered += 1
                server.gate.wait(timeout=60)
                body = json.dumps({"backend": "gate"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.gate.set()

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


MIDDLEWARES = "---\n".join(
    [
        middleware(
            "breaker",
            "  circuitBreaker:\n"
            "    expression: ResponseCodeRatio(500, 600, 0, 600) > 0.50\n"
            "    checkPeriod: 100ms\n"
            "    fallbackDuration: 4s",
        ),
        middleware(
            "teapot",
            "  circuitBreaker:\n"
            "    expression: ResponseCodeRatio(500, 600, 0, 600) >= 0.5\n"
            "    fallbackDuration: 10m\n"
            "    responseCode: 418",
        ),
        middleware(
            "network",
            "  circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5', fallbackDuration: 10m}",
        ),
        middleware("one", "  inFlightReq: {amount: 1}"),
        middleware(
            "bad-expression", "  circuitBreaker: {expression: 'NetworkErrorRatio() >> 0.5'}"
        ),
        middleware(
            "bad-field", "  circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5', x: 1}"
        ),
        middleware("bad-amount", "  inFlightReq: {amount: 0}"),
        middleware("bad-criterion", "  inFlightReq: {amount: 2, sourceCriterion: {foo: true}}"),
    ]
)


def _route(host: str, service: str, *mws: str) -> str:
    names = ", ".join(f"{{name: {m}}}" for m in mws)
    return (
        f"  - match: Host(`{host}`)\n    middlewares: [{names}]\n"
        f"    services: [{{name: {service}, port: 80}}]"
    )


ROUTES = "\n".join(
    [
        "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
        "metadata: {name: resilience, namespace: default}\nspec:\n  routes:",
        _route("breaker.example", "flaky", "breaker"),
        _route("shared.example", "flaky"),  # the same Service, no breaker
        _route("teapot.example", "failing", "teapot"),
        _route("network.example", "dead", "network"),
        _route("network-5xx.example", "failing2", "network"),
        _route("one.example", "gate", "one"),
        _route("app.example", "app"),
        _route("bad1.example", "app", "bad-expression"),
        _route("bad2.example", "app", "bad-field"),
        _route("bad3.example", "app", "bad-amount"),
        _route("bad4.example", "app", "bad-criterion"),
    ]
)


@pytest.fixture
def gate() -> Iterator[GateServer]:
    server = GateServer()
    yield server
    server.stop()


@pytest.fixture
def stack(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], gate: GateServer
) -> Iterator[Stack]:
    dead = backends("dead")
    dead.stop()  # a closed port: every connection is refused
    started = {
        "flaky": Backend("flaky", status=500).start(),
        "failing": Backend("failing", status=500).start(),
        "failing2": Backend("failing2", status=500).start(),
    }
    s = make_stack(
        {
            "svc.yaml": "---\n".join(
                [
                    service_yaml("app", [backends("app")]),
                    service_yaml("dead", [dead]),
                    service_yaml("gate", [gate]),  # type: ignore[list-item]
                    *(service_yaml(name, [b]) for name, b in started.items()),
                ]
            ),
            "mw.yaml": MIDDLEWARES,
            "ir.yaml": ROUTES,
        }
    )
    s.wait_serving(lambda: s.request("/", host="app.example")[0] == 200, "routes served", 60)
    s.started = started  # type: ignore[attr-defined]
    yield s
    for b in started.values():
        b.stop()


def _get(stack: Stack, host: str) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _until(stack: Stack, host: str, status: int, allowed: set[int], timeout: float = 60) -> bytes:
    """Send requests until one is answered ``status``; every other answer must be in
    ``allowed``. Returns that answer's body."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, body = _get(stack, host)
        if got == status:
            return body
        assert got in allowed, f"{host}: unexpected {got} {body[:80]!r} after {seen}"
        seen.append(got)
        time.sleep(0.02)
    raise AssertionError(f"{host}: no {status} within {timeout}s; got {seen[-10:]}")


def test_breaker_trips_answers_without_the_backend_and_recovers(stack: Stack) -> None:
    flaky: Backend = stack.started["flaky"]  # type: ignore[attr-defined]
    body = _until(stack, "breaker.example", 503, {500})
    assert body == b"Service Unavailable"  # Traefik's fallback body: Go's status text
    assert flaky.requests >= 1
    # Tripped: the fallback answers, the backend is not called. (Should fallbackDuration end
    # during these requests on a slow machine, any 500 must be one the backend sent.)
    before = flaky.requests
    answers = [_get(stack, "breaker.example") for _ in range(8)]
    statuses = [s for s, _ in answers]
    assert statuses[0] == 503
    assert flaky.requests - before == statuses.count(500), statuses
    assert all(b == b"Service Unavailable" for s, b in answers if s == 503)
    # Each router has its own breaker: a route to the same Service without one still reaches
    # the backend (which answers 500) while the first is tripped.
    assert _get(stack, "shared.example")[0] == 500
    # The backend heals; after fallbackDuration its server is back and requests reach it.
    flaky.status = 200
    _until(stack, "breaker.example", 200, {503})


def test_response_code_is_answered_while_tripped(stack: Stack) -> None:
    failing: Backend = stack.started["failing"]  # type: ignore[attr-defined]
    body = _until(stack, "teapot.example", 418, {500})
    assert body == b"I'm a teapot"
    before = failing.requests
    assert [_get(stack, "teapot.example")[0] for _ in range(5)] == [418] * 5
    assert failing.requests == before
    # A 503 elsewhere (the 5xx breaker route of another Service) is not rewritten to 418.
    assert _until(stack, "breaker.example", 503, {500}) == b"Service Unavailable"


def test_network_error_ratio_counts_connection_failures_not_5xx(stack: Stack) -> None:
    # Connection refused: Traefik's 502 first, then the breaker's fallback.
    body = _until(stack, "network.example", 503, {502})
    assert body == b"Service Unavailable"
    assert _get(stack, "network.example")[0] == 503
    # 500 answers are not network errors: that breaker never trips (20 check periods).
    failing2: Backend = stack.started["failing2"]  # type: ignore[attr-defined]
    statuses = []
    for _ in range(20):
        statuses.append(_get(stack, "network-5xx.example")[0])
        time.sleep(0.1)
    assert statuses == [500] * 20
    assert failing2.requests == 20


def test_in_flight_limit_answers_429_to_the_second_concurrent_request(
    stack: Stack, gate: GateServer
) -> None:
    first: list[tuple[int, bytes]] = []
    thread = threading.Thread(target=lambda: first.append(_get(stack, "one.example")))
    thread.start()
    try:
        wait_for(lambda: gate.entered == 1, 30, "the first request to reach the backend")
        status, body = _get(stack, "one.example")
        assert (status, body) == (429, b"max connections reached: 1")
        assert gate.entered == 1  # the second request never reached the backend
    finally:
        gate.release()
        thread.join(timeout=60)
    assert first and first[0][0] == 200
    assert json.loads(first[0][1])["backend"] == "gate"
    # The first request is done: the next one is let through.
    assert _get(stack, "one.example")[0] == 200
    assert gate.entered == 2


def test_bad_input_is_reported_and_other_routes_unaffected(stack: Stack) -> None:
    for host in ("bad1.example", "bad2.example", "bad3.example", "bad4.example"):
        assert _get(stack, host)[0] == 404, host
    assert _get(stack, "app.example")[0] == 200
    _, diags = translate_directory(stack.config, Options())
    found = {(d.source.kind, d.source.name, d.field, d.reason) for d in diags}
    mw = "Middleware"
    assert (mw, "bad-expression", "spec.circuitBreaker.expression", "InvalidMiddleware") in found
    assert (mw, "bad-field", "spec.circuitBreaker.x", "InvalidMiddleware") in found
    assert (mw, "bad-amount", "spec.inFlightReq.amount", "InvalidMiddleware") in found
    assert (
        mw,
        "bad-criterion",
        "spec.inFlightReq.sourceCriterion.foo",
        "InvalidMiddleware",
    ) in found
    message = next(d.message for d in diags if d.source.name == "bad-expression")
    assert message.startswith("column 21: operator >> is not supported")


@pytest.mark.parametrize("case", ["middleware_circuitbreaker", "middleware_inflightreq"])
def test_golden_translations_pass_envoy_validation(case: str, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(GOLDEN / f"{case}.in.yaml", config / "in.yaml")
    resources, _ = translate_directory(config, Options())
    validate_resources(resources, tmp_path / "validate")
