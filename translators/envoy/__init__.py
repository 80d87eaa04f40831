"""The back end: IR → Envoy protos, one module per xDS type. A straight map; no decisions."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Filter kinds register themselves on import (translators/envoy/filters.py).
from translators.envoy import (
    filter_basic_auth,  # noqa: F401
    filter_buffer,  # noqa: F401
    filter_compressor,  # noqa: F401
    filter_cors,  # noqa: F401
    filter_custom_response,  # noqa: F401
    filter_ext_authz,  # noqa: F401
    filter_forward_auth,  # noqa: F401
    filter_grpc_web,  # noqa: F401
    filter_header_mutation,  # noqa: F401
    filter_local_ratelimit,  # noqa: F401
    filter_pass_tls,  # noqa: F401
    filter_rbac,  # noqa: F401
    filter_stateful_session,  # noqa: F401
)
from translators.envoy.cluster import build_cluster
from translators.envoy.endpoint import build_load_assignment
from translators.envoy.filter_forward_auth import build_forward_auth_cluster
from translators.envoy.listener import build_listener
from translators.envoy.route import RouteCache, build_route_configuration
from translators.envoy.scoped import ScopedTables, update_tables
from translators.envoy.secret import build_secret
from translators.envoy.wire import Move, changed_positions
from translators.ir import IR, Cluster, Route, ServerCertificate
from translators.middlewares.errors import ERROR_PAGE_HOST
from translators.middlewares.forward_auth import forward_auth_clusters
from translators.scopes import scope_table, unscopable

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"

# Make-before-break: the order a server pushes types in (xDS protocol, "eventual consistency").
# Secrets before the Listeners that name them (Envoy asks for them when it sees the Listener, and
# keeps it warming until they arrive).
# Scopes before the RouteConfigurations they name (Envoy subscribes to those as scopes arrive).
TYPE_ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, SCOPED_ROUTE, ROUTE)
# The types that route requests: they wait while new clusters warm, and old clusters stay until
# every stream has acknowledged them (make-before-break).
ROUTING_TYPES = (LISTENER, SCOPED_ROUTE, ROUTE)


@dataclass(frozen=True, slots=True)
class Resources:
    """Envoy resources by type URL, each a tuple of (name, message) sorted by name. A message
    may be ``Encoded`` (bytes assembled from parts); ``wire.message_of`` gives the proto."""

    by_type: dict[str, tuple[tuple[str, Any], ...]]
    # Per type, how its tuple differs from the one the previous build returned, when the back
    # end knows it: (that tuple, names removed, names added or replaced with their messages).
    # make_snapshot then updates the previous snapshot's type by those alone.
    moves: dict[str, Move] = field(default_factory=dict)


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
    routes: RouteCache = field(default_factory=RouteCache)
    cluster_input: tuple[tuple[Cluster, ...], tuple[tuple[str, Any], ...]] | None = None
    cluster_types: tuple[Entries, Entries] = ((), ())
    # Where each cluster sits in cluster_types' two tuples (sorted by name).
    cluster_pos: tuple[dict[str, int], dict[str, int]] = ({}, {})
    route_inputs: dict[str, tuple[tuple[Route, ...], Any]] = field(default_factory=dict)
    secrets: dict[str, tuple[ServerCertificate, Any]] = field(default_factory=dict)
    secret_type: Entries = ()
    # Scoped entry points (route config name → its per-host tables), and the Route and
    # ScopedRoute types as last built, with each route configuration's place in the former.
    scoped: dict[str, ScopedTables] = field(default_factory=dict)
    route_type: Entries = ()
    route_names: list[str] = field(default_factory=list)  # route_type's names, in order
    scope_type: Entries = ()
    moves: dict[str, Move] = field(default_factory=dict)  # what the last build knew (Resources)


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


def _splice_clusters(
    cache: BackendCache,
    new: tuple[tuple[Cluster, ...], tuple[tuple[str, Any], ...]],
) -> bool:
    """The same clusters in the same places, some of them rebuilt (an endpoint or a policy
    changed): build those alone and put them in place. False when the set itself changed."""
    prev = cache.cluster_input
    if prev is None or len(prev[0]) != len(new[0]) or prev[1] != new[1]:
        return False
    changed = changed_positions(prev[0], new[0])
    if any(new[0][i].name != prev[0][i].name for i in changed):
        return False
    clusters, endpoints = list(cache.cluster_types[0]), list(cache.cluster_types[1])
    cpos, epos = cache.cluster_pos
    for i in changed:
        c = new[0][i]
        fresh: dict[str, tuple[Cluster, Any]] = {}
        clusters[cpos[c.name]] = (c.name, _reuse(cache.clusters, fresh, c, build_cluster))
        cache.clusters[c.name] = fresh[c.name]
        endpoints[epos[c.name]] = (c.name, _reuse(cache.endpoints, fresh, c, build_load_assignment))
        cache.endpoints[c.name] = fresh[c.name]
    cache.cluster_types = (tuple(clusters), tuple(endpoints))
    cache.cluster_input = new
    return True


def _of_entrypoint(routes: tuple[Route, ...], entrypoint: str) -> tuple[Route, ...]:
    """An entry point's routes: a slice, since the IR orders routes by entry point first."""
    lo = bisect.bisect_left(routes, entrypoint, key=lambda r: r.entrypoint)
    hi = bisect.bisect_right(routes, entrypoint, lo=lo, key=lambda r: r.entrypoint)
    return routes[lo:hi]


