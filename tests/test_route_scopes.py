"""``--route-scopes host``: one RouteConfiguration per host behind scoped RDS, through a real
Envoy, over both xDS protocols.

What a request sees must be what it sees without scopes (and in Traefik): each host's routes in
priority order, the port and a trailing dot ignored, unknown hosts 404; an edit to one host's
route re-sends that host's table only; a host-less route turns the entry point back into one
table (with a warning) without a failed request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.localrun import Backend
from tests.support import Stack, service_yaml
from tests.test_gateway import ingressroute

pytestmark = pytest.mark.envoy

SCOPES = ["--route-scopes", "host"]


def files(a: Backend, b: Backend, hosts: int = 3) -> dict[str, str]:
    routes = [(f"Host(`h{i}.example.com`)", "app-a", "Service") for i in range(hosts)]
    routes.append(("Host(`h0.example.com`) && PathPrefix(`/b`)", "app-b", "Service"))
    return {
        "services.yaml": service_yaml("app-a", [a]) + "---\n" + service_yaml("app-b", [b]),
        "ingressroute.yaml": ingressroute("hosts", routes),
    }


def served_by(stack: Stack, host: str, backend: str, path: str = "/") -> Callable[[], bool]:
    return lambda: stack.request(path, host=host)[1] == backend


def route_configs(stack: Stack) -> dict[str, Any]:
    """Envoy's RouteConfigurations by name (the RDS part of its config dump)."""
    status, body = stack.envoy.admin("/config_dump?resource=dynamic_route_configs")
    assert status == 200, body
    return {c["route_config"]["name"]: c for c in json.loads(body)["configs"]}


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_scoped_hosts_serve_like_one_table_and_an_edit_resends_one_host(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], protocol: str
) -> None:
    a, b = backends("a"), backends("b")
    stack = make_stack(files(a, b), extra_args=SCOPES, protocol=protocol)
    stack.wait_serving(served_by(stack, "h2.example.com", "a"), "scoped routes served")
    # Priority inside a host (the longer rule first), the port and a trailing dot ignored.
    assert stack.request("/b/x", host="h0.example.com")[1] == "b"
    assert stack.request("/x", host="h0.example.com:8080")[1] == "a"
    assert stack.request("/b", host="h0.example.com.")[1] == "b"
    assert stack.request("/b", host="h1.example.com")[1] == "a"
    status, _, _ = stack.request("/", host="other.example.com")
    assert status == 404
    # The scope header is the control plane's own: it never reaches the backend.
    _, _, echo = stack.request("/", host="h1.example.com", headers={"X-Switchman-Scope": "x"})
    headers = {k.lower(): v for k, v in echo["headers"]}  # type: ignore[union-attr]
    assert "x-switchman-scope" not in headers and headers["x-forwarded-port"], headers
    tables = route_configs(stack)
    assert {"web/h0.example.com", "web/h1.example.com", "web/h2.example.com"} <= set(tables)
    before = {n: c["version_info"] for n, c in tables.items()}

    # Edit one host's route: only that host's table changes in Envoy.
    text = files(a, b)["ingressroute.yaml"].replace(
        "Host(`h0.example.com`) && PathPrefix(`/b`)", "Host(`h0.example.com`) && PathPrefix(`/c`)"
    )
    stack.write("ingressroute.yaml", text)
    stack.wait_serving(served_by(stack, "h0.example.com", "b", "/c"), "edited host served")
    after = {n: c["version_info"] for n, c in route_configs(stack).items()}
    changed = {n for n in after if after[n] != before.get(n)}
    assert changed == {"web/h0.example.com"}, changed
    assert stack.request("/b", host="h0.example.com")[1] == "a"

    # A new host gets a scope; a removed host's scope goes (404, as for any unknown host).
    stack.write("ingressroute.yaml", files(a, b, hosts=5)["ingressroute.yaml"])
    stack.wait_serving(served_by(stack, "h4.example.com", "a"), "new host served")
    stack.write("ingressroute.yaml", files(a, b, hosts=2)["ingressroute.yaml"])
    stack.wait_serving(
        lambda: stack.request(host="h4.example.com")[0] == 404, "removed host unserved"
    )
    assert stack.request(host="h1.example.com")[1] == "a"


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_a_hostless_route_turns_scoping_off_with_a_warning_and_no_failed_request(
    backends: Callable[[str], Backend], make_stack: Callable[..., Stack], protocol: str
) -> None:
    a, b = backends("a"), backends("b")
    stack = make_stack(files(a, b), extra_args=SCOPES, protocol=protocol)
    stack.wait_serving(served_by(stack, "h1.example.com", "a"), "scoped routes served")
    results: list[int] = []
    stop = threading.Event()

    def client() -> None:
        own = Stack(stack.config, stack.workdir, stack.controlplane, stack.envoy, stack.web_port)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                results.append(own.request(host="h1.example.com")[0])
            except OSError:
                results.append(0)
        own.close()

    t = threading.Thread(target=client)
    t.start()
    routes = [(f"Host(`h{i}.example.com`)", "app-a", "Service") for i in range(3)]
    routes.append(("PathPrefix(`/any`)", "app-b", "Service"))
    stack.write("ingressroute.yaml", ingressroute("hosts", routes))
    stack.wait_serving(served_by(stack, "unknown.example.com", "b", "/any"), "host-less route")

    def warned() -> bool:
        diags = stack.controlplane.admin_json("/debug/diagnostics")
        return any(d["reason"] == "Unscoped" for d in diags)

    stack.wait_serving(warned, "Unscoped warning")
    diag = next(
        d for d in stack.controlplane.admin_json("/debug/diagnostics") if d["reason"] == "Unscoped"
    )
    assert diag["severity"] == "warning" and diag["field"] == "spec.routes[3].match", diag
    # Back to host-only routes: scoped again. (A connection opened before keeps its listener
    # configuration until Envoy drains it, so each check opens a new one.)
    stack.write("ingressroute.yaml", files(a, b)["ingressroute.yaml"])

    def unknown_host_404() -> bool:
        stack.close()
        return stack.request("/any", host="unknown.example.com")[0] == 404

    stack.wait_serving(unknown_host_404, "scoped again")
    time.sleep(0.5)
    stop.set()
    t.join(10)
    import itertools

    runs = [(k, len(list(g))) for k, g in itertools.groupby(results)]
    assert results and all(s == 200 for s in results), (
        f"{sum(s != 200 for s in results)} of {len(results)} requests failed: {runs[:20]}"
    )


def test_route_scopes_flag_is_checked_and_reaches_the_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from controlplane.cli import _options, build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--config-dir=x", "--route-scopes=hosts"])
    assert "--route-scopes" in capsys.readouterr().err
    args = build_parser().parse_args(["translate", "x", "--route-scopes", "host"])
    assert _options(args).route_scopes == "host"
    assert _options(build_parser().parse_args(["translate", "x"])).route_scopes == "off"
