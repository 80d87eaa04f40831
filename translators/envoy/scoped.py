"""Scoped routes (SRDS) for an entry point the front end scoped (translators/scopes.py).

Per host: one RouteConfiguration (``<route config>/<host>``, from ``route.build_scope_table``)
and two ScopedRouteConfigurations naming it, keyed ``<route config>|<host>`` and the same with a
trailing dot (Traefik matches ``a.example.com.`` as ``a.example.com``). The listener sets the key
header and builds the key from it (listener.py).

Kept per entry point between builds: its routes and each host's table. An edit replaces a few
route objects (the rest are the very same objects): those are taken out of and put into their
hosts' tables at their place in ``route_order``, so only those hosts' tables are encoded again,
and scopes (the SRDS resources) of hosts that come or go are inserted or deleted in place.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import scoped_route_pb2 as srds_v3

from translators.envoy.route import RouteCache, build_scope_table
from translators.envoy.wire import Move, changed_positions
from translators.ir import Route, route_order
from translators.scopes import scope_key, scope_table

Entries = tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class ScopedTables:
    """One scoped entry point's tables, as of the last build."""

    routes: tuple[Route, ...] = ()
    tables: dict[str, tuple[tuple[Route, ...], Any]] = field(default_factory=dict)
    scopes: Entries = ()  # the SRDS resources, by name
    scope_names: list[str] = field(default_factory=list)  # their names, in the same order
    # Each host's two SRDS resources, kept so that a host coming or going builds only its own.
    host_scopes: dict[str, Entries] = field(default_factory=dict)
    # What the last update did: hosts whose table it rebuilt, hosts it added and removed.
    changed: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # How the last update changed ``scopes`` (None: rebuilt, or unchanged).
    scope_move: Move | None = None


def _scope(name: str, table: str, key: str) -> tuple[str, srds_v3.ScopedRouteConfiguration]:
    return name, srds_v3.ScopedRouteConfiguration(
        name=name,
        route_configuration_name=table,
        key=srds_v3.ScopedRouteConfiguration.Key(
            fragments=[srds_v3.ScopedRouteConfiguration.Key.Fragment(string_key=key)]
        ),
    )


def update_tables(
    state: ScopedTables, route_config: str, routes: tuple[Route, ...], cache: RouteCache
) -> None:
    """Bring ``state`` to ``routes`` (the entry point's, in ``route_order``)."""
    prev = state.routes
    state.routes = routes
    if prev and len(prev) == len(routes):
        # Most edits replace routes in place (the same order): compare at C speed.
        changed = changed_positions(prev, routes)
        if len(changed) <= 256:
            _regroup_some(
                state, route_config, [prev[i] for i in changed], [routes[i] for i in changed], cache
            )
            _update_scopes(state, route_config)
            return
    if prev:
        old_ids, new_ids = set(map(id, prev)), set(map(id, routes))
        if len(old_ids ^ new_ids) <= 256:
            # A few routes replaced, added or removed (the rest are the same objects): take
            # them out of and put them into their hosts' tables, at their place in the order.
            gone = [r for r in prev if id(r) not in new_ids]
            come = [r for r in routes if id(r) not in old_ids]
            _regroup_some(state, route_config, gone, come, cache)
            _update_scopes(state, route_config)
            return
    members: dict[str, list[Route]] = {}
    for r in routes:
        host = r.match.exact_host
        assert host is not None  # the front end scopes an entry point only then
        members.setdefault(host, []).append(r)
    tables: dict[str, tuple[tuple[Route, ...], Any]] = {}
    state.changed = set()
    for host, group in members.items():
        mine = tuple(group)
        known = state.tables.get(host)
        if known is None or known[0] != mine:
            known = (mine, build_scope_table(scope_table(route_config, host), mine, cache))
            state.changed.add(host)
        tables[host] = (mine, known[1])  # the current objects (found by identity next time)
    state.added = [h for h in tables if h not in state.tables]
    state.removed = [h for h in state.tables if h not in tables]
    state.changed.difference_update(state.added)
    _update_scopes(state, route_config)
    state.tables = tables


def _regroup_some(
    state: ScopedTables,
    route_config: str,
    gone: list[Route],
    come: list[Route],
    cache: RouteCache,
) -> None:
    affected: dict[str, list[Route]] = {}

    def group_of(route: Route) -> list[Route]:
        host = route.match.exact_host
        assert host is not None
        if host not in affected:
            known = state.tables.get(host)
            affected[host] = list(known[0]) if known is not None else []
        return affected[host]

    for r in gone:
        members = group_of(r)
        del members[next(k for k, x in enumerate(members) if x is r)]
    for r in come:
        bisect.insort(group_of(r), r, key=route_order)
    state.changed, state.added, state.removed = set(), [], []
    for host, group in affected.items():
        known = state.tables.get(host)
        if not group:
            if known is not None:
                del state.tables[host]
                state.removed.append(host)
            continue
        mine = tuple(group)
        if known is None or known[0] != mine:
            state.tables[host] = (
                mine,
                build_scope_table(scope_table(route_config, host), mine, cache),
            )
            if known is None:
                state.added.append(host)
            else:
                state.changed.add(host)
        else:
            # Equal routes, maybe new objects: keep the table, hold the current objects (the
            # next edit finds its routes by identity).
            state.tables[host] = (mine, known[1])


def _update_scopes(state: ScopedTables, route_config: str) -> None:
    """The SRDS resources after hosts came and went: a few put in place or taken out of the
    sorted list (bisect), not the whole list sorted again."""
    state.scope_move = None
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
    removed: list[str] = []
    put: list[tuple[str, Any]] = []
    for host in state.removed:
        for name, _ in state.host_scopes.pop(host, ()):
            k = bisect.bisect_left(names, name)
            if k < len(names) and names[k] == name:
                del names[k], entries[k]
                removed.append(name)
    for host in state.added:
        scopes = state.host_scopes.get(host) or _host_scopes(route_config, host)
        state.host_scopes[host] = scopes
        for scope in scopes:
            k = bisect.bisect_left(names, scope[0])
            names.insert(k, scope[0])
            entries.insert(k, scope)
            put.append(scope)
    state.scope_move = Move(state.scopes, tuple(removed), tuple(put))
    state.scope_names, state.scopes = names, tuple(entries)


def _host_scopes(route_config: str, host: str) -> Entries:
    table, key = scope_table(route_config, host), scope_key(route_config, host)
    return (_scope(table, table, key), _scope(f"{table}.", table, f"{key}."))
