"""TraefikService failover and weighted-level sticky cookies through a real Envoy, real backends.

Failover (Traefik 3.7): every request goes to the main service; an answer whose status is in
``errors.status`` is dropped and the request (body included) goes to the fallback. Weighted
sticky: the first answer sets Traefik's cookie (value: 16 hex digits of sha256 of the child's
name), and a request carrying it goes to that child.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.localrun import Backend
from tests.envoy_validate import validate_resources
from tests.support import Stack, binomial_ok, service_yaml

GOLDEN = Path(__file__).parent / "golden"

pytestmark = pytest.mark.envoy


def traefikservice(name: str, spec: str) -> str:
    return f"""apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {{name: {name}, namespace: default}}
spec:
{spec}"""


def route(host: str, service: str, middlewares: str = "") -> str:
    mw = f"\n    middlewares: [{middlewares}]" if middlewares else ""
    return f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: r-{host.split(".")[0]}, namespace: default}}
spec:
  routes:
  - match: Host(`{host}`){mw}
    services: [{{name: {service}, kind: TraefikService}}]
"""


def send(
    port: int,
    host: str,
    *,
    cookie: str | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, str, list[str], dict[str, Any]]:
    """One request on a fresh connection: (status, X-Backend, Set-Cookie lines, JSON echo)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": host}
        if cookie is not None:
            headers["Cookie"] = cookie
        conn.request(method, "/", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        echo: dict[str, Any] = {}
        if resp.getheader("Content-Type") == "application/json":
            echo = json.loads(data)
        return (
            resp.status,
            str(resp.getheader("X-Backend", "")),
            resp.headers.get_all("Set-Cookie") or [],
            echo,
        )
    finally:
        conn.close()


def diagnostics(stack: Stack) -> dict[tuple[str, str], dict[str, Any]]:
    found: list[dict[str, Any]] = stack.controlplane.admin_json("/debug/diagnostics")
    return {(d["name"], d["field"]): d for d in found}


def spread(port: int, host: str, n: int, cookie: str | None = None) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        status, backend, _, _ = send(port, host, cookie=cookie)
        out[backend if status == 200 else f"HTTP {status}"] += 1
    return out


# --- failover -----------------------------------------------------------------------------


def test_failover_follows_the_main_services_status(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    main, fb_a, fb_b = backends("main"), backends("fb-a"), backends("fb-b")
    fallback = traefikservice(
        "fallback",
        "  weighted:\n    services: [{name: s-fb-a, port: 80, weight: 3}, "
        "{name: s-fb-b, port: 80, weight: 1}]\n",
    )
    failover = traefikservice(
        "fo",
        """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: fallback, kind: TraefikService}
    errors: {status: ["500-503", "429"]}
""",
    )
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{b.name}", [b]) for b in (main, fb_a, fb_b)),
            "ts.yaml": fallback + "---\n" + failover,
            "ir.yaml": route("fo.example.com", "fo"),
        }
    )
    port = stack.web_port
    stack.wait_serving(lambda: send(port, "fo.example.com")[1] == "main", "failover served")
    # Healthy main: everything to it, nothing to the fallback.
    assert spread(port, "fo.example.com", 40) == {"main": 40}
    assert fb_a.requests == fb_b.requests == 0

    # The main service answers 500: every request still tries it first (as Traefik does), and
    # the answer the client sees is the fallback's, split 3:1 as its weights say.
    main.status = 500
    before = main.requests
    n = 400
    got = spread(port, "fo.example.com", n)
    assert set(got) == {"fb-a", "fb-b"}, got
    assert binomial_ok(got["fb-a"], n, 0.75), got
    assert main.requests - before == n

    # The body reaches the fallback intact when the main service's answer is dropped.
    status, backend, _, echo = send(
        port, "fo.example.com", method="POST", body=b'{"order": 42, "items": [1, 2, 3]}'
    )
    assert (status, echo["method"], echo["body"]) == (
        200,
        "POST",
        '{"order": 42, "items": [1, 2, 3]}',
    )
    assert backend in ("fb-a", "fb-b")

    # A status outside errors.status is the client's answer.
    main.status = 404
    assert {send(port, "fo.example.com")[:2] for _ in range(10)} == {(404, "main")}
    main.status = 429
    assert spread(port, "fo.example.com", 10).keys() <= {"fb-a", "fb-b"}

    # The main service recovers: everything goes back to it.
    main.status = 200
    assert spread(port, "fo.example.com", 40) == {"main": 40}


def test_failover_when_the_main_server_is_gone_and_back(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    main, fb = backends("main"), backends("fb")
    kill = killable(main)
    spec = """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: s-fb, port: 80}
    errors: {status: ["502"]}
