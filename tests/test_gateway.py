"""End to end: YAML in a watched directory → switchman serve → a real Envoy → real backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from controlplane.localrun import Backend, ControlPlane
from tests.support import Stack, binomial_ok, service_yaml

pytestmark = pytest.mark.envoy


def weighted(name: str, weights: dict[str, int | None], group: str = "traefik.io") -> str:
    services = "\n".join(
        f"    - {{name: {svc}, port: 80{'' if w is None else f', weight: {w}'}}}"
        for svc, w in weights.items()
    )
    return f"""apiVersion: {group}/v1alpha1
kind: TraefikService
metadata: {{name: {name}, namespace: default}}
spec:
  weighted:
    services:
{services}
"""


def ingressroute(
    name: str, routes: list[tuple[str, str, str]], group: str = "traefik.io", extra: str = ""
) -> str:
    """routes: (match, service name, kind) triples."""
    body = "\n".join(
        f"""  - match: "{m}"
    services: [{{name: {svc}, kind: {kind}{", port: 80" if kind == "Service" else ""}}}]"""
        for m, svc, kind in routes
    )
    return f"""apiVersion: {group}/v1alpha1
kind: IngressRoute
metadata: {{name: {name}, namespace: default}}
spec:
{extra}  routes:
{body}
"""


def canary_files(v1: Backend, v2: Backend, w1: int, w2: int) -> dict[str, str]:
    return {
        "services.yaml": service_yaml("app-v1", [v1]) + "---\n" + service_yaml("app-v2", [v2]),
        "traefikservice.yaml": weighted("app", {"app-v1": w1, "app-v2": w2}),
        "ingressroute.yaml": ingressroute(
            "app", [("Host(`app.example.com`)", "app", "TraefikService")]
        ),
    }


def serving(stack: Stack, host: str, backend: str, path: str = "/") -> Callable[[], bool]:
    return lambda: stack.request(path, host=host)[1] == backend


def test_weighted_90_10_split_is_binomial(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    v1, v2 = backends("v1"), backends("v2")
    stack = make_stack(canary_files(v1, v2, 90, 10))
    stack.wait_serving(lambda: stack.request(host="app.example.com")[0] == 200, "route served")
    n = 2000
    split = stack.split(n, host="app.example.com")
    assert set(split) == {"v1", "v2"}, split
    assert binomial_ok(split["v2"], n, 0.10), f"v2 got {split['v2']}/{n}, expected ~10%"


def test_nested_traefikservice_weights_multiply_out(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    # outer: inner (weight 1) and v3 (weight 2); inner: v1 (weight 1), v2 (absent = 1).
    # Shares: v1 1/6, v2 1/6, v3 2/3. A weight-0 child (v4) is removed.
    v1, v2, v3, v4 = (backends(n) for n in ("v1", "v2", "v3", "v4"))
    svcs = "---\n".join(service_yaml(f"app-{b.name}", [b]) for b in (v1, v2, v3, v4))
    inner = weighted("inner", {"app-v1": 1, "app-v2": None})
    outer = """apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {name: outer, namespace: default}
spec:
  weighted:
    services:
    - {name: inner, kind: TraefikService, weight: 1}
    - {name: app-v3, port: 80, weight: 2}
    - {name: app-v4, port: 80, weight: 0}
