"""Service references → EDS clusters, and TraefikService trees → flat weighted backends.

Resolution follows Traefik's CRD provider (``pkg/provider/kubernetes/crd/kubernetes_http.go``):
- ``port`` matches a Service port by number or by name; the pod port is taken from the
  EndpointSlice port *with the same name*.
- An endpoint counts unless ``conditions.serving`` is false; serving-but-terminating endpoints are
  kept as draining (Traefik "fences" them); addresses are de-duplicated across slices.
- Weights: absent is 1, an explicit weight ≤ 0 removes the child, nested TraefikService weights
  multiply out exactly (fractions, then the least common multiple), all children ≤ 0 → 503.
- Any error in a backend tree drops the whole route, as one child error does in Traefik.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pydantic import ValidationError

from translators import names
from translators.errors import Diagnostic, SourceRef
from translators.ir import Cluster, Endpoint, Scheme, UpstreamTransport, WeightedBackend
from translators.models import LoadBalancerSpec, Service, ServicePort
from translators.options import Options
from translators.transport import TransportError, TransportResolver
from translators.world import World

MAX_DEPTH = 32
# RFC 2616 token characters Traefik keeps in a cookie name besides letters and digits.
_TOKEN = "!#$%&'*+-.^`|~"
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
        return out

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
            raise self._fail(
                entry.ref,
                "spec.failover",
                "Unsupported",
                "TraefikService failover is not translated yet (Envoy needs an aggregate "
                f"cluster and a status-code retry to the fallback); routes using "
                f"{ns}/{spec.name} are not served",
            )
        if ts_spec.weighted is None:
            raise self._fail(
                entry.ref,
                "spec",
                "InvalidObject",
                "TraefikService has no weighted, mirroring, highestRandomWeight or failover",
            )
        if ts_spec.weighted.sticky is not None:
            self._warn(
                out, entry.ref, "spec.weighted.sticky", "sticky sessions are not translated yet"
            )
        self._weighted(
            ts_spec.weighted.services,
            ns,
            entry.ref,
            "spec.weighted.services",
            share,
            out,
            inner,
        )

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
            name = "".join(c if c.isascii() and (c.isalnum() or c in _TOKEN) else "_" for c in name)
        else:
            backend = f"{ns}-{spec.name}-{spec.port}@kubernetescrd"
            name = "_" + hashlib.sha1(f"_TRAEFIK_BACKEND_{backend}".encode()).hexdigest()[:5]
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


def integer_weights(shares: list[tuple[str, Fraction]]) -> tuple[WeightedBackend, ...]:
    """Exact fractions → the smallest integer weights with the same ratios, merged by cluster."""
    merged: dict[str, Fraction] = {}
    for cluster, share in shares:
        merged[cluster] = merged.get(cluster, Fraction(0)) + share
    if not merged:
        return ()
    lcm = math.lcm(*(f.denominator for f in merged.values()))
    ints = {c: int(f * lcm) for c, f in merged.items()}
    gcd = math.gcd(*ints.values())
    ints = {c: w // gcd for c, w in ints.items()}
    if sum(ints.values()) > _UINT32_MAX:
        # Astronomically deep nesting: keep ratios to one part in a million instead.
        ints = {c: max(1, round(f * 1_000_000)) for c, f in merged.items()}
    return tuple(WeightedBackend(cluster=c, weight=w) for c, w in sorted(ints.items()))
