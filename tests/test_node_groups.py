"""Node groups: Envoys that need the same config share one snapshot, translated once.

A real control plane with two entry points and a group per entry point (``--node-group``), and
real Envoys whose node cluster names their group: each gets only its group's listener, an edit
is translated once whatever the number of Envoys, and /debug and /metrics show the groups.
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path

import pytest

from controlplane.localrun import Backend, ControlPlane, Envoy, free_port, wait_for
from tests.support import service_yaml

pytestmark = pytest.mark.envoy


def _routes(backend: str) -> str:
    return f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: public, namespace: default}}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`app.example.com`)
    services: [{{name: {backend}, port: 80}}]
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: internal, namespace: default}}
spec:
  entryPoints: [internal]
  routes:
  - match: PathPrefix(`/`)
    services: [{{name: {backend}, port: 80}}]
"""


def _get(port: int, host: str = "app.example.com") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return resp.status, body
    except OSError:
        return 0, ""
    finally:
        conn.close()


def _translations(cp: ControlPlane) -> float:
    _, body = cp.admin("/metrics")
    m = re.search(r'^switchman_translations_total\{result="ok"\} (\S+)$', body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_each_group_gets_its_entry_points_and_a_change_is_translated_once(
    tmp_path: Path,
) -> None:
    one, two = Backend("one").start(), Backend("two").start()
    config = tmp_path / "config"
    config.mkdir()
    (config / "svc.yaml").write_text(
        service_yaml("one", [one]) + "---\n" + service_yaml("two", [two])
    )
    (config / "routes.yaml").write_text(_routes("one"))
    web, internal = free_port(), free_port()
    cp = ControlPlane(
        config,
        tmp_path,
        {"web": web, "internal": internal},
        extra_args=["--node-group", "edge=web", "--node-group", "mesh=internal"],
    )
    envoys: list[Envoy] = []
    try:
        cp.start()
        edge = Envoy(cp.xds_port, tmp_path, node_id="edge-1", node_cluster="edge").start()
        envoys.append(edge)
        mesh = [
            Envoy(cp.xds_port, tmp_path, node_id=f"mesh-{k}", node_cluster="mesh").start()
            for k in (1, 2)
        ]
        envoys.extend(mesh)
        wait_for(lambda: _get(web)[0] == 200, 20, "the edge Envoy serves web")
        wait_for(lambda: _get(internal)[0] == 200, 20, "the mesh Envoys serve internal")
        # Each Envoy holds only its group's listener.
        assert "internal" not in edge.admin("/listeners")[1].decode()
        for e in mesh:
            listed = e.admin("/listeners")[1].decode()
            assert "internal" in listed and "web::" not in listed
        # One edit: translated once, reaching both groups.
        before = _translations(cp)
        (config / "routes.yaml").write_text(_routes("two"))
        wait_for(lambda: '"two"' in _get(web)[1], 20, "edge moved to backend two")
        wait_for(lambda: '"two"' in _get(internal)[1], 20, "mesh moved to backend two")
        assert _translations(cp) - before == 1
        # /debug/config per group, and the groups in /debug/nodes and /metrics.
        edge_cfg = cp.admin_json("/debug/config?group=edge")
        assert [x["name"] for x in edge_cfg["resources"]["Listener"]["items"]] == ["web"]
        mesh_cfg = cp.admin_json("/debug/config?group=mesh")
        assert [x["name"] for x in mesh_cfg["resources"]["Listener"]["items"]] == ["internal"]
        default_cfg = cp.admin_json("/debug/config")
        assert sorted(x["name"] for x in default_cfg["resources"]["Listener"]["items"]) == [
            "internal",
            "web",
        ]
        status, _ = cp.admin("/debug/config?group=nope")
        assert status == 404
        groups = {n["node_id"]: n["group"] for n in cp.admin_json("/debug/nodes")}
        assert groups == {"edge-1": "edge", "mesh-1": "mesh", "mesh-2": "mesh"}
        metrics = cp.admin("/metrics")[1].decode()
        assert re.search(r'switchman_xds_proxies\{[^}]*group="mesh"[^}]*\} 2\.0', metrics)
        assert re.search(r'switchman_snapshot_bytes\{group="edge"\} [1-9]', metrics)
    finally:
        for e in envoys:
            e.stop()
        cp.stop()
        one.stop()
        two.stop()
