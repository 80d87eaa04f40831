"""TraefikService policies through a real Envoy: mirroring, highestRandomWeight, server-level
sticky cookies, and their diagnostics (failover and weighted-level sticky cookies:
tests/test_service_failover_sticky.py)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.localrun import Backend
from tests.support import Stack, binomial_ok, service_yaml

pytestmark = pytest.mark.envoy


def route(host: str, service: str) -> str:
    return f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: r-{service}, namespace: default}}
spec:
  routes:
  - match: Host(`{host}`)
    services: [{{name: {service}, kind: TraefikService}}]
"""


def traefikservice(name: str, spec: str) -> str:
    return f"""apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {{name: {name}, namespace: default}}
spec:
{spec}"""


def record_hosts(b: Backend) -> list[str]:
    """The Host header of every request the backend receives."""
    hosts: list[str] = []
    handler: Any = b.server.RequestHandlerClass
    answer = handler._answer

    def recording(self: Any) -> None:
        hosts.append(self.headers.get("Host", ""))
        answer(self)

    handler.do_GET = recording
    return hosts


def settle(b: Backend, expected_at_least: int = 0, timeout: float = 5) -> int:
    """Mirrors are sent in the background: wait until the count stops moving."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = b.requests
        if now == last and now >= expected_at_least:
            return now
        last = now
        time.sleep(0.2)
    return b.requests


def diagnostics(stack: Stack) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = stack.controlplane.admin_json("/debug/diagnostics")
    return out


def test_mirroring_percent_share_and_host_unchanged(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    main, half, none = backends("main"), backends("half"), backends("none")
    hosts = record_hosts(half)
    spec = """  mirroring:
    name: s-main
    port: 80
    mirrors:
    - {name: s-half, port: 80, percent: 50}
    - {name: s-none, port: 80}
"""
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{b.name}", [b]) for b in (main, half, none)),
            "ts.yaml": traefikservice("mirror", spec),
            "ir.yaml": route("mirror.example.com", "mirror"),
        }
    )
    stack.wait_serving(lambda: stack.request(host="mirror.example.com")[0] == 200, "served")
    time.sleep(0.5)
    base_main, base_half = main.requests, settle(half)
    hosts.clear()
    n = 1000
    split = stack.split(n, host="mirror.example.com")
    assert split == {"main": n}, split  # responses come from the main service only
    got = settle(half) - base_half
    assert main.requests - base_main == n
    assert binomial_ok(got, n, 0.5), f"mirror got {got}/{n}, expected ~50%"
    assert none.requests == 0, "percent absent (0) mirrors nothing, as in Traefik"
    assert hosts and set(hosts) == {"mirror.example.com"}, set(hosts)  # no -shadow suffix


def test_mirroring_main_is_a_weighted_traefikservice(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    a, b, m = backends("a"), backends("b"), backends("m")
    wrr = traefikservice(
        "wrr",
        """  weighted:
    services: [{name: s-a, port: 80}, {name: s-b, port: 80}]
""",
    )
    mirror_ts = traefikservice(
        "wm",
        """  weighted:
    services: [{name: s-m, port: 80}]
""",
    )
    mir = traefikservice(
        "mirror",
        """  mirroring:
    name: wrr
    kind: TraefikService
    mirrors: [{name: wm, kind: TraefikService, percent: 100}]
""",
    )
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{x.name}", [x]) for x in (a, b, m)),
            "ts.yaml": "---\n".join((wrr, mirror_ts, mir)),
            "ir.yaml": route("m2.example.com", "mirror"),
        }
    )
    stack.wait_serving(lambda: stack.request(host="m2.example.com")[0] == 200, "served")
    base = settle(m)
    n = 400
    split = stack.split(n, host="m2.example.com")
    assert set(split) == {"a", "b"}, split
    assert binomial_ok(split["a"], n, 0.5), split
    assert settle(m, base + n) - base == n


def test_mirroring_bad_input_is_diagnosed_and_route_not_served(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    main, ok = backends("main"), backends("ok")
    bad_percent = traefikservice(
        "bad-percent",
        """  mirroring:
    name: s-main
    port: 80
    mirrors: [{name: s-main, port: 80, percent: 101}]
""",
    )
    unknown = traefikservice(
        "unknown",
        """  mirroring:
    name: s-main
    port: 80
    mirrors: [{name: nope, port: 80, percent: 10}]
""",
    )
    no_body = traefikservice(
        "no-body",
        """  mirroring:
    name: s-main
    port: 80
    mirrorBody: false
    mirrors: [{name: s-main, port: 80, percent: 10}]
""",
    )
    stack = make_stack(
        {
            "svc.yaml": service_yaml("s-main", [main]) + "---\n" + service_yaml("s-ok", [ok]),
            "ts.yaml": "---\n".join((bad_percent, unknown, no_body)),
            "ir.yaml": "---\n".join(
                (
                    route("bad.example.com", "bad-percent"),
                    route("unknown.example.com", "unknown"),
                    route("nobody.example.com", "no-body"),
                )
            )
            + "---\n"
            + """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: ok, namespace: default}
