"""The back end: IR → Envoy protos, one module per xDS type. A straight map; no decisions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
from translators.ir import IR, Cluster, Route
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

    Clusters and load assignments by name, routes by IR object, and whole per-type tuples while
    their inputs compare equal (a tuple comparison that stops at identity, so an incremental
    front end that hands back the very same objects costs almost nothing): one edit re-encodes
    one route, and ``make_snapshot`` sees the same tuples for the types that did not change.
    """

    clusters: dict[str, tuple[Cluster, Any]] = field(default_factory=dict)
    endpoints: dict[str, tuple[Cluster, Any]] = field(default_factory=dict)
    routes: RouteCache = field(default_factory=dict)
    cluster_input: object = None
    cluster_types: tuple[Entries, Entries] = ((), ())
    route_inputs: dict[str, tuple[tuple[Route, ...], Any]] = field(default_factory=dict)


Entries = tuple[tuple[str, Any], ...]


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


def _by_name(items: Iterable[tuple[str, Any]]) -> Entries:
    return tuple(sorted(items, key=lambda kv: kv[0]))


def build_resources(ir: IR, cache: BackendCache | None = None) -> Resources:
    cache = cache if cache is not None else BackendCache()
    # forwardAuth servers: a STRICT_DNS cluster each (no EDS), named by host and port.
    auth_servers = forward_auth_clusters(use for r in ir.routes for use in r.filters)
    cluster_input = (ir.clusters, tuple(auth_servers.items()))
    if cache.cluster_input != cluster_input:
        fresh = BackendCache()
        clusters = [
            (c.name, _reuse(cache.clusters, fresh.clusters, c, build_cluster)) for c in ir.clusters
        ]
        clusters += [(n, build_forward_auth_cluster(c)) for n, c in auth_servers.items()]
        endpoints = [
            (c.name, _reuse(cache.endpoints, fresh.endpoints, c, build_load_assignment))
            for c in ir.clusters
        ]
        cache.clusters, cache.endpoints = fresh.clusters, fresh.endpoints
        cache.cluster_input = cluster_input
        cache.cluster_types = (_by_name(clusters), _by_name(endpoints))
    listeners = [(lst.name, build_listener(lst)) for lst in ir.listeners]
    route_inputs: dict[str, tuple[tuple[Route, ...], Any]] = {}
    for lst in ir.listeners:
        mine = tuple(r for r in ir.routes if r.entrypoint == lst.name)
        known = cache.route_inputs.get(lst.route_config)
        if known is None or known[0] != mine:
            known = (mine, build_route_configuration(lst.route_config, mine, cache.routes))
        route_inputs[lst.route_config] = known
    cache.route_inputs = route_inputs
    if len(cache.routes) > 2 * len(ir.routes) + 64:
        # Forget routes no longer served, now and then: the cache stays within 2x the config.
        live = {id(r) for r in ir.routes}
        cache.routes = {k: v for k, v in cache.routes.items() if k in live}
    return Resources(
        by_type={
            CLUSTER: cache.cluster_types[0],
            ENDPOINT: cache.cluster_types[1],
            LISTENER: _by_name(listeners),
            ROUTE: _by_name((name, encoded) for name, (_, encoded) in route_inputs.items()),
        }
    )