"""
    no_502 = """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: s-fb, port: 80}
    errors: {status: ["500"]}
"""
    stack = make_stack(
        {
            "svc.yaml": service_yaml("s-main", [main]) + "---\n" + service_yaml("s-fb", [fb]),
            "ts.yaml": traefikservice("fo", spec) + "---\n" + traefikservice("fo500", no_502),
            "ir.yaml": route("fo.example.com", "fo")
            + "---\n"
            + route("no502.example.com", "fo500"),
        }
    )
    port = stack.web_port
    stack.wait_serving(lambda: send(port, "fo.example.com")[1] == "main", "failover served")
    stack.wait_serving(lambda: send(port, "no502.example.com")[1] == "main", "no502 served")
    assert spread(port, "fo.example.com", 20) == {"main": 20}

    # Connection refused: Traefik answers 502 itself, so 502 in errors.status falls back.
    main_port = main.port
    kill()
    assert spread(port, "fo.example.com", 40) == {"fb": 40}
    # Without 502 in errors.status the client gets the error, 502 as from Traefik.
    assert spread(port, "no502.example.com", 5) == {"HTTP 502": 5}

    # The main server comes back on the same address: every request goes to it again.
    back = backends_restart(main_port)
    try:
        stack.wait_serving(
            lambda: send(port, "fo.example.com")[1] == "main", "main service back", timeout=20
        )
        assert spread(port, "fo.example.com", 40) == {"main": 40}
    finally:
        back.stop()


def killable(b: Backend) -> Callable[[], None]:
    """A way to take the backend down as a dying process would: listener and every open
    connection (Envoy keeps idle connections to it) closed."""
    conns: list[socket.socket] = []
    handler: Any = b.server.RequestHandlerClass
    setup = handler.setup

    def tracking(self: Any) -> None:
        setup(self)
        conns.append(self.connection)

    handler.setup = tracking

    def kill() -> None:
        b.stop()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    return kill


def backends_restart(port: int) -> Backend:
    """A backend called main on a port that was just freed (bounded retries while the kernel
    lets go of it)."""
    for _ in range(50):
        try:
            return Backend("main", port=port).start()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} did not become free again")


def test_failover_body_limit_and_bad_input(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    main, fb, ok = backends("main"), backends("fb"), backends("ok")
    limited = """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: s-fb, port: 80}
    errors: {status: ["500-599"], maxRequestBodyBytes: 16}
"""
    no_errors = """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: s-fb, port: 80}
"""
    bad_status = """  failover:
    service: {name: s-main, port: 80}
    fallback: {name: s-fb, port: 80}
    errors: {status: ["5xx"]}
"""
    no_fallback = """  failover:
    service: {name: s-main, port: 80}
    errors: {status: ["500"]}
