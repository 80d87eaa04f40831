"""Check translated Envoy resources with the real Envoy: ``envoy --mode validate``.

The dynamic resources a control plane serves are turned into one static bootstrap so Envoy can
judge them without an xDS server:
- each HTTP connection manager's ``rds`` is replaced by its RouteConfiguration inline
  (``route_config``);
- each EDS cluster becomes STATIC with its ClusterLoadAssignment inline (``load_assignment``);
- listener addresses are rewritten to 127.0.0.1 on distinct free ports (validation binds
  nothing, but Envoy still refuses two listeners on one address).

``validate_resources`` raises ``EnvoyValidationError`` (with Envoy's output) when Envoy rejects
the configuration, so other tests can reuse it as a one-line check.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane.bootstrap import build_bootstrap
from controlplane.localrun import find_envoy, free_port
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources
from translators.envoy.common import to_dict
from translators.envoy.wire import message_of

HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_KEYS = {
    "clusters": CLUSTER,
    "endpoints": ENDPOINT,
    "listeners": LISTENER,
    "routes": ROUTE,
    "secrets": SECRET,
}


class EnvoyValidationError(AssertionError):
    """Envoy rejected the configuration; the message carries Envoy's output."""


def resources_as_dicts(resources: Resources | Mapping[str, Any]) -> dict[str, list[Any]]:
    """``Resources`` or ``translate_directory``'s dict → clusters/endpoints/listeners/routes."""
    if isinstance(resources, Resources):
        return {
            key: [to_dict(message_of(msg)) for _, msg in resources.by_type.get(type_url, ())]
            for key, type_url in _KEYS.items()
        }
    return {key: copy.deepcopy(list(resources.get(key, []))) for key in _KEYS}


def _static_secrets(node: Any) -> None:
    """SDS references (``{name, sds_config}``) → references to static secrets by name."""
    if isinstance(node, dict):
        if "name" in node and "sds_config" in node:
            del node["sds_config"]
        for value in node.values():
            _static_secrets(value)
    elif isinstance(node, list):
        for value in node:
            _static_secrets(value)


def build_static_bootstrap(resources: Resources | Mapping[str, Any]) -> dict[str, Any]:
    """The served resources as one static Envoy bootstrap (protojson field names)."""
    res = resources_as_dicts(resources)
    route_configs = {rc["name"]: rc for rc in res["routes"]}
    assignments = {cla["cluster_name"]: cla for cla in res["endpoints"]}

    listeners = []
    ports: set[int] = set()
    for listener in res["listeners"]:
        port = free_port()
        while port in ports:
            port = free_port()
        ports.add(port)
        listener["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
        for chain in listener.get("filter_chains", []):
            for flt in chain.get("filters", []):
                hcm = flt.get("typed_config", {})
                if hcm.get("@type") != HCM_TYPE or "rds" not in hcm:
                    continue
                rds = hcm.pop("rds")
                name = rds.get("route_config_name", "")
                if name not in route_configs:
                    raise EnvoyValidationError(
                        f"listener {listener.get('name')!r} names RouteConfiguration {name!r}, "
                        f"which is not among the resources ({sorted(route_configs)})"
                    )
                hcm["route_config"] = copy.deepcopy(route_configs[name])
        _static_secrets(listener)
        listeners.append(listener)

    clusters = []
    for cluster in res["clusters"]:
        if cluster.get("type") == "EDS":
            cluster.pop("eds_cluster_config", None)
            cluster["type"] = "STATIC"
            name = cluster["name"]
            cluster["load_assignment"] = copy.deepcopy(
                assignments.get(name, {"cluster_name": name})
            )
        clusters.append(cluster)

    return {
        "node": {"id": "switchman-validate", "cluster": "switchman-validate"},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": res["secrets"],
        },
        # The runtime `switchman bootstrap` gives every Envoy (its RE2 program-size limit).
        "layered_runtime": build_bootstrap(xds_host="127.0.0.1", xds_port=1, node_id="v")[
            "layered_runtime"
        ],
    }


def validate_resources(resources: Resources | Mapping[str, Any], tmp_path: Path) -> None:
    """Run ``envoy --mode validate`` on the resources; raise with Envoy's output if rejected."""
    bootstrap = build_static_bootstrap(resources)
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "envoy-validate.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    args = [find_envoy(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    args += ["--log-level", "warn"]
    # Spawning from the fixture test's worker threads failed once with EFAULT ("Bad address")
    # under heavy load: that is the spawn, not Envoy's verdict, so try again.
    for attempt in range(3):
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
            break
        except OSError:
            if attempt == 2:
                raise
    if proc.returncode != 0:
        raise EnvoyValidationError(
            f"envoy --mode validate -c {config} exited {proc.returncode}:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
