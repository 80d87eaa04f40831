"""RouteConfiguration (RDS) for one entry point.

Layout: one ``*`` virtual host holding every route of the entry point in the front end's order
(highest priority first). Traefik's first-match order holds across hosts (a host-less rule of
higher priority beats a rule with a host), so host conditions are ``:authority`` matchers inside
the one virtual host rather than separate virtual hosts.

Request headers Traefik sets and applications rely on are added here, overwriting what the client
sent (Traefik trusts no forwarded headers by default): X-Forwarded-For, X-Real-Ip,
X-Forwarded-Port, X-Forwarded-Server. Envoy itself sets X-Forwarded-Proto, and the listener sets
X-Forwarded-Host before routing (see listener.py).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.route.v3 import route_components_pb2 as route_v3
from envoy.config.route.v3 import route_pb2 as rds_v3
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2 as previous_priorities_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from translators.envoy.common import duration, pack
from translators.envoy.filters import route_filter_configs
from translators.envoy.wire import Encoded, changed_positions, length_delimited, serialize
from translators.ir import (
    CLIENT_IP_HEADER,
    DYNAMIC_VALUES,
    DirectResponse,
    Forward,
    HeaderMatch,
    HeaderOps,
    Match,
    Mirror,
    QueryMatch,
    Redirect,
    Retry,
    Route,
)
from translators.scopes import SCOPE_HEADER

_FORWARDED_HEADERS = (
    ("x-forwarded-for", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-forwarded-port", "%DOWNSTREAM_LOCAL_PORT%"),
    ("x-forwarded-server", "%HOSTNAME%"),
)


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _string_match(kind: str, value: str) -> string_pb2.StringMatcher:
    if kind == "exact":
        return string_pb2.StringMatcher(exact=value)
    if kind == "prefix":
        return string_pb2.StringMatcher(prefix=value)
    return string_pb2.StringMatcher(safe_regex=_regex(value))


def _header(h: HeaderMatch) -> route_v3.HeaderMatcher:
    if h.kind == "present":
        return route_v3.HeaderMatcher(name=h.name, present_match=True, invert_match=h.invert)
    return route_v3.HeaderMatcher(
        name=h.name, string_match=_string_match(h.kind, h.value), invert_match=h.invert
    )


def _query(q: QueryMatch) -> route_v3.QueryParameterMatcher:
    if q.kind == "present":
        return route_v3.QueryParameterMatcher(name=q.name, present_match=True)
    return route_v3.QueryParameterMatcher(name=q.name, string_match=_string_match(q.kind, q.value))


def build_match(m: Match) -> route_v3.RouteMatch:
    out = route_v3.RouteMatch(
        headers=[_header(h) for h in m.headers],
        query_parameters=[_query(q) for q in m.query],
    )
    if m.path.kind == "exact":
        out.path = m.path.value
    elif m.path.kind == "prefix":
        out.prefix = m.path.value
    else:
        out.safe_regex.CopyFrom(_regex(m.path.value))
    return out


_OVERWRITE = base_v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_v3.HeaderValueOption.HeaderAppendAction.APPEND_IF_EXISTS_OR_ADD
_REDIRECT_CODES = {
    301: route_v3.RedirectAction.RedirectResponseCode.MOVED_PERMANENTLY,
    302: route_v3.RedirectAction.RedirectResponseCode.FOUND,
    303: route_v3.RedirectAction.RedirectResponseCode.SEE_OTHER,
    307: route_v3.RedirectAction.RedirectResponseCode.TEMPORARY_REDIRECT,
    308: route_v3.RedirectAction.RedirectResponseCode.PERMANENT_REDIRECT,
}


def _literal(value: str) -> str:
    """Envoy treats ``%`` in header values as a formatter; a user's value is literal."""
    return value if value in DYNAMIC_VALUES else value.replace("%", "%%")


def _header_options(pairs: Sequence[tuple[str, str]]) -> list[base_v3.HeaderValueOption]:
    return [
        base_v3.HeaderValueOption(
            header=base_v3.HeaderValue(key=k, value=_literal(v)), append_action=_OVERWRITE
        )
        for k, v in pairs
    ]


