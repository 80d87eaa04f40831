"""ipAllowList / ipWhiteList and rateLimit through a real Envoy, and their bad input.

Clients pick their source address on 127.0.0.0/8 (Linux routes the whole block to lo), so one
test can be inside and outside an allow list, or be two clients with their own rate buckets.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend
from tests.support import Stack, route_yaml, service_yaml
from tests.support import middleware_yaml as middleware
from translators.options import Options

pytestmark = [pytest.mark.envoy, pytest.mark.filterwarnings("error")]


MIDDLEWARES = "---\n".join(
    [
        middleware("allow", "  ipAllowList: {sourceRange: [127.0.0.2/32, '::1', 10.0.0.0/8]}"),
        middleware("allow-old", "  ipWhiteList: {sourceRange: [127.0.0.2]}"),
        middleware("allow-403", "  ipAllowList: {sourceRange: [127.0.0.2], rejectStatusCode: 403}"),
        middleware("bad-range", "  ipAllowList: {sourceRange: [127.0.0.2, 300.1.2.3/8]}"),
        middleware(
            "reject-404", "  ipAllowList: {sourceRange: [127.0.0.2], rejectStatusCode: 404}"
        ),
        middleware("depth", "  ipAllowList: {sourceRange: [127.0.0.2], ipStrategy: {depth: 1}}"),
        middleware("per-ip", "  rateLimit: {average: 1, period: 1m, burst: 2}"),
        middleware(
            "per-key",
            "  rateLimit: {average: 1, period: 60, sourceCriterion: {requestHeaderName: X-Key}}",
        ),
        middleware(
            "per-host",
            "  rateLimit: {average: 1, period: 1m, sourceCriterion: {requestHost: true}}",
        ),
        middleware("fast", "  rateLimit: {average: 10, burst: 1}"),
        middleware("unlimited", "  rateLimit: {average: 0}"),
        middleware("redis", "  rateLimit: {average: 1, redis: {endpoints: ['127.0.0.1:6379']}}"),
        middleware(
            "xff-source",
            "  rateLimit: {average: 1, sourceCriterion: {ipStrategy: {excludedIPs: [10.0.0.1]}}}",
        ),
        middleware("typo", "  rateLimit: {average: 1, burts: 5}"),
    ]
)


HOSTS = [
    *("allow", "allow-old", "allow-403", "bad-range", "reject-404", "depth"),
    *("per-ip", "per-key", "per-host", "fast", "unlimited", "redis", "xff-source", "typo"),
]  # a route Host(`<name>.example`) with the Middleware <name> each
ROUTES = (
    """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: access, namespace: default}
spec:
  routes:
  - match: Host(`plain.example`)
    services: [{name: app, port: 80}]
  - match: Host(`per-ip-2.example`)
    middlewares: [{name: per-ip}]
    services: [{name: app, port: 80}]