"""
    stack = make_stack(
        {
            "svc.yaml": svcs,
            "ts.yaml": inner + "---\n" + outer,
            "ir.yaml": ingressroute(
                "app", [("Host(`nested.example.com`)", "outer", "TraefikService")]
            ),
        }
    )
    stack.wait_serving(lambda: stack.request(host="nested.example.com")[0] == 200, "route served")
    n = 3000
    split = stack.split(n, host="nested.example.com")
    assert "v4" not in split
    for name, p in (("v1", 1 / 6), ("v2", 1 / 6), ("v3", 2 / 3)):
        assert binomial_ok(split[name], n, p), (
            f"{name}: {split[name]}/{n}, expected {p:.3f}; {split}"
        )


def test_both_api_groups_and_traefik_io_wins(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    old, new, legacy = backends("old"), backends("new"), backends("legacy")
    files = {
        "svc.yaml": "---\n".join(service_yaml(f"s-{b.name}", [b]) for b in (old, new, legacy)),
        # Same kind/namespace/name in both groups: Traefik keeps the traefik.io object.
        "dup-containo.yaml": ingressroute(
            "dup", [("Host(`dup.example.com`)", "s-old", "Service")], group="traefik.containo.us"
        ),
        "dup-io.yaml": ingressroute("dup", [("Host(`dup.example.com`)", "s-new", "Service")]),
        # An object only in the legacy group is served.
        "legacy.yaml": ingressroute(
            "legacy",
            [("Host(`legacy.example.com`)", "s-legacy", "Service")],
            group="traefik.containo.us",
        ),
    }
    stack = make_stack(files)
    stack.wait_serving(serving(stack, "legacy.example.com", "legacy"), "legacy group served")
    assert stack.split(50, host="dup.example.com") == {"new": 50}
    diags = stack.controlplane.admin_json("/debug/diagnostics")
    assert any(d["reason"] == "Shadowed" and d["file"] == "dup-containo.yaml" for d in diags), diags


def test_host_and_path_priorities_follow_traefik(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    names = ("host", "api", "catchall", "long", "explicit")
    bs = {n: backends(n) for n in names}
    routes = [
        ("Host(`shop.example.com`)", "s-host", "Service"),  # 24
        ("Host(`shop.example.com`) && PathPrefix(`/api`)", "s-api", "Service"),  # 46
        ("PathPrefix(`/`)", "s-catchall", "Service"),  # 15
        # Host-less but longer than the Host rule: wins across hosts, as in Traefik.
        ("PathPrefix(`/a-long-path-prefix-that-wins`)", "s-long", "Service"),  # 45
    ]
    ir = ingressroute("prio", routes)
    explicit = """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: explicit, namespace: default}
spec:
  routes:
  - match: PathPrefix(`/x`)
    priority: 1000
    services: [{name: s-explicit, port: 80}]
"""
    stack = make_stack(
        {
            "svc.yaml": "---\n".join(service_yaml(f"s-{n}", [b]) for n, b in bs.items()),
            "ir.yaml": ir,
            "explicit.yaml": explicit,
        }
    )
    stack.wait_serving(serving(stack, "shop.example.com", "host"), "routes served")
    cases = [
        ("shop.example.com", "/", "host"),
        ("SHOP.example.com:8000", "/", "host"),  # case-insensitive, port ignored
        ("shop.example.com.", "/", "host"),  # trailing dot ignored
        ("shop.example.com", "/api/v1", "api"),
        ("shop.example.com", "/apiv2", "api"),  # PathPrefix is not segment-aware
        ("other.example.com", "/api", "catchall"),
        ("shop.example.com", "/a-long-path-prefix-that-wins/x", "long"),
        ("shop.example.com", "/x/y", "explicit"),  # explicit priority beats length
        ("other.example.com", "/x", "explicit"),
    ]
    for host, path, want in cases:
        status, got, _ = stack.request(path, host=host)
        assert (status, got) == (200, want), f"{host}{path}: got {status} {got}, want {want}"


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_live_edit_90_10_to_0_100_without_a_failed_request(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], protocol: str
) -> None:
    v1, v2 = backends("v1"), backends("v2")
    stack = make_stack(canary_files(v1, v2, 90, 10), protocol=protocol)
    stack.wait_serving(lambda: stack.request(host="app.example.com")[0] == 200, "route served")
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        from tests.support import Stack as _S

        own = _S(stack.config, stack.workdir, stack.controlplane, stack.envoy, stack.web_port)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, backend, _ = own.request(host="app.example.com")
            except OSError as exc:
                status, backend = 0, repr(exc)
            results.append((time.monotonic(), status, backend))
        own.close()

    t = threading.Thread(target=client)
    t.start()
    time.sleep(1.0)
    edited_at = time.monotonic()
    stack.write("traefikservice.yaml", weighted("app", {"app-v1": 0, "app-v2": 100}))
    time.sleep(2.5)
    stop.set()
    t.join(10)
    failed = [r for r in results if r[1] != 200]
    assert not failed, f"{len(failed)} failed requests, first: {failed[:3]}"
    before = [b for ts, _, b in results if ts < edited_at]
    after = [b for ts, _, b in results if ts > edited_at + 1.0]
    assert {"v1", "v2"} <= set(before)
    assert after and set(after) == {"v2"}, (
        f"v1 still served more than 1 s after the edit: {after.count('v1')}"
    )
    last_v1 = max((ts for ts, _, b in results if b == "v1"), default=edited_at)
    print(
        f"edit applied within {max(0.0, last_v1 - edited_at) * 1000:.0f} ms; "
        f"{len(results)} requests, 0 failed"
    )


def test_invalid_file_while_serving_keeps_everything_else(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    v1, v2 = backends("v1"), backends("v2")
    stack = make_stack(canary_files(v1, v2, 100, 0))
    stack.wait_serving(serving(stack, "app.example.com", "v1"), "route served")
    stack.write(
        "broken.yaml", "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\nmetadata: {name: x\n"
    )
    # The file that stops parsing keeps its last good objects: break the TraefikService file.
    stack.write("traefikservice.yaml", "apiVersion: traefik.io/v1alpha1\nkind: [unclosed\n")

    def reported() -> bool:
        files = {d["file"] for d in stack.controlplane.admin_json("/debug/diagnostics")}
        return {"broken.yaml", "traefikservice.yaml"} <= files

    stack.wait_serving(reported, "both errors reported")
    diags = stack.controlplane.admin_json("/debug/diagnostics")
    broken = next(d for d in diags if d["file"] == "broken.yaml")
    assert broken["reason"] == "InvalidYAML" and broken["line"] == 4, broken
    ts = next(d for d in diags if d["file"] == "traefikservice.yaml")
    assert "last good objects" in ts["message"], ts
    assert stack.split(50, host="app.example.com") == {"v1": 50}
    # Fixing the file applies the new content.
    stack.write("traefikservice.yaml", weighted("app", {"app-v1": 0, "app-v2": 1}))
    stack.wait_serving(serving(stack, "app.example.com", "v2"), "fixed file applied")
    # Deleting a file removes its objects: the route loses its TraefikService → 404.
    (stack.config / "traefikservice.yaml").unlink()
    stack.wait_serving(lambda: stack.request(host="app.example.com")[0] == 404, "route removed")


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_controlplane_killed_and_restarted_envoy_serves_throughout(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], protocol: str
) -> None:
    v1, v2 = backends("v1"), backends("v2")
    stack = make_stack(canary_files(v1, v2, 100, 0), protocol=protocol)
    stack.wait_serving(serving(stack, "app.example.com", "v1"), "route served")
    stack.controlplane.kill()
    # Envoy keeps its last config while the control plane is gone.
    assert stack.split(100, host="app.example.com") == {"v1": 100}
    stack.write("traefikservice.yaml", weighted("app", {"app-v1": 0, "app-v2": 1}))
    assert stack.split(20, host="app.example.com") == {"v1": 20}
    restarted = ControlPlane(
        stack.config, stack.workdir, {"web": stack.web_port}, xds_port=stack.controlplane.xds_port
    ).start()
    try:
        stack.wait_serving(serving(stack, "app.example.com", "v2"), "Envoy resynced", timeout=40)
        assert stack.split(50, host="app.example.com") == {"v2": 50}
        nodes = restarted.admin_json("/debug/nodes")
        assert [n["node_id"] for n in nodes] == ["gateway-1"]
    finally:
        restarted.stop()


def test_forwarded_headers_status_codes_and_pass_host_header(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    up = backends("up")
    down = Backend("down")  # bound, then closed: connections to it are refused
    down.server.server_close()
    files = {
        "svc.yaml": service_yaml("up", [up]) + "---\n" + service_yaml("down", [down]),
        "ir.yaml": """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: h, namespace: default}