"""
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{b.name}", [b]) for b in (main, fb, ok)),
            "mw.yaml": "apiVersion: traefik.io/v1alpha1\nkind: Middleware\n"
            "metadata: {name: retry, namespace: default}\nspec:\n  retry: {attempts: 2}\n",
            "ts.yaml": "---\n".join(
                (
                    traefikservice("limited", limited),
                    traefikservice("no-errors", no_errors),
                    traefikservice("bad-status", bad_status),
                    traefikservice("no-fallback", no_fallback),
                    traefikservice("okts", "  weighted:\n    services: [{name: s-ok, port: 80}]\n"),
                )
            ),
            "ir.yaml": "---\n".join(
                (
                    route("limited.example.com", "limited"),
                    route("noerrors.example.com", "no-errors"),
                    route("badstatus.example.com", "bad-status"),
                    route("nofallback.example.com", "no-fallback"),
                    route("retry.example.com", "limited", "{name: retry}"),
                    route("ok.example.com", "okts"),
                )
            ),
        }
    )
    port = stack.web_port
    stack.wait_serving(lambda: send(port, "ok.example.com")[1] == "ok", "ok served")
    stack.wait_serving(lambda: send(port, "limited.example.com")[1] == "main", "limited served")

    # Traefik reads the body up to maxRequestBodyBytes before the main service sees it.
    status, backend, _, echo = send(port, "limited.example.com", method="POST", body=b"x" * 16)
    assert (status, backend, echo["body"]) == (200, "main", "x" * 16)
    before = main.requests
    assert send(port, "limited.example.com", method="POST", body=b"x" * 17)[0] == 413
    assert main.requests == before
    main.status = 503
    status, backend, _, echo = send(port, "limited.example.com", method="POST", body=b"y" * 16)
    assert (status, backend, echo["body"]) == (200, "fb", "y" * 16)

    # Each bad object: the route is not served (404 here), a diagnostic names the field.
    for host in ("noerrors", "badstatus", "nofallback", "retry"):
        assert send(port, f"{host}.example.com")[0] == 404, host
    by = diagnostics(stack)
    assert by[("no-errors", "spec.failover.errors.status")]["reason"] == "InvalidService"
    assert by[("bad-status", "spec.failover.errors.status[0]")]["reason"] == "InvalidService"
    assert by[("no-fallback", "spec.failover.fallback")]["reason"] == "InvalidObject"
    assert by[("r-retry", "spec.routes[0].middlewares")]["reason"] == "Unsupported"
    assert send(port, "ok.example.com")[1] == "ok"


# --- weighted sticky ----------------------------------------------------------------------


def value(handler: str) -> str:
    return hashlib.sha256(handler.encode()).hexdigest()[:16]


def fnv64(text: str) -> str:
    """Go's hash/fnv New64 (FNV-1), as Traefik's older sticky cookies used it."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = (h * 0x100000001B3) % 2**64 ^ byte
    return format(h, "x")


