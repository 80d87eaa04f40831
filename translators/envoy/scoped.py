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

import bisect
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
    scope_names: list[str] = field(default_factory=list)  # their names, in the same order
    # Each host's two SRDS resources, kept so that a host coming or going builds only its own.
    host_scopes: dict[str, Entries] = field(default_factory=dict)
    # What the last update did: hosts whose table it rebuilt, hosts it added and removed.
    changed: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _scope(name: str, table: str, key: str) -> tuple[str, srds_v3.ScopedRouteConfiguration]:
    return name, srds_v3.ScopedRouteConfiguration(
        name=name,
        route_configuration_name=table,
        key=srds_v3.ScopedRouteConfiguration.Key(
            fragments=[srds_v3.ScopedRouteConfiguration.Key.Fragment(string_key=key)]
        ),
    )


def _group(routes: tuple[Route, ...]) -> tuple[dict[str, list[int]], dict[str, list[Route]]]:
    """Per host, where its routes are and the routes themselves, in order."""
    positions: dict[str, list[int]] = {}
    members: dict[str, list[Route]] = {}
    for i, r in enumerate(routes):
        host = r.match.exact_host
        assert host is not None  # the front end scopes an entry point only then
        mine = positions.get(host)
        if mine is None:
            positions[host], members[host] = [i], [r]
        else:
            mine.append(i)
            members[host].append(r)
    return positions, members


def update_tables(
    state: ScopedTables, route_config: str, routes: tuple[Route, ...], cache: RouteCache
) -> None:
    """Bring ``state`` to ``routes`` (the entry point's, in priority order)."""
    prev = state.routes
    if prev and len(prev) == len(routes):
        changed = changed_positions(prev, routes)
        if all(routes[i].match.exact_host == prev[i].match.exact_host for i in changed):
            # The same routes in the same places, some replaced: regroup only their hosts.
            state.routes = routes
            state.changed = set()
            state.added, state.removed = [], []
            for host in {h for i in changed if (h := routes[i].match.exact_host) is not None}:
                mine = tuple(routes[i] for i in state.positions[host])
                if state.tables[host][0] != mine:
                    table = build_scope_table(scope_table(route_config, host), mine, cache)
                    state.tables[host] = (mine, table)
                    state.changed.add(host)
            return
    state.positions, members = _group(routes)
    state.routes = routes
    tables: dict[str, tuple[tuple[Route, ...], Any]] = {}
    state.changed = set()
    for host, group in members.items():
        mine = tuple(group)
        known = state.tables.get(host)
        if known is None or known[0] != mine:
            known = (mine, build_scope_table(scope_table(route_config, host), mine, cache))
            state.changed.add(host)
        tables[host] = known
    state.added = [h for h in tables if h not in state.tables]
    state.removed = [h for h in state.tables if h not in tables]
    state.changed.difference_update(state.added)
    _update_scopes(state, route_config)
    state.tables = tables


def _update_scopes(state: ScopedTables, route_config: str) -> None:
    """The SRDS resources after hosts came and went: a few put in place or taken out of the
    sorted list (bisect), not the whole list sorted again."""
    if not state.added and not state.removed and state.scope_names:
        return
    if len(state.added) + len(state.removed) > 64:
        for host in state.added:
            state.host_scopes[host] = _host_scopes(route_config, host)
        for host in state.removed:
            state.host_scopes.pop(host, None)
        entries = sorted(
            (s for scopes in state.host_scopes.values() for s in scopes), key=lambda kv: kv[0]
        )
        state.scope_names, state.scopes = [n for n, _ in entries], tuple(entries)
        return
    names, entries = list(state.scope_names), list(state.scopes)
    for host in state.removed:
        for name, _ in state.host_scopes.pop(host, ()):
            k = bisect.bisect_left(names, name)
            if k < len(names) and names[k] == name:
                del names[k], entries[k]
    for host in state.added:
        scopes = state.host_scopes.get(host) or _host_scopes(route_config, host)
        state.host_scopes[host] = scopes
        for scope in scopes:
            k = bisect.bisect_left(names, scope[0])
            names.insert(k, scope[0])
            entries.insert(k, scope)
    state.scope_names, state.scopes = names, tuple(entries)


def _host_scopes(route_config: str, host: str) -> Entries:
    table, key = scope_table(route_config, host), scope_key(route_config, host)
    return (_scope(table, table, key), _scope(f"{table}.", table, f"{key}."))
