"""Options that change translation: the default rule syntax, through the CLI as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

V2_ONLY = """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: legacy, namespace: default}
spec:
  routes:
  - match: Host(`a.example`, `b.example`)
    services: [{name: s, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: default, labels: {kubernetes.io/service-name: s}}
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: http, port: 8080}]
"""


def _translate(directory: Path, *flags: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane", "translate", str(directory), "--output", "json",
         *flags],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout)


def test_default_rule_syntax(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(V2_ONLY)
    # v3 (the default): Host takes one argument, so the route is refused.
    code, out = _translate(tmp_path)
    assert code == 1
    assert [d["reason"] for d in out["diagnostics"]] == ["InvalidRule"]  # type: ignore[index]
    # --default-rule-syntax v2 (Traefik's core.defaultRuleSyntax): two routes, one per host.
    code, out = _translate(tmp_path, "--default-rule-syntax", "v2")
    assert code == 0, out["diagnostics"]
    routes = out["resources"]["routes"][0]["virtual_hosts"]  # type: ignore[index]
    assert sorted(vh["name"] for vh in routes) == ["a.example", "all", "b.example"]
    # A route's own syntax wins over the default.
    (tmp_path / "a.yaml").write_text(
        V2_ONLY.replace("  routes:\n", "  routes:\n", 1).replace(
            "    services:", "    syntax: v3\n    services:"
        )
    )
    code, out = _translate(tmp_path, "--default-rule-syntax", "v2")
    assert code == 1
