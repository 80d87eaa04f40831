"""Service references → EDS clusters, and TraefikService trees → flat weighted backends.

Resolution follows Traefik's CRD provider (``pkg/provider/kubernetes/crd/kubernetes_http.go``):
- ``port`` matches a Service port by number or by name; the pod port is taken from the
  EndpointSlice port *with the same name*.
- An endpoint counts unless ``conditions.serving`` is false; serving-but-terminating endpoints are
  kept as draining (Traefik "fences" them); addresses are de-duplicated across slices.
- Weights: absent is 1, an explicit weight ≤ 0 removes the child, nested TraefikService weights
  multiply out exactly (fractions, then the least common multiple), all children ≤ 0 → 503.
- Any error in a backend tree drops the whole route, as one child error does in Traefik.
- ``weighted.sticky.cookie`` pins a child of a weighted TraefikService the way Traefik's WRR does:
  the route gets a variant per child that matches the child's cookie value (and one for the
  legacy values Traefik still honours and rewrites), before the weighted pick, whose backends each
  set their child's cookie (``WeightedPin``, ``pinned_variants``). Several sticky services in one
  route's tree multiply the variants (each one's state: a child, or not pinned).
- ``failover`` (Traefik ≥ 3.7: ``service``, ``fallback``, ``errors``) becomes one cluster whose
  endpoints carry priorities, the main service's at 0 and the fallback's at 1, and a retry on the
  ``errors.status`` codes that moves to the next priority (``FailoverPlan``).
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from pydantic import ValidationError

from translators import cookie, names
from translators.errors import Diagnostic, SourceRef
from translators.ir import (
    Cluster,
    Endpoint,
    HeaderMatch,
    Retry,
    Scheme,
    UpstreamTransport,
    WeightedBackend,
)
from translators.models import LoadBalancerSpec, Service, ServicePort
from translators.options import Options
from translators.regex import program_size
from translators.transport import TransportError, TransportResolver
from translators.world import World

MAX_DEPTH = 32
# Envoy routes the sticky services of one route may multiply it into (per rule alternative).
MAX_STICKY_ROUTES = 64
_SAME_SITE = {"none": "None", "lax": "Lax", "strict": "Strict"}
_UINT32_MAX = 2**32 - 1


class BackendError(Exception):
    """A broken reference in a backend tree; carries the diagnostic that explains it."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


@dataclass(frozen=True, slots=True, kw_only=True)
class StickyCookie:
    """A server-level sticky cookie (Traefik's ``sticky.cookie``), for the stateful_session
    filter. ``attributes`` are extra cookie attributes (name, value); max_age 0 = session."""

    name: str
    path: str = "/"
    max_age: int = 0
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PinChild:
    """One child of a sticky weighted TraefikService: its entries in ``Backends.shares``
    (``first`` to ``last``), its part of the service, and how a request names it."""

    first: int
    last: int
    part: Fraction
    match: HeaderMatch  # the request's first such cookie holds the child's value
    legacy_match: HeaderMatch  # … or a value older Traefik versions wrote (rewritten)
    set_cookie: str  # the Set-Cookie line that pins the child


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedPin:
    """A weighted TraefikService with ``sticky.cookie``: its entries in ``Backends.shares``."""

    first: int
    last: int
    children: tuple[PinChild, ...]
    unpinned: HeaderMatch  # the request names none of the children (inverted match)
    source: SourceRef

    def routes(self) -> int:
        """Envoy routes this service multiplies a route by: per child two, and one unpinned."""
        return 2 * len(self.children) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverPlan:
    """What a failover asks of the route: the retry to the fallback, and Traefik's body limit
    (a larger body is answered 413; None: no limit)."""

    retry: Retry
    max_body: int | None


@dataclass(slots=True)
class Backends:
    """The flat result for one route: clusters with exact shares, and how Host is passed."""

    shares: list[tuple[str, Fraction]] = field(default_factory=list)
    pass_host_header: set[bool] = field(default_factory=set)
    warnings: list[Diagnostic] = field(default_factory=list)
    # mirroring: (cluster, share of requests copied to it), for the whole route.
    mirrors: list[tuple[str, Fraction]] = field(default_factory=list)
    # highestRandomWeight: the route's backends are picked by a hash of the client address.
    hash_client_ip: bool = False
    # Server-level sticky cookie by cluster (None: that cluster is not sticky).
    sticky: dict[str, StickyCookie | None] = field(default_factory=dict)
    # The route's session cookie, when every cluster it serves agrees on one.
    session: StickyCookie | None = None
    # Weighted TraefikServices with a sticky cookie, outermost first.
    pins: list[WeightedPin] = field(default_factory=list)
    # A failover TraefikService: it is the whole route.
    failover: FailoverPlan | None = None

    @property
    def pin(self) -> WeightedPin | None:
        """The outermost sticky service, if any (for callers that refuse stickiness)."""
        return self.pins[0] if self.pins else None


