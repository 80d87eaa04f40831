"""The back end: IR → Envoy protos, one module per xDS type. A straight map; no decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Filter kinds register themselves on import (translators/envoy/filters.py).
from translators.envoy import (
    filter_basic_auth,  # noqa: F401
    filter_buffer,  # noqa: F401
    filter_compressor,  # noqa: F401
    filter_cors,  # noqa: F401
    filter_ext_authz,  # noqa: F401
    filter_forward_auth,  # noqa: F401
    filter_grpc_web,  # noqa: F401
    filter_header_mutation,  # noqa: F401
    filter_local_ratelimit,  # noqa: F401
    filter_rbac,  # noqa: F401
    filter_stateful_session,  # noqa: F401
)
from translators.envoy.cluster import build_cluster
from translators.envoy.endpoint import build_load_assignment
from translators.envoy.filter_forward_auth import build_forward_auth_cluster
from translators.envoy.listener import build_listener
from translators.envoy.route import build_route_configuration
from translators.ir import IR
from translators.middlewares.forward_auth import forward_auth_clusters

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break: the order a server pushes types in (xDS protocol, "eventual consistency").
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


@dataclass(frozen=True, slots=True)
class Resources:
    """Envoy resources by type URL, each a tuple of (name, message) sorted by name."""

    by_type: dict[str, tuple[tuple[str, Any], ...]]


def build_resources(ir: IR) -> Resources:
    clusters = tuple((c.name, build_cluster(c)) for c in ir.clusters)
    # forwardAuth servers: a STRICT_DNS cluster each (no EDS), named by host and port.
    auth_servers = forward_auth_clusters(use for r in ir.routes for use in r.filters)
    clusters += tuple((n, build_forward_auth_cluster(c)) for n, c in auth_servers.items())
    endpoints = tuple((c.name, build_load_assignment(c)) for c in ir.clusters)
    listeners = tuple((lst.name, build_listener(lst)) for lst in ir.listeners)
    routes = tuple(
        (
            lst.route_config,
            build_route_configuration(
                lst.route_config, [r for r in ir.routes if r.entrypoint == lst.name]
            ),
        )
        for lst in ir.listeners
    )
    return Resources(
        by_type={
            CLUSTER: tuple(sorted(clusters, key=lambda kv: kv[0])),
            ENDPOINT: tuple(sorted(endpoints, key=lambda kv: kv[0])),
            LISTENER: tuple(sorted(listeners, key=lambda kv: kv[0])),
            ROUTE: tuple(sorted(routes, key=lambda kv: kv[0])),
        }
    )
