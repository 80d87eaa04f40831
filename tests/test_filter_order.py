"""Middleware order a route lists against the one filter order Envoy runs: said, not hidden."""

from __future__ import annotations

from pathlib import Path

from controlplane.cli import translate_directory
from translators.options import Options

FILES = """apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: default, labels: {kubernetes.io/service-name: app}}
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: http, port: 8080}]
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: gz, namespace: default}
spec: {compress: {}}
---
apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: limit, namespace: default}
spec: {rateLimit: {average: 10}}
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: r, namespace: default}
spec:
  routes:
  - match: Host(`envoy-order.example`)
    middlewares: [{name: limit}, {name: gz}]
    services: [{name: app, port: 80}]
  - match: Host(`other-order.example`)
    middlewares: [{name: gz}, {name: limit}]
    services: [{name: app, port: 80}]
"""


def test_an_order_envoy_cannot_honour_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FILES)
    resources, diags = translate_directory(tmp_path, Options())
    order = [d for d in diags if d.reason == "FilterOrder"]
    assert [(d.field, d.severity) for d in order] == [("spec.routes[1].middlewares", "warning")]
    assert "compressor before rate_limit" in order[0].message
    # Both routes are still served, with both filters on.
    routes = resources["routes"][0]["virtual_hosts"]
    assert sorted(vh["name"] for vh in routes) == [
        "all",
        "envoy-order.example",
        "other-order.example",
    ]