spec:
  routes:
  - match: Host(`h.example.com`) && PathPrefix(`/keep`)
    services: [{name: up, port: 80}]
  - match: Host(`h.example.com`) && PathPrefix(`/rewrite`)
    services: [{name: up, port: 80, passHostHeader: false}]
  - match: Host(`h.example.com`) && PathPrefix(`/down`)
    services: [{name: down, port: 80}]
""",
    }
    stack = make_stack(files)
    stack.wait_serving(serving(stack, "h.example.com:8080", "up", "/keep"), "route served")
    status, _, echo = stack.request(
        "/keep",
        host="h.example.com:8080",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Real-Ip": "6.6.6.6"},
    )
    headers = {k.lower(): v for k, v in echo["headers"]}  # type: ignore[union-attr]
    assert status == 200
    # Traefik trusts no forwarded headers by default: the client's are replaced, not appended to.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "h.example.com:8080"
    assert headers["x-forwarded-port"] == str(stack.web_port)
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-server"]
    assert headers["host"] == "h.example.com:8080"  # passHostHeader defaults to true
    _, _, echo = stack.request("/rewrite", host="h.example.com")
    rewritten = {k.lower(): v for k, v in echo["headers"]}  # type: ignore[union-attr]
    assert rewritten["host"] == f"127.0.0.1:{up.port}"  # passHostHeader: false → the server
    # A backend that refuses connections: Traefik answers 502 (Envoy would say 503).
    assert stack.request("/down", host="h.example.com")[0] == 502
    # No matching router: Traefik's 404 and body.
    status, _, _ = stack.request("/", host="nobody.example.com")
    assert status == 404