@dataclass(slots=True)
class ServiceResolver:
    world: World
    options: Options
    clusters: dict[str, Cluster] = field(default_factory=dict)
    transports: TransportResolver | None = None

    def _fail(self, ref: SourceRef, path: str, reason: str, message: str) -> BackendError:
        return BackendError(Diagnostic(source=ref, field=path, reason=reason, message=message))

    def _warn(
        self, out: Backends, ref: SourceRef, path: str, message: str, reason: str = "Unsupported"
    ) -> None:
        out.warnings.append(
            Diagnostic(source=ref, field=path, reason=reason, message=message, severity="warning")
        )

    def resolve_single(
        self, spec: LoadBalancerSpec, namespace: str, ref: SourceRef, path: str
    ) -> Backends:
        """One reference on its own (a middleware's service), named ``path`` in diagnostics."""
        out = Backends()
        self._resolve_one(spec, namespace, ref, path, Fraction(1), out, ())
        self._session(out, ref, path)
        return out

    def resolve(
        self, specs: list[LoadBalancerSpec], namespace: str, ref: SourceRef, path: str
    ) -> Backends:
        """A route's ``services``: several make an implicit weighted round robin."""
        out = Backends()
        if len(specs) == 1:
            # Traefik builds a single service directly: its weight plays no part.
            self._resolve_one(specs[0], namespace, ref, f"{path}[0]", Fraction(1), out, ())
        else:
            self._weighted(specs, namespace, ref, path, Fraction(1), out, ())
        self._session(out, ref, path)
        self._limit_pins(out)
        return out

    def _limit_pins(self, out: Backends) -> None:
        """Sticky services multiply a route's Envoy routes: past ``MAX_STICKY_ROUTES`` the last
        ones (inner, or later in the split) are not sticky."""
        out.pins.sort(key=lambda p: (p.first, -p.last))
        kept: list[WeightedPin] = []
        routes = 1
        for pin in out.pins:
            if routes * pin.routes() <= MAX_STICKY_ROUTES:
                kept.append(pin)
                routes *= pin.routes()
                continue
            self._warn(
                out,
                pin.source,
                "spec.weighted.sticky",
                f"the route's sticky services would need more than {MAX_STICKY_ROUTES} Envoy "
                "routes (2 per child plus 1, multiplied across sticky services); this one is "
                "not sticky",
            )
        out.pins = kept

    def _session(self, out: Backends, ref: SourceRef, path: str) -> None:
        """Envoy keeps one session cookie per route (stateful_session): it pins faithfully when
        every served cluster has the same sticky cookie."""
        live = {c for c, share in out.shares if share > 0}
        cookies = {out.sticky.get(c) for c in live}
        if len(cookies) == 1:
            out.session = cookies.pop()
        elif any(c is not None for c in cookies):
            self._warn(
                out,
                ref,
                path,
                "services have different sticky cookies (or only some are sticky): Envoy keeps "
                "one session cookie per route, so no server is pinned",
            )

    def _weighted(
        self,
        specs: list[LoadBalancerSpec],
        namespace: str,
        ref: SourceRef,
        path: str,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        weights = [1 if s.weight is None else s.weight for s in specs]
        total = sum(w for w in weights if w > 0)
        if total == 0:
            return  # every child removed: the caller turns an empty result into a 503
        for i, (spec, weight) in enumerate(zip(specs, weights, strict=True)):
            if weight <= 0:
                continue
            self._resolve_one(
                spec, namespace, ref, f"{path}[{i}]", share * Fraction(weight, total), out, stack
            )

    def _resolve_one(
        self,
        spec: LoadBalancerSpec,
        namespace: str,
        ref: SourceRef,
        path: str,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        ns = spec.namespace or namespace
        if ns != namespace and not self.options.allow_cross_namespace:
            raise self._fail(
                ref,
                f"{path}.namespace",
                "CrossNamespaceRefused",
                f"reference to {spec.kind or 'Service'} {ns}/{spec.name} from namespace "
                f"{namespace} is refused (enable --allow-cross-namespace)",
            )
        if "@" in spec.name:
            raise self._fail(
                ref,
                f"{path}.name",
                "Unsupported",
                f"cross-provider reference {spec.name!r}: Switchman has one provider",
            )
        if spec.kind == "TraefikService":
            self._traefikservice(spec, ns, ref, path, share, out, stack)
            return
        cluster = self._cluster(spec, ns, ref, path, out)
        out.shares.append((cluster.name, share))
        cookie = self._sticky(spec, ns, ref, path, out)
        if out.sticky.setdefault(cluster.name, cookie) != cookie:
            out.sticky[cluster.name] = None  # one cluster, two cookies: cannot pin both
        out.pass_host_header.add(True if spec.pass_host_header is None else spec.pass_host_header)

    def _traefikservice(
        self,
        spec: LoadBalancerSpec,
        ns: str,
        ref: SourceRef,
        path: str,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        key = (ns, spec.name)
        if key in stack:
            cycle = " → ".join(f"{n}/{s}" for n, s in (*stack, key))
            raise self._fail(
                ref, f"{path}.name", "CyclicReference", f"TraefikService cycle: {cycle}"
            )
        if len(stack) >= MAX_DEPTH:
            raise self._fail(
                ref, f"{path}.name", "TooDeep", f"TraefikService nesting over {MAX_DEPTH}"
            )
        entry = self.world.traefikservices.get(key)
        if entry is None:
            raise self._fail(
                ref, f"{path}.name", "ServiceNotFound", f"TraefikService {ns}/{spec.name} not found"
            )
        ts_spec = entry.obj.spec
        inner = (*stack, key)
        if ts_spec.mirroring is not None:
            self._mirroring(ts_spec.mirroring, ns, entry.ref, share, out, inner)
            return
        if ts_spec.highest_random_weight is not None:
            self._hrw(ts_spec.highest_random_weight, ns, entry.ref, share, out, inner)
            return
        if ts_spec.failover is not None:
            self._failover(ts_spec.failover, ns, spec.name, entry.ref, share, out, inner)
            return
        if ts_spec.weighted is None:
            raise self._fail(
                entry.ref,
                "spec",
                "InvalidObject",
                "TraefikService has no weighted, mirroring, highestRandomWeight or failover",
            )
        pin = None
        if ts_spec.weighted.sticky is not None:
            pin = self._wrr_cookie(ts_spec.weighted.sticky, ns, spec.name, entry.ref, out)
        if pin is None:
            self._weighted(
                ts_spec.weighted.services,
                ns,
                entry.ref,
                "spec.weighted.services",
                share,
                out,
                inner,
            )
            return
        self._weighted_pinned(ts_spec.weighted.services, ns, entry.ref, pin, share, out, inner)

    def _whole_route(self, share: Fraction, ref: SourceRef, path: str, what: str) -> None:
        if share != 1:
            raise self._fail(
                ref,
                path,
                "Unsupported",
                f"{what} below a weighted split with other children: Envoy applies it to a "
                "whole route, not to one branch of a split; the route is not served",
            )

    def _spec(self, raw: object, ref: SourceRef, path: str) -> LoadBalancerSpec:
        try:
            return LoadBalancerSpec.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise self._fail(
                ref, f"{path}.{loc}" if loc else path, "InvalidObject", err["msg"]
            ) from None

    def _mirroring(
        self,
        raw: dict[str, Any],
        ns: str,
        ref: SourceRef,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        """Main service as the route's backends; each mirror → a request_mirror_policy."""
        self._whole_route(share, ref, "spec.mirroring", "mirroring")
        main = self._spec(raw, ref, "spec.mirroring")
        if raw.get("mirrorBody") is False:
            # Fail closed: the mirror would receive request bodies its owner chose not to send.
            raise self._fail(
                ref,
                "spec.mirroring.mirrorBody",
                "Unsupported",
                "mirrorBody: false has no Envoy equivalent (Envoy mirrors the body too); "
                "the route is not served rather than send bodies to the mirror",
            )
        max_body = raw.get("maxBodySize")
        if max_body is not None and max_body != -1:
            self._warn(
                out,
                ref,
                "spec.mirroring.maxBodySize",
                f"maxBodySize {max_body} is ignored: Envoy mirrors requests of any body size "
                "(Traefik skips the mirror above it)",
            )
        mirrors = raw.get("mirrors") or []
        if not isinstance(mirrors, list):
            raise self._fail(ref, "spec.mirroring.mirrors", "InvalidObject", "must be a list")
        found: list[tuple[str, Fraction]] = []
        for i, m in enumerate(mirrors):
            mpath = f"spec.mirroring.mirrors[{i}]"
            mspec = self._spec(m, ref, mpath)
            percent = m.get("percent", 0) if isinstance(m, dict) else 0
            if isinstance(percent, bool) or not isinstance(percent, int):
                raise self._fail(
                    ref,
                    f"{mpath}.percent",
                    "InvalidObject",
                    f"percent {percent!r} is not an integer",
                )
            if not 0 <= percent <= 100:
                raise self._fail(
                    ref,
                    f"{mpath}.percent",
                    "InvalidService",
                    f"percent {percent} is outside 0 to 100 (as in Traefik)",
                )
            sub = Backends()
            self._resolve_one(mspec, ns, ref, mpath, Fraction(1), sub, stack)
            out.warnings.extend(sub.warnings)
            clusters = {c for c, _ in sub.shares}
            if len(clusters) != 1 or sub.mirrors or sub.hash_client_ip:
                raise self._fail(
                    ref,
                    f"{mpath}.name",
                    "Unsupported",
                    f"mirror {mspec.name!r} is not one Service: Envoy mirrors to one cluster; "
                    "the route is not served",
                )
            if percent > 0:  # Traefik: percent 0 (the default) mirrors nothing
                found.append((clusters.pop(), Fraction(percent, 100)))
        self._resolve_one(main, ns, ref, "spec.mirroring", Fraction(1), out, stack)
        out.mirrors.extend(found)

    def _hrw(
        self,
        raw: dict[str, Any],
        ns: str,
        ref: SourceRef,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        """One service per client address, chosen by a hash: weighted_clusters with
        use_hash_policy and a source-IP hash policy. Children must each be one cluster, since a
        client sticks to a child and the child balances its own servers."""
        self._whole_route(share, ref, "spec.highestRandomWeight", "highestRandomWeight")
        services = raw.get("services") or []
        if not isinstance(services, list):
            raise self._fail(
                ref, "spec.highestRandomWeight.services", "InvalidObject", "must be a list"
            )
        specs = [
            self._spec(s, ref, f"spec.highestRandomWeight.services[{i}]")
            for i, s in enumerate(services)
        ]
        for i, spec in enumerate(specs):
            path = f"spec.highestRandomWeight.services[{i}]"
            if spec.kind != "TraefikService":
                continue
            sub = Backends()
            self._resolve_one(spec, ns, ref, path, Fraction(1), sub, stack)
            if len({c for c, _ in sub.shares}) > 1 or sub.mirrors or sub.hash_client_ip:
                raise self._fail(
                    ref,
                    f"{path}.name",
                    "Unsupported",
                    f"highestRandomWeight child {spec.name!r} is not one Service: Envoy can pin "
                    "a client to a cluster, not to a nested split; the route is not served",
                )
        before = len(out.shares)
        self._weighted(specs, ns, ref, "spec.highestRandomWeight.services", share, out, stack)
        if len(out.shares) > before:
            out.hash_client_ip = True

    def _weighted_pinned(
        self,
        specs: list[LoadBalancerSpec],
        ns: str,
        ref: SourceRef,
        pin: tuple[str, cookie.CookieAttributes],
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        """A weighted TraefikService with a sticky cookie (Traefik's WRR with ``sticky``): the
        children as ``_weighted`` does, each one's entries recorded with the cookie that pins it.
        A child with a weight ≤ 0 is not in Traefik's sticky table either: its cookie pins
        nothing."""
        name, attrs = pin
        path = "spec.weighted.sticky.cookie"
        first = len(out.shares)
        weights = [1 if s.weight is None else s.weight for s in specs]
        total = sum(w for w in weights if w > 0)
        children: list[PinChild] = []
        for i, (spec, weight) in enumerate(zip(specs, weights, strict=True)):
            if weight <= 0:
                continue
            start = len(out.shares)
            part = Fraction(weight, total)
            self._resolve_one(
                spec, ns, ref, f"spec.weighted.services[{i}]", share * part, out, stack
            )
            handler = _handler_name(spec, ns)
            value = cookie.sticky_value(handler)
            children.append(
                PinChild(
                    first=start,
                    last=len(out.shares),
                    part=part,
                    match=self._cookie_match(name, (value,), ref, path, out),
                    legacy_match=self._cookie_match(
                        name, cookie.legacy_values(handler), ref, path, out
                    ),
                    set_cookie=cookie.set_cookie(name, value, attrs),
                )
            )
        known = tuple(
            v
            for child in specs_handlers(specs, weights, ns)
            for v in (cookie.sticky_value(child), *cookie.legacy_values(child))
        )
        unpinned = self._cookie_match(name, known, ref, path, out)
        out.pins.append(
            WeightedPin(
                first=first,
                last=len(out.shares),
                children=tuple(children),
                unpinned=replace(unpinned, invert=True),
                source=ref,
            )
        )

    def _cookie_match(
        self, name: str, values: tuple[str, ...], ref: SourceRef, path: str, out: Backends
    ) -> HeaderMatch:
        limit = self.options.max_regex_program_size
        pattern = cookie.first_cookie_regex(name, values)
        if program_size(pattern) > limit:
            pattern = cookie.any_cookie_regex(name, values)
            message = (
                f"cookie name {name!r} is too long for an exact match within the regex size "
                f"limit ({limit}): a request carrying two cookies of that name is pinned by "
                "either (Traefik reads the first)"
            )
            if not any(w.message == message for w in out.warnings):
                self._warn(out, ref, f"{path}.name", message)
            if program_size(pattern) > limit:
                raise self._fail(
                    ref,
                    f"{path}.name",
                    "Unsupported",
                    f"cookie name {name!r} or a child's name is too long for a regex within "
                    f"the size limit ({limit}); the route is not served",
                )
        return HeaderMatch(name="cookie", kind="regex", value=pattern)

    def _wrr_cookie(
        self, raw: dict[str, Any], ns: str, ts_name: str, ref: SourceRef, out: Backends
    ) -> tuple[str, cookie.CookieAttributes] | None:
        """``weighted.sticky.cookie`` as Traefik's CRD provider reads it: name (default: from
        the service's name), secure, httpOnly, sameSite, maxAge, path (default ``/``), domain."""
        path = "spec.weighted.sticky"
        raw_cookie = raw.get("cookie")
        if raw_cookie is None:
            self._warn(
                out,
                ref,
                path,
                "sticky without cookie has no effect (as in Traefik)",
                "InvalidObject",
            )
            return None
        path += ".cookie"
        if not isinstance(raw_cookie, dict):
            raise self._fail(ref, path, "InvalidObject", "cookie must be an object")

        def typed(key: str, kind: type, what: str) -> Any:
            value = raw_cookie.get(key)
            if value is not None and (
                not isinstance(value, kind) or (kind is int and isinstance(value, bool))
            ):
                raise self._fail(
                    ref, f"{path}.{key}", "InvalidObject", f"{key} must be {what}, not {value!r}"
                )
            return value

        name = typed("name", str, "a string")
        if name:
            name = cookie.sanitize_name(name)
        else:
            name = cookie.generated_name(f"{cookie.normalize(f'{ns}-{ts_name}')}@kubernetescrd")
        same_site = typed("sameSite", str, "a string") or ""
        if same_site and same_site.lower() not in ("none", "lax", "strict"):
            self._warn(
                out,
                ref,
                f"{path}.sameSite",
                f"sameSite {same_site!r} is not none, lax or strict; no SameSite attribute "
                "(as in Traefik)",
                "InvalidObject",
            )
        domain = typed("domain", str, "a string") or ""
        if domain and not cookie.valid_domain(domain):
            self._warn(
                out,
                ref,
                f"{path}.domain",
                f"{domain!r} is not a valid cookie domain: the cookie has no Domain attribute "
                "(as in Traefik)",
                "InvalidObject",
            )
        cookie_path = typed("path", str, "a string")
        return name, cookie.CookieAttributes(
            path="/" if cookie_path is None else cookie_path,
            domain=domain,
            max_age=typed("maxAge", int, "an integer") or 0,
            http_only=bool(typed("httpOnly", bool, "true or false")),
            secure=bool(typed("secure", bool, "true or false")),
            same_site=same_site,
        )

    def _failover(
        self,
        raw: dict[str, Any],
        ns: str,
        ts_name: str,
        ref: SourceRef,
        share: Fraction,
        out: Backends,
        stack: tuple[tuple[str, str], ...],
    ) -> None:
        """Traefik's failover (pkg/server/service/loadbalancer/failover): every request goes to
        the main service; an answer whose status is in ``errors.status`` is dropped and the
        request, body included, is sent again to the fallback, whose answer is final."""
        path = "spec.failover"
        self._whole_route(share, ref, path, "failover")
        if raw.get("healthCheck") is not None:
            self._warn(
                out,
                ref,
                f"{path}.healthCheck",
                "healthCheck is not a field of the TraefikService CRD (only Traefik's file "
                "provider has it); ignored, as Traefik ignores it",
                "Ignored",
            )
        sides: list[Backends] = []
        for key in ("service", "fallback"):
            if raw.get(key) is None:
                raise self._fail(ref, f"{path}.{key}", "InvalidObject", f"{key} is required")
            spec = self._spec(raw[key], ref, f"{path}.{key}")
            sub = Backends()
            self._resolve_one(spec, ns, ref, f"{path}.{key}", Fraction(1), sub, stack)
            sides.append(self._failover_side(sub, ref, f"{path}.{key}", out))
        main, fallback = sides
        codes, max_body = self._failover_errors(raw.get("errors"), ref, out)
        out.pass_host_header |= main.pass_host_header | fallback.pass_host_header
        if not main.shares:
            # Every child of the main service removed: Traefik's main answers 503 itself.
            if 503 in codes:
                out.shares.extend(fallback.shares)
            return
        if not fallback.shares:
            self._warn(
                out,
                ref,
                f"{path}.fallback",
                "the fallback service has no children (all weights ≤ 0): Traefik answers 503 "
                "when the main service fails; Envoy returns the main service's answer",
            )
        leaves = [
            (self.clusters[c], s, priority)
            for priority, side in enumerate((main, fallback))
            for c, s in side.shares
        ]
        kinds = {(c.scheme, c.transport, c.system_ca_file) for c, _, _ in leaves}
        if len(kinds) > 1:
            raise self._fail(
                ref,
                path,
                "Unsupported",
                "the main and fallback services use different schemes or ServersTransports: "
                "Envoy's failover cluster has one of each; the route is not served",
            )
        first = leaves[0][0]
        name = names.failover_cluster_name(ns, ts_name)
        self.clusters[name] = Cluster(
            name=name,
            service=f"{ns}/{ts_name}",
            port=0,
            scheme=first.scheme,
            endpoints=_priority_endpoints(leaves),
            source=ref,
            transport=first.transport,
            system_ca_file=first.system_ca_file,
            failover=True,
        )
        out.shares.append((name, share))
        # Traefik answers 502 for a connection refused or reset and for a server that closes
        # without answering: Envoy sees those as network errors, not as a status.
        network = ("connect-failure", "refused-stream", "reset") if 502 in codes else ()
        out.failover = FailoverPlan(
            retry=Retry(
                num_retries=1,
                retry_on=("retriable-status-codes", *network),
                status_codes=codes,
                next_priority=True,
            ),
            max_body=max_body,
        )

    def _failover_side(self, sub: Backends, ref: SourceRef, path: str, out: Backends) -> Backends:
        """The main or fallback service must be a plain weighted set of Services."""
        what = (
            "a mirroring service"
            if sub.mirrors
            else "a highestRandomWeight service"
            if sub.hash_client_ip
            else "a failover service"
            if sub.failover is not None
            else None
        )
        if what is not None:
            raise self._fail(
                ref,
                path,
                "Unsupported",
                f"{what} inside a failover is not translated (Envoy's failover is one cluster "
                "with priorities); the route is not served",
            )
        out.warnings.extend(w for w in sub.warnings if w not in out.warnings)
        if sub.pins or any(c is not None for c in sub.sticky.values()):
            self._warn(
                out,
                ref,
                path,
                "sticky cookies inside a failover are not translated: no cookie is set and no "
                "server or service is pinned",
            )
        return sub

    def _failover_errors(
        self, raw: object, ref: SourceRef, out: Backends
    ) -> tuple[tuple[int, ...], int | None]:
        """``errors.status`` (Traefik's ``types.NewHTTPCodeRanges``: ``"500"``, ``"500-599"``)
        and ``errors.maxRequestBodyBytes`` (-1: no limit)."""
        path = "spec.failover.errors"
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self._fail(ref, path, "InvalidObject", "errors must be an object")
        status = raw.get("status")
        if not status:
            raise self._fail(
                ref,
                f"{path}.status",
                "InvalidService",
                "without errors.status Traefik fails over on the main service's health status "
                "only, which needs a health check, and the CRD allows healthCheck on "
                "ExternalName Services only: Traefik rejects this failover too; the route is "
                "not served",
            )
        if not isinstance(status, list):
            raise self._fail(ref, f"{path}.status", "InvalidObject", "status must be a list")
        codes: set[int] = set()
        for i, block in enumerate(status):
            bounds: list[int | None] = (
                [_atoi(p) for p in block.split("-")] if isinstance(block, str) else [None]
            )
            if len(bounds) == 1:
                bounds.append(bounds[0])
            low, high = bounds[0], bounds[1]
            if low is None or high is None:
                raise self._fail(
                    ref,
                    f"{path}.status[{i}]",
                    "InvalidService",
                    f"{block!r} is not a status code or a range like 500-599 (Traefik rejects "
                    "it); the route is not served",
                )
            codes.update(range(max(low, 100), min(high, 599) + 1))
        if not codes:
            self._warn(
                out,
                ref,
                f"{path}.status",
                "errors.status holds no HTTP status (100 to 599): requests never fall back "
                "(as in Traefik)",
                "Ignored",
            )
        limit = raw.get("maxRequestBodyBytes")
        if limit is None:
            limit = -1
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise self._fail(
                ref,
                f"{path}.maxRequestBodyBytes",
                "InvalidObject",
                f"maxRequestBodyBytes must be an integer, not {limit!r}",
            )
        max_body: int | None = None
        if limit >= 0:
            max_body = max(limit, 1)
            if limit == 0:
                self._warn(
                    out,
                    ref,
                    f"{path}.maxRequestBodyBytes",
                    "0: Envoy's buffer limit is at least 1 byte, so a 1-byte body is accepted "
                    "(Traefik answers 413 to any body)",
                )
            if limit > _UINT32_MAX:
                max_body = None
                self._warn(
                    out,
                    ref,
                    f"{path}.maxRequestBodyBytes",
                    f"{limit} is above Envoy's buffer limit ({_UINT32_MAX}): no limit is applied",
                )
        return tuple(sorted(codes)), max_body

    def _sticky(
        self, spec: LoadBalancerSpec, ns: str, ref: SourceRef, path: str, out: Backends
    ) -> StickyCookie | None:
        """Traefik's server-level ``sticky.cookie`` (pkg/server/cookie: default name is ``_``
        and the first 5 hex digits of sha1("_TRAEFIK_BACKEND_" + service name))."""
        if spec.sticky is None:
            return None
        raw = spec.sticky.get("cookie")
        if not isinstance(raw, dict):
            self._warn(
                out, ref, f"{path}.sticky", "sticky without cookie has no effect", "InvalidObject"
            )
            return None
        fpath = f"{path}.sticky.cookie"
        name = raw.get("name") or ""
        if name:
            name = cookie.sanitize_name(name)
        else:
            name = cookie.generated_name(f"{ns}-{spec.name}-{spec.port}@kubernetescrd")
        max_age = raw.get("maxAge") or 0
        if isinstance(max_age, bool) or not isinstance(max_age, int):
            raise self._fail(ref, f"{fpath}.maxAge", "InvalidObject", "maxAge must be an integer")
        if max_age < 0:
            self._warn(
                out,
                ref,
                f"{fpath}.maxAge",
                "a negative maxAge makes Traefik expire the cookie at once (no stickiness); "
                "Envoy cannot send an expired cookie, so no cookie is set",
            )
            return None
        attributes: list[tuple[str, str]] = []
        if raw.get("domain"):
            attributes.append(("Domain", str(raw["domain"])))
        # HttpOnly: Envoy's session cookie always carries it (Traefik's default is off).
        if raw.get("secure"):
            attributes.append(("Secure", ""))
        same_site = str(raw.get("sameSite") or "").lower()
        if same_site in _SAME_SITE:
            attributes.append(("SameSite", _SAME_SITE[same_site]))
        elif same_site:
            self._warn(
                out,
                ref,
                f"{fpath}.sameSite",
                f"sameSite {same_site!r} is not none, lax or strict; no SameSite attribute "
                "(as in Traefik)",
                "InvalidObject",
            )
        return StickyCookie(
            name=name,
            path=str(raw.get("path") or "/"),
            max_age=max_age,
            attributes=tuple(attributes),
        )

    def _cluster(
        self, spec: LoadBalancerSpec, ns: str, ref: SourceRef, path: str, out: Backends
    ) -> Cluster:
        entry = self.world.services.get((ns, spec.name))
        if entry is None:
            raise self._fail(
                ref, f"{path}.name", "ServiceNotFound", f"Service {ns}/{spec.name} not found"
            )
        svc = entry.obj
        if spec.port is None:
            raise self._fail(ref, f"{path}.port", "PortNotFound", "port is required for a Service")
        svc_port = _service_port(svc, spec.port)
        if svc_port is None:
            raise self._fail(
                ref,
                f"{path}.port",
                "PortNotFound",
                f"Service {ns}/{spec.name} has no port {spec.port!r}",
            )
        if spec.middlewares:
            # Fail closed: a service-level middleware may be an auth or an allow-list.
            raise self._fail(
                ref,
                f"{path}.middlewares",
                "Unsupported",
                "service-level middlewares are not translated yet; the route is not served "
                "rather than served without them",
            )
        if spec.health_check is not None:
            raise self._fail(
                ref,
                f"{path}.healthCheck",
                "InvalidService",
                "healthCheck is only allowed on ExternalName services (as in Traefik); "
                "the route is not served",
            )
        if spec.response_forwarding is not None:
            self._warn(
                out,
                ref,
                f"{path}.responseForwarding",
                "responseForwarding is ignored: Envoy streams responses as they arrive",
            )
        for fld in ("passive_health_check", "node_port_lb"):
            if getattr(spec, fld) is not None:
                self._warn(
                    out,
                    ref,
                    f"{path}.{_camel(fld)}",
                    f"{_camel(fld)} is not translated yet; ignored",
                )
        if spec.strategy not in (None, "wrr", "RoundRobin"):
            self._warn(
                out,
                ref,
                f"{path}.strategy",
                f"strategy {spec.strategy!r} is not translated yet; round robin is used",
            )
        scheme = _scheme(spec.scheme, svc_port)
        if scheme is None:
            raise self._fail(
                ref,
                f"{path}.scheme",
                "InvalidScheme",
                f"scheme {spec.scheme!r} is not http, https or h2c",
            )
        if svc.spec.type == "ExternalName":
            raise self._fail(
                ref,
                f"{path}.name",
                "Unsupported"
                if self.options.allow_external_name_services
                else "ExternalNameRefused",
                f"Service {ns}/{spec.name} is an ExternalName service, which "
                + (
                    "is not translated yet"
                    if self.options.allow_external_name_services
                    else "is refused (allowExternalNameServices is off)"
                ),
            )
        if spec.native_lb:
            if not svc.spec.cluster_ip or svc.spec.cluster_ip == "None":
                raise self._fail(
                    ref,
                    f"{path}.nativeLB",
                    "InvalidService",
                    f"nativeLB needs a ClusterIP, and Service {ns}/{spec.name} is headless",
                )
            endpoints: tuple[Endpoint, ...] = (
                Endpoint(address=svc.spec.cluster_ip, port=svc_port.port),
            )
            name = names.cluster_name(ns, spec.name, svc_port.port) + "/native"
        else:
            endpoints = self._endpoints(ns, spec.name, svc_port, out)
            name = names.cluster_name(ns, spec.name, svc_port.port)
        if scheme != "http":
            name += f"/{scheme}"
        transport = self._transport(spec, ns, ref, path, scheme, out)
        if transport is not None:
            name = names.cluster_variant(name, f"transport/{transport.name.partition('/')[2]}")
        if not endpoints and not self.options.allow_empty_services:
            raise self._fail(
                ref,
                f"{path}.name",
                "EmptyService",
                f"Service {ns}/{spec.name} port {spec.port} has no serving endpoints; "
                "the route is not served (allowEmptyServices is off)",
            )
        cluster = Cluster(
            name=name,
            service=f"{ns}/{spec.name}",
            port=svc_port.port,
            scheme=scheme,
            endpoints=endpoints,
            source=entry.ref,
            transport=transport,
            system_ca_file=self.options.upstream_ca_file if scheme == "https" else "",
        )
        self.clusters[name] = cluster
        return cluster

    def _transport(
        self,
        spec: LoadBalancerSpec,
        ns: str,
        ref: SourceRef,
        path: str,
        scheme: Scheme,
        out: Backends,
    ) -> UpstreamTransport | None:
        """The reference's ``serversTransport``: a ServersTransport in the same namespace."""
        name = spec.servers_transport
        if not name:
            return None
        fpath = f"{path}.serversTransport"
        if "@" in name:
            raise self._fail(
                ref,
                fpath,
                "Unsupported",
                f"cross-provider ServersTransport reference {name!r}: Switchman has one "
                "provider; the route is not served",
            )
        if self.transports is None:
            self.transports = TransportResolver(self.world)
        try:
            transport, warnings = self.transports.resolve(ns, name)
        except KeyError:
            raise self._fail(
                ref,
                fpath,
                "ServersTransportNotFound",
                f"ServersTransport {ns}/{name} not found; the route is not served",
            ) from None
        except TransportError as exc:
            d = exc.diagnostic
            raise BackendError(
                Diagnostic(
                    source=d.source,
                    field=d.field,
                    reason=d.reason,
                    message=f"{d.message} (used by {ref.describe()} {fpath}); the route is "
                    "not served",
                )
            ) from None
        for w in warnings:
            if w not in out.warnings:
                out.warnings.append(w)
        if scheme == "http":
            self._warn(
                out,
                ref,
                fpath,
                f"scheme is http: the TLS settings of ServersTransport {ns}/{name} do not "
                "apply (its timeouts do)",
                "Ignored",
            )
        return transport

    def _endpoints(
        self, ns: str, svc: str, port: ServicePort, out: Backends
    ) -> tuple[Endpoint, ...]:
        seen: dict[tuple[str, int], Endpoint] = {}
        for entry in self.world.endpointslices.get((ns, svc), ()):
            sl = entry.obj
            if sl.address_type not in ("IPv4", "IPv6"):
                self._warn(
                    out,
                    entry.ref,
                    "addressType",
                    f"addressType {sl.address_type} is not read (only IPv4 and IPv6); "
                    "its endpoints are ignored",
                )
                continue
            target = next(
                (p.port for p in sl.ports or () if (p.name or "") == port.name and p.port),
                None,
            )
            if target is None:
                continue
            family = 4 if sl.address_type == "IPv4" else 6
            for i, ep in enumerate(sl.endpoints or ()):
                if ep.conditions.serving is False:
                    continue
                draining = bool(ep.conditions.terminating)
                for j, addr in enumerate(ep.addresses):
                    if not _is_ip(addr, family):
                        self._warn(
                            out,
                            entry.ref,
                            f"endpoints[{i}].addresses[{j}]",
                            f"{addr!r} is not an {sl.address_type} address; ignored",
                            reason="InvalidEndpoint",
                        )
                        continue
                    key = (addr, target)
                    prev = seen.get(key)
                    if prev is None or (prev.draining and not draining):
                        seen[key] = Endpoint(address=addr, port=target, draining=draining)
        return tuple(seen[k] for k in sorted(seen))


def _is_ip(text: str, family: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == family
    except ValueError:
        return False


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.upper() if p in ("lb",) else p.title() for p in rest)


def _service_port(svc: Service, port: int | str) -> ServicePort | None:
    for p in svc.spec.ports:
        if isinstance(port, int) and p.port == port:
            return p
        if isinstance(port, str) and (p.name == port or str(p.port) == port):
            return p
    return None


def _scheme(scheme: str | None, port: ServicePort) -> Scheme | None:
    if scheme is None:
        return "https" if port.port == 443 or port.name.startswith("https") else "http"
    if scheme in ("http", "https", "h2c"):
        return scheme  # type: ignore[return-value]
    return None


Headers = tuple[tuple[str, str], ...]


def integer_weights(
    shares: list[tuple[str, Fraction]], headers: list[Headers] | None = None
) -> tuple[WeightedBackend, ...]:
    """Exact fractions → the smallest integer weights with the same ratios, merged by cluster
    (and by the response headers each share adds, ``headers[i]`` for ``shares[i]``)."""
    merged: dict[tuple[str, Headers], Fraction] = {}
    for i, (cluster, share) in enumerate(shares):
        key = (cluster, headers[i] if headers is not None else ())
        merged[key] = merged.get(key, Fraction(0)) + share
    if not merged:
        return ()
    ints = dict(zip(merged, _ratio_ints(list(merged.values())), strict=True))
    return tuple(
        WeightedBackend(cluster=c, weight=w, response_headers=h)
        for (c, h), w in sorted(ints.items())
    )


def _ratio_ints(fractions: list[Fraction]) -> list[int]:
    """The smallest integers with the same ratios (to one part in a million past uint32)."""
    lcm = math.lcm(*(f.denominator for f in fractions))
    ints = [int(f * lcm) for f in fractions]
    gcd = math.gcd(*ints)
    ints = [w // gcd for w in ints]
    if sum(ints) > _UINT32_MAX:
        # Astronomically deep nesting: keep ratios to one part in a million instead.
        ints = [max(1, round(f * 1_000_000)) for f in fractions]
    return ints


def pinned_variants(
    b: Backends,
) -> list[tuple[tuple[HeaderMatch, ...], tuple[WeightedBackend, ...]]]:
    """The route's backends by the sticky cookies a request carries. Each sticky service is in
    one of its states — pinned to a child by its value, pinned by a legacy value (the child's
    backends rewrite the cookie), or unpinned (the weighted pick: each child's backends set its
    cookie) — and every combination is one entry, with the conditions that select it. The states
    of one service exclude one another, so the entries do too; the last one (every service
    unpinned) needs no condition and goes last. Without a sticky service: that entry only."""
    out: list[tuple[tuple[HeaderMatch, ...], tuple[WeightedBackend, ...]]] = []
    states = [
        [*((c, False) for c in pin.children), *((c, True) for c in pin.children), (None, False)]
        for pin in b.pins
    ]
    for combo in itertools.product(*states):
        keep = [True] * len(b.shares)
        scale = [Fraction(1)] * len(b.shares)
        headers: list[Headers] = [()] * len(b.shares)
        conditions: list[HeaderMatch] = []
        last = all(child is None for child, _ in combo)
        for pin, (child, legacy) in zip(b.pins, combo, strict=True):
            if child is None:
                if not last:
                    conditions.append(pin.unpinned)
                for c in pin.children:
                    for k in range(c.first, c.last):
                        headers[k] += (("set-cookie", c.set_cookie),)
                continue
            conditions.append(child.legacy_match if legacy else child.match)
            for k in range(pin.first, pin.last):
                if child.first <= k < child.last:
                    scale[k] /= child.part
                    if legacy:
                        headers[k] += (("set-cookie", child.set_cookie),)
                else:
                    keep[k] = False
        entries = [
            (cluster, share * scale[k], headers[k])
            for k, (cluster, share) in enumerate(b.shares)
            if keep[k]
        ]
        out.append(
            (
                tuple(conditions),
                integer_weights([(c, s) for c, s, _ in entries], [h for _, _, h in entries]),
            )
        )
    return out


def specs_handlers(specs: list[LoadBalancerSpec], weights: list[int], ns: str) -> list[str]:
    """The handler names of the children Traefik's sticky table holds (weight > 0)."""
    return [_handler_name(s, ns) for s, w in zip(specs, weights, strict=True) if w > 0]


def _handler_name(spec: LoadBalancerSpec, ns: str) -> str:
    """The name Traefik's CRD provider gives a weighted child (``fullServiceName``), which its
    sticky cookie value is hashed from: ``<ns>-<name>-<port>`` for a Service, ``<ns>-<name>``
    for a TraefikService, normalized."""
    child_ns = spec.namespace or ns
    if spec.kind != "TraefikService" and spec.port not in (None, 0, ""):
        return cookie.normalize(f"{child_ns}-{spec.name}-{spec.port}")
    return cookie.normalize(f"{child_ns}-{spec.name}")


def _atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi``: an optional sign and ASCII digits, nothing else."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    return int(text)


def _priority_endpoints(leaves: list[tuple[Cluster, Fraction, int]]) -> tuple[Endpoint, ...]:
    """The failover cluster's endpoints: each Service's share of its priority split evenly over
    its serving (not terminating) endpoints, as Traefik's service-then-server round robin does;
    an address in two Services of one priority gets both parts."""
    merged: dict[tuple[int, str, int], tuple[Fraction, bool]] = {}
    for cluster, share, priority in leaves:
        active = sum(1 for e in cluster.endpoints if not e.draining)
        for e in cluster.endpoints:
            part = share / active if active and not e.draining else Fraction(0)
            key = (priority, e.address, e.port)
            prev = merged.get(key)
            merged[key] = (
                (part, e.draining) if prev is None else (prev[0] + part, prev[1] and e.draining)
            )
    out: list[Endpoint] = []
    for priority in sorted({k[0] for k in merged}):
        keys = sorted(k for k in merged if k[0] == priority)
        live = [k for k in keys if merged[k][0] > 0]
        weights = (
            dict(zip(live, _ratio_ints([merged[k][0] for k in live]), strict=True)) if live else {}
        )
        out.extend(
            Endpoint(
                address=address,
                port=port,
                draining=merged[(priority, address, port)][1],
                priority=priority,
                weight=weights.get((priority, address, port), 1),
            )
            for _, address, port in keys
        )
    return tuple(out)