"""
    + "\n".join(route_yaml(f"Host(`{h}.example`)", h) for h in HOSTS)
    + "\n"
)
FILES = {"mw.yaml": MIDDLEWARES, "routes.yaml": ROUTES}


@pytest.fixture
def stack(backends: Callable[[str], Backend], make_stack: Callable[..., Stack]) -> Stack:
    app = backends("app")
    s = make_stack({"svc.yaml": service_yaml("app", [app]), **FILES})
    s.wait_serving(lambda: s.request("/", host="plain.example")[0] == 200, "routes served")
    return s


def send(
    stack: Stack, host: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """One request on a new connection from ``source``: (status, response headers)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", stack.web_port, timeout=5, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/", headers={"Host": f"{host}.example", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_ip_allow_list(stack: Stack) -> None:
    for host in ("allow", "allow-old", "allow-403"):
        assert send(stack, host, "127.0.0.2")[0] == 200, host
        assert send(stack, host, "127.0.0.3")[0] == 403, host
        assert send(stack, host, "127.0.0.1")[0] == 403, host
    # The TCP peer counts, never a client-supplied X-Forwarded-For.
    spoof = {"X-Forwarded-For": "127.0.0.2", "X-Real-Ip": "127.0.0.2"}
    assert send(stack, "allow", "127.0.0.3", spoof)[0] == 403
    # Untranslatable allow lists fail closed; other routes are unaffected.
    for host in ("bad-range", "reject-404", "depth"):
        assert send(stack, host, "127.0.0.2")[0] == 500, host
    assert send(stack, "plain", "127.0.0.3")[0] == 200


def test_rate_limit_per_client_ip(stack: Stack) -> None:
    assert [send(stack, "per-ip", "127.0.0.2")[0] for _ in range(2)] == [200, 200]  # burst 2
    status, headers = send(stack, "per-ip", "127.0.0.2")
    assert status == 429
    assert headers["retry-after"] == "60"  # 1 per minute: the next token within 60 s
    assert headers["x-retry-in"] == "1m0s"
    # Another client has its own bucket; so has another router using the same middleware.
    assert send(stack, "per-ip", "127.0.0.3")[0] == 200
    assert send(stack, "per-ip-2", "127.0.0.2")[0] == 200
    assert send(stack, "unlimited", "127.0.0.2")[0] == 200
    assert [send(stack, "unlimited", "127.0.0.2")[0] for _ in range(20)] == [200] * 20


def test_rate_limit_refills(stack: Stack) -> None:
    # 10/s, burst 1: a token every 100 ms.
    assert send(stack, "fast", "127.0.0.2")[0] == 200
    status, headers = send(stack, "fast", "127.0.0.2")
    assert (status, headers["retry-after"], headers["x-retry-in"]) == (429, "1", "100ms")
    time.sleep(0.25)
    assert send(stack, "fast", "127.0.0.2")[0] == 200


def test_rate_limit_per_header_and_host(stack: Stack) -> None:
    assert send(stack, "per-key", headers={"X-Key": "a"})[0] == 200
    assert send(stack, "per-key", "127.0.0.3", headers={"X-Key": "a"})[0] == 429  # same key
    assert send(stack, "per-key", headers={"X-Key": "b"})[0] == 200
    # Requests without the header share one bucket (Traefik's bucket for the empty value).
    assert send(stack, "per-key")[0] == 200
    assert send(stack, "per-key", "127.0.0.3")[0] == 429
    # One bucket per Host: the same route reached with another Host value (a port) is another.
    assert send(stack, "per-host")[0] == 200
    assert send(stack, "per-host", "127.0.0.3")[0] == 429
    assert send(stack, "per-host", headers={"Host": "per-host.example:80"})[0] == 200
    # Untranslatable rate limits fail closed.
    for host in ("redis", "xff-source", "typo"):
        assert send(stack, host)[0] == 500, host


def test_diagnostics_name_the_middleware_and_field(tmp_path: Path) -> None:
    for name, text in {"svc.yaml": service_yaml("app", []), **FILES}.items():
        (tmp_path / name).write_text(text)
    _, diags = translate_directory(tmp_path, Options())
    found = {
        (d.source.kind, d.source.name, d.field, d.reason)
        for d in diags
        if d.source.kind == "Middleware"
    }
    assert found == {
        ("Middleware", "bad-range", "spec.ipAllowList.sourceRange[1]", "InvalidMiddleware"),
        ("Middleware", "reject-404", "spec.ipAllowList.rejectStatusCode", "Unsupported"),
        ("Middleware", "depth", "spec.ipAllowList.ipStrategy.depth", "Unsupported"),
        ("Middleware", "redis", "spec.rateLimit.redis", "Unsupported"),
        (
            "Middleware",
            "xff-source",
            "spec.rateLimit.sourceCriterion.ipStrategy.excludedIPs",
            "Unsupported",
        ),
        ("Middleware", "typo", "spec.rateLimit.burts", "InvalidMiddleware"),
    }
    bad = next(d for d in diags if d.source.name == "bad-range")
    assert "300.1.2.3/8" in bad.message and "answers 500" in bad.message