def _route_type(
    cache: BackendCache,
    plain: dict[str, tuple[tuple[Route, ...], Any]],
    scoped: dict[str, ScopedTables],
) -> Entries:
    """Every RouteConfiguration by name: the entry points' own, and each scoped host's. The
    previous tuple with the rebuilt ones put in place and the few hosts that came or went
    inserted or deleted (bisect on the sorted names), or the very same tuple when nothing was
    rebuilt; sorted again only when many names changed. The ScopedRoute type likewise."""
    moved = sum(len(st.added) + len(st.removed) for st in scoped.values())
    same_sets = (
        bool(cache.route_names)
        and plain.keys() == cache.route_inputs.keys()
        and scoped.keys() == cache.scoped.keys()
    )
    if same_sets and moved <= 64:
        names, entries = cache.route_names, list(cache.route_type)
        touched = False
        previous = cache.route_type
        removed: list[str] = []
        put: list[tuple[str, Any]] = []

        for name, (_, encoded) in plain.items():
            k = bisect.bisect_left(names, name)
            if entries[k][1] is not encoded:
                entries[k], touched = (name, encoded), True
                put.append(entries[k])
        if moved:
            names = list(names)
            for rc, st in scoped.items():
                for host in st.removed:
                    k = bisect.bisect_left(names, scope_table(rc, host))
                    removed.append(names[k])
                    del names[k], entries[k]
                for host in st.added:
                    name = scope_table(rc, host)
                    k = bisect.bisect_left(names, name)
                    names.insert(k, name)
                    entries.insert(k, (name, st.tables[host][1]))
                    put.append(entries[k])
            touched = True
        for rc, st in scoped.items():
            for host in st.changed:
                name = scope_table(rc, host)
                k = bisect.bisect_left(names, name)
                entries[k], touched = (name, st.tables[host][1]), True
                put.append(entries[k])
        if touched:
            cache.route_names, cache.route_type = names, tuple(entries)
            cache.moves[ROUTE] = Move(previous, tuple(removed), tuple(put))
    else:
        cache.route_type = _by_name(
            [
                *((name, encoded) for name, (_, encoded) in plain.items()),
                *(
                    (scope_table(rc, host), table)
                    for rc, st in scoped.items()
                    for host, (_, table) in st.tables.items()
                ),
            ]
        )
        cache.route_names = [n for n, _ in cache.route_type]
    if not same_sets or moved:
        previous = cache.scope_type
        if len(scoped) == 1:
            st = next(iter(scoped.values()))
            cache.scope_type = st.scopes
            if st.scope_move is not None and st.scope_move.previous is previous:
                cache.moves[SCOPED_ROUTE] = st.scope_move
        else:
            cache.scope_type = _by_name(s for st in scoped.values() for s in st.scopes)
    return cache.route_type