def test_weighted_sticky_cookie_pins_a_child_as_traefik_does(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    a, b, c1, c2 = backends("a"), backends("b"), backends("c1"), backends("c2")
    sticky = traefikservice(
        "wrr",
        """  weighted:
    sticky:
      cookie:
        {name: wrr, secure: true, httpOnly: true, sameSite: strict, maxAge: 60, domain: example.com}
    services: [{name: s-a, port: 80}, {name: s-b, port: 80}]
""",
    )
    # A nested TraefikService as one child: pinning it keeps its own split; default cookie name.
    nested = traefikservice(
        "outer",
        """  weighted:
    sticky: {cookie: {}}
    services: [{name: s-a, port: 80}, {name: inner, kind: TraefikService}]
""",
    )
    inner = traefikservice(
        "inner",
        "  weighted:\n    sticky: {cookie: {name: in}}\n"
        "    services: [{name: s-c1, port: 80}, {name: s-c2, port: 80}]\n",
    )
    bad = traefikservice(
        "bad",
        "  weighted:\n    sticky: {cookie: {maxAge: soon}}\n"
        "    services: [{name: s-a, port: 80}]\n",
    )
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{x.name}", [x]) for x in (a, b, c1, c2)),
            "ts.yaml": "---\n".join((sticky, nested, inner, bad)),
            "ir.yaml": "---\n".join(
                (
                    route("wrr.example.com", "wrr"),
                    route("outer.example.com", "outer"),
                    route("bad.example.com", "bad"),
                )
            ),
        }
    )
    port = stack.web_port
    stack.wait_serving(lambda: send(port, "wrr.example.com")[0] == 200, "sticky served")
    values = {"a": value("default-s-a-80"), "b": value("default-s-b-80")}

    # The first answer sets the cookie naming the child that answered, attributes as Go writes.
    status, first, cookies, _ = send(port, "wrr.example.com")
    assert status == 200 and first in values
    assert cookies == [
        f"wrr={values[first]}; Path=/; Domain=example.com; Max-Age=60; HttpOnly; Secure; "
        "SameSite=Strict"
    ]

    # With the cookie, every request lands on the same child and no new cookie is set.
    for _ in range(30):
        status, backend, cookies, _ = send(port, "wrr.example.com", cookie=f"wrr={values[first]}")
        assert (status, backend, cookies) == (200, first, [])
    other = "b" if first == "a" else "a"
    assert spread(port, "wrr.example.com", 20, f"x=1; wrr={values[other]}; y=2") == {other: 20}
    # Go reads the first cookie of a name: the second one does not count.
    two = f"wrr={values[other]}; wrr={values[first]}"
    assert spread(port, "wrr.example.com", 10, two) == {other: 10}
    assert spread(port, "wrr.example.com", 10, f'wrr="{values[first]}"') == {first: 10}

    # No cookie, or one naming nothing: the weighted pick (50/50), each answer setting its cookie.
    n = 200
    picks: Counter[str] = Counter()
    for i in range(n):
        jar = None if i % 2 else "wrr=0123456789abcdef"
        status, backend, cookies, _ = send(port, "wrr.example.com", cookie=jar)
        assert status == 200 and len(cookies) == 1, cookies
        assert cookies[0].startswith(f"wrr={values[backend]};"), (backend, cookies)
        picks[backend] += 1
    assert binomial_ok(picks["a"], n, 0.5), picks

    # A value older Traefik versions wrote still pins, and the cookie is rewritten.
    for legacy in ("default-s-b-80", fnv64("default-s-b-80"), fnv64(fnv64("default-s-b-80"))):
        status, backend, cookies, _ = send(port, "wrr.example.com", cookie=f"wrr={legacy}")
        assert (status, backend) == (200, "b"), legacy
        assert cookies and cookies[0].startswith(f"wrr={values['b']};"), cookies

    # Default name: "_" + 5 hex of sha1("_TRAEFIK_BACKEND_" + the TraefikService's name). The
    # child "inner" is sticky too, with its own cookie: each level pins on its own, as in Traefik.
    stack.wait_serving(lambda: send(port, "outer.example.com")[0] == 200, "outer served")
    name = "_" + hashlib.sha1(b"_TRAEFIK_BACKEND_default-outer@kubernetescrd").hexdigest()[:5]
    outer = {"a": value("default-s-a-80"), "inner": value("default-inner")}
    inner_values = {"c1": value("default-s-c1-80"), "c2": value("default-s-c2-80")}
    # No cookie: the outer pick sets its cookie, and when it picks "inner", so does inner's pick
    # (outer first, as Traefik writes them).
    seen: set[str] = set()
    for _ in range(40):
        status, backend, cookies, _ = send(port, "outer.example.com")
        assert status == 200
        seen.add(backend)
        if backend == "a":
            assert cookies == [f"{name}={outer['a']}; Path=/"]
        else:
            assert cookies == [
                f"{name}={outer['inner']}; Path=/",
                f"in={inner_values[backend]}; Path=/",
            ]
    assert seen == {"a", "c1", "c2"}, seen
    # Pinned to "inner" only: inner's weighted pick, which sets inner's cookie alone.
    jar = f"{name}={outer['inner']}"
    got: Counter[str] = Counter()
    for _ in range(200):
        status, backend, cookies, _ = send(port, "outer.example.com", cookie=jar)
        assert cookies == [f"in={inner_values[backend]}; Path=/"], (backend, cookies)
        got[backend] += 1
    assert set(got) == {"c1", "c2"} and binomial_ok(got["c1"], 200, 0.5), got
    # Pinned at both levels, in either order of the cookies.
    for both in (f"{jar}; in={inner_values['c2']}", f"in={inner_values['c2']}; {jar}"):
        for _ in range(10):
            assert send(port, "outer.example.com", cookie=both)[1:3] == ("c2", [])
    # Inner's cookie alone does not reach past the outer pick: the outer level still chooses.
    got = spread(port, "outer.example.com", 60, f"in={inner_values['c1']}")
    assert set(got) == {"a", "c1"}, got

    # A cookie field of the wrong type: that route is not served, the diagnostic names it.
    assert send(port, "bad.example.com")[0] == 404
    d = diagnostics(stack)[("bad", "spec.weighted.sticky.cookie.maxAge")]
    assert (d["severity"], d["reason"]) == ("error", "InvalidObject")


@pytest.mark.parametrize("case", ["service_failover", "service_weighted_sticky"])
def test_golden_configuration_passes_envoy_validate(case: str, tmp_path: Path) -> None:
    """The two golden cases' Envoy resources (priorities, weights, the retry priority, cookie
    regexes, per-backend headers) as Envoy itself judges them."""
    doc = yaml.safe_load((GOLDEN / f"{case}.envoy.yaml").read_text())
    validate_resources(doc, tmp_path)
