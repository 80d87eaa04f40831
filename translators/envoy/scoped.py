"""Scoped routes (SRDS) for an entry point the front end scoped (translators/scopes.py).

Per host: one RouteConfiguration (``<route config>/<host>``, from ``route.build_scope_table``)
and two ScopedRouteConfigurations naming it, keyed ``<route config>|<host>`` and the same with a
trailing dot (Traefik matches ``a.example.com.`` as ``a.example.com``). The listener sets the key
header and builds the key from it (listener.py).

Kept per entry point between builds: its routes, where each host's routes sit among them, and
each host's table. An edit that replaces routes without moving them to another host regroups only
those hosts; a host whose routes are the same objects keeps its encoded table, and the set of
scopes (the SRDS resources) is rebuilt only when the set of hosts changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import scoped_route_pb2 as srds_v3

from translators.envoy.route import RouteCache, build_scope_table
from translators.envoy.wire import changed_positions
from translators.ir import Route
from translators.scopes import scope_key, scope_table

Entries = tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class ScopedTables:
    """One scoped entry point's tables, as of the last build."""

    routes: tuple[Route, ...] = ()
    positions: dict[str, list[int]] = field(default_factory=dict)  # host → indexes in routes
    tables: dict[str, tuple[tuple[Route, ...], Any]] = field(default_factory=dict)
    scopes: Entries = ()  # the SRDS resources, by name
    # Each host's two SRDS resources, kept so that a host coming or going builds only its own.
    host_scopes: dict[str, Entries] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # hosts whose table the last update rebuilt
    hosts_changed: bool = True  # the last update added or removed a host


def _scope(name: str, table: str, key: str) -> tuple[str, srds_v3.ScopedRouteConfiguration]:
    return name, srds_v3.ScopedRouteConfiguration(
        name=name,
        route_configuration_name=table,
        key=srds_v3.ScopedRouteConfiguration.Key(
            fragments=[srds_v3.ScopedRouteConfiguration.Key.Fragment(string_key=key)]
        ),
    )


def _group(routes: tuple[Route, ...]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = {}
    for i, r in enumerate(routes):
        host = r.match.exact_host
        assert host is not None  # the front end scopes an entry point only then
        positions.setdefault(host, []).append(i)
    return positions


def update_tables(
    state: ScopedTables, route_config: str, routes: tuple[Route, ...], cache: RouteCache
) -> None:
    """Bring ``state`` to ``routes`` (the entry point's, in priority order)."""
    prev = state.routes
    regroup = True
    hosts: set[str] | None = None
    if prev and len(prev) == len(routes):
        changed = changed_positions(prev, routes)
        if all(routes[i].match.exact_host == prev[i].match.exact_host for i in changed):
            regroup = False
            hosts = {h for i in changed if (h := routes[i].match.exact_host) is not None}
    if regroup:
        state.positions = _group(routes)
    state.routes = routes
    tables = state.tables if not regroup else {}
    state.changed = set()
    for host in hosts if hosts is not None else state.positions:
        mine = tuple(routes[i] for i in state.positions[host])
        known = state.tables.get(host)
        if known is None or known[0] != mine:
            name = scope_table(route_config, host)
            known = (mine, build_scope_table(name, mine, cache))
            state.changed.add(host)
        tables[host] = known
    if regroup:
        state.hosts_changed = tables.keys() != state.tables.keys()
        if state.hosts_changed or not state.scopes:
            state.host_scopes = {
                h: state.host_scopes.get(h) or _host_scopes(route_config, h) for h in tables
            }
            state.scopes = tuple(
                sorted((s for h in tables for s in state.host_scopes[h]), key=lambda kv: kv[0])
            )
        state.changed = {h for h in tables if tables[h] is not state.tables.get(h)}
    else:
        state.hosts_changed = False
    state.tables = tables


def _host_scopes(route_config: str, host: str) -> Entries:
    table, key = scope_table(route_config, host), scope_key(route_config, host)
    return (_scope(table, table, key), _scope(f"{table}.", table, f"{key}."))