spec:
  routes:
  - match: Host(`ok.example.com`)
    services: [{name: s-ok, port: 80}]
""",
        }
    )
    stack.wait_serving(lambda: stack.request(host="ok.example.com")[1] == "ok", "ok served")
    for host in ("bad.example.com", "unknown.example.com", "nobody.example.com"):
        assert stack.request(host=host)[0] == 404, host  # the router is dropped, as in Traefik
    by = {(d["name"], d["field"]): d for d in diagnostics(stack)}
    assert by[("bad-percent", "spec.mirroring.mirrors[0].percent")]["reason"] == "InvalidService"
    assert by[("unknown", "spec.mirroring.mirrors[0].name")]["reason"] == "ServiceNotFound"
    assert by[("no-body", "spec.mirroring.mirrorBody")]["reason"] == "Unsupported"


def request_from(port: int, source_ip: str, host: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source_ip, 0))
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return str(resp.getheader("X-Backend", f"HTTP {resp.status}"))
    finally:
        conn.close()


def test_highest_random_weight_pins_each_client_ip_to_one_service(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    s1, s2 = backends("s1"), backends("s2")
    spec = """  highestRandomWeight:
    services:
    - {name: s-s1, port: 80}
    - {name: s-s2, port: 80}
"""
    stack = make_stack(
        {
            "svc.yaml": service_yaml("s-s1", [s1]) + "---\n" + service_yaml("s-s2", [s2]),
            "ts.yaml": traefikservice("hrw", spec),
            "ir.yaml": route("hrw.example.com", "hrw"),
        }
    )
    stack.wait_serving(lambda: stack.request(host="hrw.example.com")[0] == 200, "served")
    picked: dict[str, str] = {}
    for i in range(2, 42):
        ip = f"127.0.0.{i}"
        seen = {request_from(stack.web_port, ip, "hrw.example.com") for _ in range(8)}
        assert len(seen) == 1, f"{ip} was sent to {seen}"
        picked[ip] = seen.pop()
    counts = {name: sum(1 for v in picked.values() if v == name) for name in ("s1", "s2")}
    assert counts["s1"] > 0 and counts["s2"] > 0, counts  # different clients spread
    assert counts["s1"] + counts["s2"] == len(picked), picked


def get(port: int, host: str, cookie: str | None = None) -> tuple[str, str | None]:
    """(backend, Set-Cookie header) for one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return str(resp.getheader("X-Backend", "")), resp.getheader("Set-Cookie")
    finally:
        conn.close()


def test_server_level_sticky_cookie_pins_a_server_with_traefiks_attributes(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    a, b = backends("a"), backends("b")
    ir = """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: sticky, namespace: default}
spec:
  routes:
  - match: Host(`sticky.example.com`)
    services:
    - name: s-ab
      port: 80
      sticky:
        cookie: {name: lvl1, secure: true, httpOnly: true, sameSite: none, maxAge: 42, path: /}
  - match: Host(`default.example.com`)
    services:
    - {name: s-ab, port: 80, sticky: {cookie: {}}}
"""
    stack = make_stack({"svc.yaml": service_yaml("s-ab", [a, b]), "ir.yaml": ir})
    stack.wait_serving(lambda: stack.request(host="sticky.example.com")[0] == 200, "served")
    port = stack.web_port
    backend, set_cookie = get(port, "sticky.example.com")
    assert set_cookie is not None
    parts = [p.strip() for p in set_cookie.split(";")]
    name, _, value = parts[0].partition("=")
    assert name == "lvl1" and value
    attrs = {p.split("=")[0].lower(): p.partition("=")[2] for p in parts[1:]}
    assert attrs.get("max-age") == "42", set_cookie
    assert attrs.get("path") == "/", set_cookie
    assert "secure" in attrs and "httponly" in attrs, set_cookie
    assert attrs.get("samesite", "").lower() == "none", set_cookie
    pinned = {get(port, "sticky.example.com", f"lvl1={value}")[0] for _ in range(20)}
    assert pinned == {backend}
    # Without the cookie, round robin still reaches both servers.
    free = {get(port, "sticky.example.com")[0] for _ in range(20)}
    assert free == {"a", "b"}
    # Traefik's default name: "_" + 5 hex digits of sha1("_TRAEFIK_BACKEND_" + service).
    import hashlib

    want = "_" + hashlib.sha1(b"_TRAEFIK_BACKEND_default-s-ab-80@kubernetescrd").hexdigest()[:5]
    _, default_cookie = get(port, "default.example.com")
    assert default_cookie is not None and default_cookie.startswith(want + "="), default_cookie