def build_resources(ir: IR, cache: BackendCache | None = None) -> Resources:
    cache = cache if cache is not None else BackendCache()
    cache.moves = {}
    # forwardAuth servers: a STRICT_DNS cluster each (no EDS), named by host and port.
    # (Only where a listener carries that filter kind: no scan of every route otherwise.)
    native_auth = any(k == "forward_auth_http" for lst in ir.listeners for k, _ in lst.filter_slots)
    auth_servers = (
        forward_auth_clusters(use for r in ir.routes for use in r.filters) if native_auth else {}
    )
    cluster_input = (ir.clusters, tuple(auth_servers.items()))
    if cache.cluster_input != cluster_input and not _splice_clusters(cache, cluster_input):
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
        cache.cluster_pos = (
            {n: k for k, (n, _) in enumerate(cache.cluster_types[0])},
            {n: k for k, (n, _) in enumerate(cache.cluster_types[1])},
        )
    listeners = [(lst.name, build_listener(lst)) for lst in ir.listeners]
    route_inputs: dict[str, tuple[tuple[Route, ...], Any]] = {}
    secrets: dict[str, tuple[ServerCertificate, Any]] = {}

    def add(name: str, routes: tuple[Route, ...]) -> None:
        known = cache.route_inputs.get(name)
        if known is None or known[0] != routes:
            known = (routes, build_route_configuration(name, routes, cache.routes))
        route_inputs[name] = known

    scoped: dict[str, ScopedTables] = {}
    for lst in ir.listeners:
        if lst.scope_tables:
            mine = _of_entrypoint(ir.routes, lst.name)
            if not lst.scoped:
                # Connections that began while the listener was scoped keep using the scopes
                # until they drain (Envoy honours SRDS removals, not RDS ones): keep them current.
                mine = tuple(r for r in mine if r.tls is None and not unscopable(r))
            state = cache.scoped.get(lst.route_config) or ScopedTables()
            update_tables(state, lst.route_config, mine, cache.routes)
            scoped[lst.route_config] = state
            if lst.scoped:
                continue
        if not lst.tls_chains:
            add(lst.route_config, _of_entrypoint(ir.routes, lst.name))
            continue
        # Plaintext connections get the routes without tls, TLS connections the routes with
        # it; an errors middleware's internal routes (no client can reach them) go to both.
        plain, tls = [], []
        for r in ir.routes:
            if r.entrypoint != lst.name:
                continue
            if r.tls is None:
                plain.append(r)
                if r.match.exact_host == ERROR_PAGE_HOST:
                    tls.append(r)
            else:
                tls.append(r)
        add(lst.route_config, tuple(plain))
        for chain in lst.tls_chains:
            guard = () if chain.guard is None else (chain.guard,)
            add(chain.route_config, (*guard, *tls))
        for cert in lst.certificates:
            if cert.name not in secrets:
                hit = cache.secrets.get(cert.name)
                same = hit is not None and (hit[0] is cert or hit[0] == cert)
                secrets[cert.name] = (cert, hit[1] if same and hit else build_secret(cert))
    route_type = _route_type(cache, route_inputs, scoped)
    cache.route_inputs = route_inputs
    cache.scoped = scoped
    secret_type = _by_name((n, m) for n, (_, m) in secrets.items())
    if secret_type != cache.secret_type:
        cache.secret_type = secret_type  # else the very same tuple: make_snapshot reuses it
    cache.secrets = secrets
    if (
        len(cache.routes) > 2 * len(ir.routes) + 64
        or len(cache.routes.vhosts) > 2 * len(route_type) + 64
    ):
        # Forget what is no longer served, now and then: the cache stays within 2x the config.
        cache.routes.prune({id(r) for r in ir.routes}, {name for name, _ in route_type})
    return Resources(
        by_type={
            CLUSTER: cache.cluster_types[0],
            ENDPOINT: cache.cluster_types[1],
            LISTENER: _by_name(listeners),
            ROUTE: route_type,
            SCOPED_ROUTE: cache.scope_type,
            SECRET: cache.secret_type,
        },
        moves=cache.moves,
    )
