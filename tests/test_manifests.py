"""manifests/ agrees with itself and with the code.

No cluster runs where the tests run, so the manifests are checked statically: they parse, the
namespace is one, the Envoy bootstrap is what ``switchman bootstrap`` prints today, the control
plane's arguments are accepted by its CLI, the ports line up (Deployment args, container ports,
Services, the bootstrap's xDS address), and the example configuration translates cleanly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.bootstrap import build_bootstrap, render_bootstrap
from controlplane.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "switchman"
# The arguments the bootstrap in manifests/envoy-gateway.yaml was generated with (its header).
BOOTSTRAP_ARGS = (
    "bootstrap",
    "--xds-address", "switchman.switchman.svc.cluster.local:18000",
    "--node-id", "gateway",
    "--node-cluster", "gateway",
    "--admin-address", "127.0.0.1:9901",
)  # fmt: skip


def _switchman() -> list[str]:
    """The installed console script when there is one, else the module (same code)."""
    script = Path(sys.executable).with_name("switchman")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controlplane"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_switchman(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.name}: no documents"
        for doc in docs:
            assert isinstance(doc, dict), f"{path.name}: {doc!r} is not an object"
            out.append(doc)
    return out


def _get(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's target port, resolving a container port name."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in by_name, f"no container port named {port!r}"
    return int(by_name[port])


def _target_ports(service: dict[str, Any], deployment: dict[str, Any]) -> dict[str, int]:
    """Service port name → the container port it reaches."""
    container = _container(deployment)
    return {
        p["name"]: _port_number(container, p.get("targetPort", p["port"]))
        for p in service["spec"]["ports"]
    }


@pytest.fixture(scope="module")
def serve_args(objects: list[dict[str, Any]]) -> argparse.Namespace:
    args = _container(_get(objects, "Deployment", "switchman"))["args"]
    assert all(isinstance(a, str) for a in args), "quote every argument: YAML must not retype it"
    return build_parser().parse_args(args)


@pytest.fixture(scope="module")
def bootstrap_text(objects: list[dict[str, Any]]) -> str:
    text = _get(objects, "ConfigMap", "envoy-gateway-bootstrap")["data"]["bootstrap.yaml"]
    assert isinstance(text, str)
    return text


# -- shape ------------------------------------------------------------------------------------


def test_every_manifest_parses_and_names_itself(objects: list[dict[str, Any]]) -> None:
    assert {p.name for p in MANIFESTS.glob("*.yaml")} == {
        "namespace.yaml",
        "switchman.yaml",
        "envoy-gateway.yaml",
    }
    for obj in objects:
        assert isinstance(obj.get("apiVersion"), str) and obj["apiVersion"], obj
        assert isinstance(obj.get("kind"), str) and obj["kind"], obj
        assert isinstance(obj.get("metadata", {}).get("name"), str), obj


def test_one_namespace(objects: list[dict[str, Any]]) -> None:
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    for obj in objects:
        if obj["kind"] != "Namespace":
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            assert obj["metadata"].get("namespace") == NAMESPACE, where


def test_references_resolve(objects: list[dict[str, Any]]) -> None:
    """Selectors pick their Deployment's pods; mounted ConfigMaps and the ServiceAccount exist."""
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for dep in deployments:
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for volume in pod["spec"].get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
        if "serviceAccountName" in pod["spec"]:
            assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in names
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        matching = [
            d
            for d in deployments
            if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"Service/{svc['metadata']['name']} selects {len(matching)}"


def test_containers_are_locked_down(objects: list[dict[str, Any]]) -> None:
    for dep in (o for o in objects if o["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = _container(dep)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]


# -- the control plane ------------------------------------------------------------------------


def test_control_plane_args_are_accepted(serve_args: argparse.Namespace) -> None:
    assert serve_args.command == "serve"
    assert serve_args.xds_address == ("0.0.0.0", 18000)
    assert serve_args.admin_address == ("0.0.0.0", 9080)
    entrypoints = [(e.name, e.address, e.port) for e in serve_args.entrypoint]
    assert entrypoints == [("web", "0.0.0.0", 8000)]


def test_config_dir_is_the_mounted_configmap(
    objects: list[dict[str, Any]], serve_args: argparse.Namespace
) -> None:
    dep = _get(objects, "Deployment", "switchman")
    mounts = {m["name"]: m for m in _container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, m in mounts.items() if Path(m["mountPath"]) == serve_args.config_dir]
    assert volumes[name]["configMap"]["name"] == "switchman-config"


def test_probes_use_the_admin_port(
    objects: list[dict[str, Any]], serve_args: argparse.Namespace
) -> None:
    container = _container(_get(objects, "Deployment", "switchman"))
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert _port_number(container, get["port"]) == serve_args.admin_address[1]


def test_switchman_service_ports_match_the_args(
    objects: list[dict[str, Any]], serve_args: argparse.Namespace
) -> None:
    svc = _get(objects, "Service", "switchman")
    targets = _target_ports(svc, _get(objects, "Deployment", "switchman"))
    assert targets == {"grpc": serve_args.xds_address[1], "admin": serve_args.admin_address[1]}


def test_example_configuration_translates(
    objects: list[dict[str, Any]], serve_args: argparse.Namespace, tmp_path: Path
) -> None:
    data = _get(objects, "ConfigMap", "switchman-config")["data"]
    assert data and all(k.endswith((".yaml", ".yml", ".json")) for k in data)
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    flags = [
        x for e in serve_args.entrypoint for x in ("--entrypoint", f"{e.name}={e.address}:{e.port}")
    ]
    proc = _run("translate", str(tmp_path), "--output", "json", *flags)
    assert proc.returncode == 0, proc.stderr
    out = yaml.safe_load(proc.stdout)
    assert out["diagnostics"] == [], out["diagnostics"]
    assert out["resources"]["routes"], "the example routes nothing"
    clusters = {c["name"] for c in out["resources"]["clusters"]}
    assert {"demo/app-v1/80", "demo/app-v2/80"} <= clusters


# -- the gateway ------------------------------------------------------------------------------


def test_bootstrap_is_up_to_date(bootstrap_text: str) -> None:
    proc = _run(*BOOTSTRAP_ARGS)
    assert proc.returncode == 0, proc.stderr
    regenerate = "regenerate it with the command in the header of manifests/envoy-gateway.yaml"
    assert bootstrap_text == proc.stdout, f"the bootstrap is stale: {regenerate}"
    # And through the library, the way the CLI builds it from these arguments.
    args = build_parser().parse_args(BOOTSTRAP_ARGS)
    (xhost, xport), (ahost, aport) = args.xds_address, args.admin_address
    expected = build_bootstrap(
        xds_host=xhost,
        xds_port=xport,
        node_id=args.node_id,
        node_cluster=args.node_cluster,
        admin_host=ahost,
        admin_port=aport,
    )
    assert yaml.safe_load(bootstrap_text) == expected
    assert bootstrap_text == render_bootstrap(expected)


def test_bootstrap_points_at_the_switchman_service(
    objects: list[dict[str, Any]], bootstrap_text: str, serve_args: argparse.Namespace
) -> None:
    boot = yaml.safe_load(bootstrap_text)
    (grpc_service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    xds_cluster = grpc_service["envoy_grpc"]["cluster_name"]
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == xds_cluster]
    (endpoint,) = [e for g in cluster["load_assignment"]["endpoints"] for e in g["lb_endpoints"]]
    addr = endpoint["endpoint"]["address"]["socket_address"]
    svc = _get(objects, "Service", "switchman")
    assert addr["address"] == f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert cluster["type"] == "STRICT_DNS"
    (grpc,) = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    assert addr["port_value"] == grpc["port"]
    targets = _target_ports(svc, _get(objects, "Deployment", "switchman"))
    assert targets["grpc"] == serve_args.xds_address[1]
    # Every replica shares one node id, hence one configuration.
    assert boot["node"] == {"id": "gateway", "cluster": "gateway"}


def test_envoy_deployment(objects: list[dict[str, Any]]) -> None:
    dep = _get(objects, "Deployment", "envoy-gateway")
    assert dep["spec"]["replicas"] == 2
    container = _container(dep)
    assert container["image"] == "envoyproxy/envoy:v1.40.0"
    args = container["args"]
    assert args == ["-c", "/etc/envoy/bootstrap.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, path in mounts.items() if Path(path) == Path(args[1]).parent]
    configmap = volumes[name]["configMap"]["name"]
    assert Path(args[1]).name in _get(objects, "ConfigMap", configmap)["data"]


def test_gateway_service_reaches_the_entrypoint(
    objects: list[dict[str, Any]], serve_args: argparse.Namespace
) -> None:
    svc = _get(objects, "Service", "envoy-gateway")
    dep = _get(objects, "Deployment", "envoy-gateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 80
    (web,) = [e for e in serve_args.entrypoint if e.name == "web"]
    assert _target_ports(svc, dep)[port["name"]] == web.port == 8000
    container = _container(dep)
    assert _port_number(container, container["readinessProbe"]["tcpSocket"]["port"]) == web.port