def _appended(pairs: Sequence[tuple[str, str]]) -> list[base_v3.HeaderValueOption]:
    return [
        base_v3.HeaderValueOption(
            header=base_v3.HeaderValue(key=k, value=_literal(v)), append_action=_APPEND
        )
        for k, v in pairs
    ]


def _apply_header_ops(out: route_v3.Route, ops: HeaderOps) -> None:
    out.request_headers_to_add.extend(_header_options(ops.request_set))
    out.request_headers_to_remove.extend(h.lower() for h in ops.request_remove)
    out.response_headers_to_add.extend(_header_options(ops.response_set))
    out.response_headers_to_remove.extend(h.lower() for h in ops.response_remove)
    out.response_headers_to_add.extend(
        base_v3.HeaderValueOption(
            header=base_v3.HeaderValue(key=k, value=_literal(v)), append_action=_APPEND
        )
        for k, v in ops.response_append
    )


def _redirect(r: Redirect) -> route_v3.RedirectAction:
    out = route_v3.RedirectAction(response_code=_REDIRECT_CODES[r.status])
    if r.scheme:
        out.scheme_redirect = r.scheme
    if r.host:
        out.host_redirect = r.host
    if r.port:
        out.port_redirect = r.port
    if r.path_rewrite is not None:
        out.regex_rewrite.pattern.regex = r.path_rewrite.pattern
        out.regex_rewrite.substitution = r.path_rewrite.substitution
    if r.strip_query:
        out.strip_query = True
    return out


def build_route(route: Route) -> route_v3.Route:
    out = route_v3.Route(name=route.name, match=build_match(route.match))
    _apply_header_ops(out, route.headers)
    for name, config in route_filter_configs(route.filters).items():
        out.typed_per_filter_config[name].CopyFrom(config)
    action = route.action
    if isinstance(action, Redirect):
        out.redirect.CopyFrom(_redirect(action))
        return out
    if isinstance(action, DirectResponse):
        out.direct_response.status = action.status
        if action.body:
            out.direct_response.body.inline_string = action.body
        return out
    assert isinstance(action, Forward)  # the IR's Action union has two members
    ra = out.route
    if len(action.backends) == 1 and not action.backends[0].response_headers:
        ra.cluster = action.backends[0].cluster
    else:
        # One entry is a split too when the backend adds response headers (a sticky cookie):
        # only a ClusterWeight can add headers for the backend picked.
        ra.weighted_clusters.CopyFrom(
            route_v3.WeightedCluster(
                clusters=[
                    route_v3.WeightedCluster.ClusterWeight(
                        name=b.cluster,
                        weight=wrappers_pb2.UInt32Value(value=b.weight),
                        response_headers_to_add=_appended(b.response_headers),
                    )
                    for b in action.backends
                ]
            )
        )
    # Traefik has no route timeout; Envoy's default is 15 s.
    ra.timeout.CopyFrom(duration(0))
    if route.rewrite is not None:
        ra.regex_rewrite.pattern.regex = route.rewrite.pattern
        ra.regex_rewrite.substitution = route.rewrite.substitution
    if not action.pass_host_header:
        ra.auto_host_rewrite.value = True
    elif action.host_header:
        ra.host_rewrite_header = action.host_header
    for m in action.mirrors:
        ra.request_mirror_policies.append(_mirror_policy(m))
    if action.hash_client_ip:
        if ra.HasField("weighted_clusters"):
            ra.weighted_clusters.use_hash_policy.value = True
        ra.hash_policy.append(
            route_v3.RouteAction.HashPolicy(
                connection_properties=route_v3.RouteAction.HashPolicy.ConnectionProperties(
                    source_ip=True
                )
            )
        )
    if route.retry is not None:
        ra.retry_policy.CopyFrom(_retry_policy(route.retry))
    return out


def _mirror_policy(m: Mirror) -> route_v3.RouteAction.RequestMirrorPolicy:
    """Traefik's mirror keeps the Host header: no ``-shadow`` suffix."""
    return route_v3.RouteAction.RequestMirrorPolicy(
        cluster=m.cluster,
        runtime_fraction=base_v3.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(
                numerator=round(m.fraction * 1_000_000),
                denominator=percent_pb2.FractionalPercent.DenominatorType.MILLION,
            )
        ),
        disable_shadow_host_suffix_append=True,
    )


