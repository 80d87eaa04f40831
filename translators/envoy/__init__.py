"""The back end: IR → Envoy protos, one module per xDS type. A straight map; no decisions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
from translators.envoy.route import RouteCache, build_route_configuration
from translators.ir import IR, Cluster
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
    """Envoy resources by type URL, each a tuple of (name, message) sorted by name. A message
    may be ``Encoded`` (bytes assembled from parts); ``wire.message_of`` gives the proto."""

    by_type: dict[str, tuple[tuple[str, Any], ...]]


@dataclass(slots=True)
class BackendCache:
    """What the previous build made, reused while its IR input is the same (or equal).

    Clusters and load assignments by name, routes by IR object: an incremental front end hands
    back the very same objects for what did not change, so one edit re-encodes one route.
    """

    clusters: dict[str, tuple[Cluster, Any]] = field(default_factory=dict)
    endpoints: dict[str, tuple[Cluster, Any]] = field(default_factory=dict)
    routes: RouteCache = field(default_factory=dict)


def _reuse(
    cache: dict[str, tuple[Cluster, Any]] | None,
    fresh: dict[str, tuple[Cluster, Any]],
    c: Cluster,
    build: Callable[[Cluster], Any],
) -> Any:
    hit = cache.get(c.name) if cache is not None else None
    message = hit[1] if hit is not None and (hit[0] is c or hit[0] == c) else build(c)
    fresh[c.name] = (c, message)
    return message


def build_resources(ir: IR, cache: BackendCache | None = None) -> Resources:
    fresh = BackendCache()
    clusters = tuple(
        (c.name, _reuse(cache.clusters if cache else None, fresh.clusters, c, build_cluster))
        for c in ir.clusters
    )
    # forwardAuth servers: a STRICT_DNS cluster each (no EDS), named by host and port.
    auth_servers = forward_auth_clusters(use for r in ir.routes for use in r.filters)
    clusters += tuple((n, build_forward_auth_cluster(c)) for n, c in auth_servers.items())
    endpoints = tuple(
        (
            c.name,
            _reuse(cache.endpoints if cache else None, fresh.endpoints, c, build_load_assignment),
        )
        for c in ir.clusters
    )
    listeners = tuple((lst.name, build_listener(lst)) for lst in ir.listeners)
    route_cache = cache.routes if cache is not None else None
    routes = tuple(
        (
            lst.route_config,
            build_route_configuration(
                lst.route_config,
                [r for r in ir.routes if r.entrypoint == lst.name],
                route_cache,
            ),
        )
        for lst in ir.listeners
    )
    if cache is not None:
        # Keep only what this build used: the cache never outgrows the current config.
        live = {id(r) for r in ir.routes}
        cache.routes = {k: v for k, v in cache.routes.items() if k in live}
        cache.clusters, cache.endpoints = fresh.clusters, fresh.endpoints
    return Resources(
        by_type={
            CLUSTER: tuple(sorted(clusters, key=lambda kv: kv[0])),
            ENDPOINT: tuple(sorted(endpoints, key=lambda kv: kv[0])),
            LISTENER: tuple(sorted(listeners, key=lambda kv: kv[0])),
            ROUTE: tuple(sorted(routes, key=lambda kv: kv[0])),
        }
    )