# Envoy's backoff base must be positive: "retry at once" is the shortest it takes.
_MIN_BACKOFF = 0.001


def _retry_policy(r: Retry) -> route_v3.RetryPolicy:
    """Traefik's retry: backoff from ``interval``, capped at twice it; a retry goes back through
    the load balancer, to another server while there is one. A failover's retry goes to the next
    priority of the cluster instead (the fallback service)."""
    base = max(r.interval, _MIN_BACKOFF)
    if r.next_priority:
        return route_v3.RetryPolicy(
            retry_on=",".join(r.retry_on),
            num_retries=wrappers_pb2.UInt32Value(value=r.num_retries),
            retriable_status_codes=list(r.status_codes),
            retry_back_off=route_v3.RetryPolicy.RetryBackOff(
                base_interval=duration(base), max_interval=duration(2 * base)
            ),
            retry_priority=route_v3.RetryPolicy.RetryPriority(
                name="envoy.retry_priorities.previous_priorities",
                typed_config=pack(
                    previous_priorities_pb2.PreviousPrioritiesConfig(update_frequency=1)
                ),
            ),
        )
    return route_v3.RetryPolicy(
        retry_on=",".join(r.retry_on),
        num_retries=wrappers_pb2.UInt32Value(value=r.num_retries),
        retriable_status_codes=list(r.status_codes),
        retry_back_off=route_v3.RetryPolicy.RetryBackOff(
            base_interval=duration(base), max_interval=duration(2 * base)
        ),
        retry_host_predicate=[
            route_v3.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
    )


# Above this many route entries, one virtual host per host would cost more than it saves.
MAX_VHOST_FANOUT = 200_000


def _vhost(name: str, domains: list[str], entries: Sequence[bytes]) -> bytes:
    """A virtual host: its own fields, then its routes' encoded entries."""
    vh = Encoded.compose(route_v3.VirtualHost(name=name, domains=domains), entries)
    return length_delimited(_VHOSTS_FIELD, vh.data)


def _catches_all(route: Route) -> bool:
    """True when nothing but the host decides: every request for the host matches it."""
    m = route.match
    return (
        m.path.kind == "prefix"
        and m.path.value in ("", "/")
        and not m.query
        and all(h.name == ":authority" and not h.invert for h in m.headers)
        and len(m.headers) <= 1
    )


def build_route_configuration(
    name: str, routes: Sequence[Route], cache: RouteCache | None = None
) -> Encoded:
    """Routes in priority order, laid out in virtual hosts without changing that order.

    A route whose rule pins one plain host (``Host(`a.example.com`) && …``) can only match
    requests for that host, so it goes into that host's virtual host only. Every other route
    (no host, a wildcard, a regex, a negation) goes into every virtual host *and* the ``*`` one,
    at its place in the global order — except, in a host's virtual host, after a route that
    catches every request for that host (``Host(`a`)`` alone): nothing below it can match there.
    Envoy picks the virtual host by a hash lookup of the Host (case-insensitive, port ignored),
    then walks only that host's routes. A route in its own host's virtual host leaves out the
    ``:authority`` condition that pins that host (Envoy has just matched it, case and port
    ignored, the trailing dot by the second domain); every other condition stays, so the layout
    is an optimisation, never a change of meaning. The X-Forwarded-* headers Traefik sets are
    added once for the whole RouteConfiguration (after the routes' own, like a virtual host's).
    """
    cache = cache if cache is not None else RouteCache()
    routes = tuple(routes)
    vhosts = _relayout(name, routes, cache)
    if vhosts is None:
        vhosts = _layout(name, routes, cache)
    head = _head(name, (CLIENT_IP_HEADER,))
    return Encoded.compose(head, vhosts)


def _head(name: str, remove: tuple[str, ...]) -> rds_v3.RouteConfiguration:
    return rds_v3.RouteConfiguration(
        name=name,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        ignore_port_in_host_matching=True,
        request_headers_to_add=[
            base_v3.HeaderValueOption(
                header=base_v3.HeaderValue(key=key, value=value),
                append_action=base_v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
            for key, value in _FORWARDED_HEADERS
        ],
        request_headers_to_remove=list(remove),
    )


def build_scope_table(name: str, routes: Sequence[Route], cache: RouteCache) -> Encoded:
    """One host's RouteConfiguration behind scoped RDS (translators/scopes.py): the host's routes
    in priority order, each without the condition that pins the host (the scope key has matched
    it), up to the first that catches every request for the host. One ``*`` virtual host: the
    scope has already chosen the host."""
    entries = []
    for r in routes:
        entries.append(cache.entry(r, True))
        if cache.catches_all(r):
            break
    vhost = cache.vhost(name, "scope", ["*"], entries)
    return Encoded.compose(_head(name, (CLIENT_IP_HEADER, SCOPE_HEADER)), [vhost])


@dataclass(slots=True)
class _Layout:
    """One RouteConfiguration's layout, kept to redo only what an edit touches."""

    routes: tuple[Route, ...]
    shared: list[int]
    hosts: dict[str, tuple[int, list[int], int]]  # host → (vhost position, own, shared above)
    vhosts: list[bytes]
    # The one-virtual-host layout: every route's entry, in order (else empty).
    single: list[bytes] = field(default_factory=list)


def _shape(route: Route, cache: RouteCache) -> tuple[str | None, bool]:
    return route.match.exact_host, cache.catches_all(route)


def _host_entries(
    routes: Sequence[Route], own: list[int], shared: list[int], above: int, cache: RouteCache
) -> list[bytes]:
    if not above:
        return [cache.entry(routes[i], True) for i in own]
    mine = {i: cache.entry(routes[i], True) for i in own}
    return [mine.get(i) or cache.entry(routes[i], False) for i in heapq.merge(own, shared[:above])]


def _relayout(name: str, routes: tuple[Route, ...], cache: RouteCache) -> list[bytes] | None:
    """The virtual hosts after an edit that only replaced routes pinned to a host, keeping
    their place and shape: only those hosts' virtual hosts are encoded again. None otherwise."""
    prev = cache.layouts.get(name)
    if prev is None or len(prev.routes) != len(routes):
        return None
    changed = changed_positions(prev.routes, routes)
    if prev.single:
        # One virtual host: the same places, so only the replaced routes' entries change.
        single = list(prev.single)
        for i in changed:
            single[i] = cache.entry(routes[i], False)
        vhosts = [cache.vhost(name, "all", ["*"], single)]
        cache.layouts[name] = _Layout(
            routes=routes, shared=[], hosts={}, vhosts=vhosts, single=single
        )
        return vhosts
    hosts: set[str] = set()
    for i in changed:
        host, catches = _shape(routes[i], cache)
        if host is None or (host, catches) != _shape(prev.routes[i], cache):
            return None
        hosts.add(host)
    if any(h not in prev.hosts for h in hosts):
        return None  # the single-virtual-host layout: start again
    vhosts = list(prev.vhosts)
    for host in hosts:
        pos, own, above = prev.hosts[host]
        entries = _host_entries(routes, own, prev.shared, above, cache)
        vhosts[pos] = cache.vhost(name, host, [host, f"{host}."], entries)
    cache.layouts[name] = _Layout(
        routes=routes, shared=prev.shared, hosts=prev.hosts, vhosts=vhosts
    )
    return vhosts


def _layout(name: str, routes: tuple[Route, ...], cache: RouteCache) -> list[bytes]:
    by_host: dict[str, list[int]] = {}
    shared: list[int] = []
    for i, r in enumerate(routes):
        if r.match.exact_host is None:
            shared.append(i)
        else:
            by_host.setdefault(r.match.exact_host, []).append(i)
    # Per host: its own routes up to its first catch-all, and the shared routes above that.
    layout: list[tuple[str, list[int], int]] = []
    total = 0
    for host in sorted(by_host):
        own = by_host[host]
        cut = next((k for k, i in enumerate(own) if cache.catches_all(routes[i])), None)
        if cut is not None:
            own = own[: cut + 1]
        shared_above = bisect.bisect_left(shared, own[-1]) if cut is not None else len(shared)
        layout.append((host, own, shared_above))
        total += len(own) + shared_above
    if not by_host or total > MAX_VHOST_FANOUT:
        single = [cache.entry(r, False) for r in routes]
        vhosts = [cache.vhost(name, "all", ["*"], single)]
        cache.layouts[name] = _Layout(
            routes=routes, shared=[], hosts={}, vhosts=vhosts, single=single
        )
        return vhosts
    # Each route encoded once (per form), then shared by the virtual hosts that list it; a
    # virtual host whose entries are the same objects as last time is not encoded again.
    vhosts = [
        cache.vhost(name, h, [h, f"{h}."], _host_entries(routes, own, shared, above, cache))
        for h, own, above in layout
    ]
    vhosts.append(cache.vhost(name, "all", ["*"], [cache.entry(routes[i], False) for i in shared]))
    hosts = {h: (k, own, above) for k, (h, own, above) in enumerate(layout)}
    cache.layouts[name] = _Layout(routes=routes, shared=shared, hosts=hosts, vhosts=vhosts)
    return vhosts


class RouteCache:
    """What encoding a RouteConfiguration made, kept for the next one: each route's entries by
    IR object (its full form and its form inside its own host's virtual host, and whether it
    catches all of its host), and each virtual host's bytes by the entries it was made from."""

    def __init__(self) -> None:
        # IR route id → (route, full entry, in-host entry, catches all of its host).
        self.entries: dict[int, tuple[Route, bytes | None, bytes | None, bool]] = {}
        # RouteConfiguration name → virtual host name → (its entries, its encoded field).
        self.vhosts: dict[str, dict[str, tuple[tuple[bytes, ...], bytes]]] = {}
        self.layouts: dict[str, _Layout] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def prune(self, live: set[int], configs: set[str]) -> None:
        """Keep only the routes and route configurations still served."""
        self.entries = {k: v for k, v in self.entries.items() if k in live}
        self.vhosts = {k: v for k, v in self.vhosts.items() if k in configs}
        self.layouts = {k: v for k, v in self.layouts.items() if k in configs}

    def _hit(self, route: Route) -> tuple[Route, bytes | None, bytes | None, bool]:
        hit = self.entries.get(id(route))
        if hit is None or hit[0] is not route:
            hit = (route, None, None, _catches_all(route))
            self.entries[id(route)] = hit
        return hit

    def catches_all(self, route: Route) -> bool:
        return self._hit(route)[3]

    def entry(self, route: Route, in_host: bool) -> bytes:
        """The route's encoded ``routes`` entry; reused while the IR route object is the same.
        ``in_host``: the form for its own host's virtual host (without the host condition)."""
        hit = self._hit(route)
        known = hit[2] if in_host else hit[1]
        if known is not None:
            return known
        built = route
        m = route.match
        if in_host and 0 <= m.host_header < len(m.headers):
            headers = m.headers[: m.host_header] + m.headers[m.host_header + 1 :]
            built = replace(route, match=replace(m, headers=headers))
        entry = length_delimited(_ROUTES_FIELD, serialize(build_route(built)))
        if in_host:
            self.entries[id(route)] = (route, hit[1], entry, hit[3])
        else:
            self.entries[id(route)] = (route, entry, hit[2], hit[3])
        return entry

    def vhost(self, config: str, name: str, domains: list[str], entries: list[bytes]) -> bytes:
        """A virtual host's encoded field, reused while its entries are the same."""
        key = tuple(entries)
        mine = self.vhosts.setdefault(config, {})
        known = mine.get(name)
        if known is not None and known[0] == key:
            return known[1]
        encoded = _vhost(name, domains, key)
        mine[name] = (key, encoded)
        return encoded


_ROUTES_FIELD = route_v3.VirtualHost.DESCRIPTOR.fields_by_name["routes"].number
_VHOSTS_FIELD = rds_v3.RouteConfiguration.DESCRIPTOR.fields_by_name["virtual_hosts"].number
