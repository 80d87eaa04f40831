"""The intermediate representation between Kubernetes objects and Envoy protos.

Frozen, slotted, keyword-only dataclasses with tuples, never lists: an IR value is hashable,
comparable and safe to share between the pipeline and the server. Every node that came from a user
object carries a ``SourceRef`` so diagnostics and ``/debug`` can point back at it. The front end
sorts once, at the end; the back end maps the IR to protos in the order it finds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Literal

from translators.errors import Diagnostic, SourceRef

Scheme = Literal["http", "https", "h2c"]

# Set by the listener before routing to the TCP peer's address (never taken from the client), so
# ClientIP rules can be header matches; removed before the request goes upstream.
CLIENT_IP_HEADER = "x-switchman-client-ip"
# Set by the errors middleware's redirect to pick its internal route; the listener strips it from
# every client request before routing, so no client can reach an error service by sending it.
ERROR_PAGE_HEADER = "x-switchman-error-page"


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryPoint:
    name: str
    address: str
    port: int


# A dataclass field with this metadata is written as "<redacted>" by ``to_plain`` (/debug, goldens).
REDACT = {"redact": True}
# A field with this metadata is left out by ``to_plain`` while it holds its default: fields added
# for one feature do not show up in the output of every object that does not use it.
OMIT_DEFAULT = {"omit_default": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    address: str
    port: int
    draining: bool = False
    # Failover clusters: 0 for the main service's servers, 1 for the fallback's.
    priority: int = field(default=0, metadata=OMIT_DEFAULT)
    # Envoy's load_balancing_weight: a server's part of its priority (shares of a weighted split).
    weight: int = field(default=1, metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCertificate:
    """A client certificate for upstream mTLS, PEM inline (SDS is future work)."""

    secret: str  # ns/name of the Secret it came from
    certificate_chain: str
    private_key: str = field(metadata=REDACT, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTransport:
    """A ServersTransport, resolved: the cluster's TLS and connection settings. Defaults are
    Traefik's; times in seconds, 0 = none."""

    name: str  # ns/name of the ServersTransport
    server_name: str = ""  # SNI; also the name verified when no peerCertSANs are given
    insecure_skip_verify: bool = False
    trusted_ca: str = ""  # PEM bundle; "" = the system roots
    client_certificate: ClientCertificate | None = None
    # (Envoy SAN type, value): the peer certificate must carry one of them.
    peer_sans: tuple[tuple[str, str], ...] = ()
    min_version: str = ""  # Envoy TlsParameters names (TLSv1_2); "" = Envoy's default
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()  # BoringSSL names
    dial_timeout: float = 30.0
    idle_conn_timeout: float = 90.0
    read_idle_timeout: float = 0.0  # HTTP/2 PING interval (h2c only)
    ping_timeout: float = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    """circuitBreaker: Envoy outlier detection (failure percentage) on a route's own cluster.

    Every ``interval`` each host's failure percentage over that interval is checked; at or above
    ``threshold`` (with at least ``request_volume`` requests) the host is ejected for
    ``ejection_time``. ``local_origin``: only connection failures, timeouts and resets count
    (NetworkErrorRatio); otherwise 5xx answers count too (ResponseCodeRatio of 5xx).
    """

    local_origin: bool
    threshold: int  # percent, 0 to 100
    request_volume: int
    interval: float  # seconds
    ejection_time: float  # seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalReply:
    """An answer Envoy gives instead of its own local reply for ``flag`` (an Envoy response
    flag: UH no healthy host, UO overflow), for requests to ``clusters`` only."""

    flag: str
    status: int
    body: str
    clusters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPolicy:
    """What a route's middlewares ask of its clusters; the route gets its own copy of each
    cluster carrying it (Envoy keeps this state per cluster, Traefik per router)."""

    outlier: OutlierDetection | None = None
    max_requests: int | None = None  # inFlightReq: concurrent requests to the cluster
    replies: tuple[LocalReply, ...] = ()  # ``clusters`` left empty: the copies are meant


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """One Kubernetes Service port, as an EDS cluster (``ns/svc/port``)."""

    name: str
    service: str
    port: int
    scheme: Scheme
    endpoints: tuple[Endpoint, ...]
    source: SourceRef
    transport: UpstreamTransport | None = None
    # For https without a ServersTransport CA: the trust bundle on the Envoy host (Traefik checks
    # backend certificates against the system roots; Envoy has no built-in system roots).
    system_ca_file: str = ""
    # A route's own copy of the cluster (``<cluster>/route/<router>/<index>``) carries this.
    policy: ClusterPolicy | None = field(default=None, metadata=OMIT_DEFAULT)
    # A TraefikService failover: endpoints carry priorities (main 0, fallback 1), and a priority
    # takes no traffic while the one above it has a healthy server (no early spill).
    failover: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedBackend:
    cluster: str
    weight: int
    # Added to the response when this backend is picked (a weighted-level sticky cookie's
    # Set-Cookie), after the backend's own headers.
    response_headers: tuple[tuple[str, str], ...] = field(default=(), metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    """A copy of the request sent to ``cluster`` for this share (0 to 1) of requests (mirroring)."""

    cluster: str
    fraction: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    backends: tuple[WeightedBackend, ...]
    pass_host_header: bool = True
    mirrors: tuple[Mirror, ...] = ()
    # highestRandomWeight: the backend is picked by a hash of the client address, not at random.
    hash_client_ip: bool = False
    # A request header holding the Host to send (error pages: the client's Host, kept by the
    # listener in X-Forwarded-Host); "" = the request's own.
    host_header: str = field(default="", metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    kind: Literal["exact", "prefix", "regex"]
    value: str
    # For an unanchored regex search (PathRegexp): the pattern searched for, so the condition
    # can be moved into a ``:path`` header condition without running into the query.
    search: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    name: str
    kind: Literal["exact", "prefix", "regex", "present"]
    value: str = ""
    invert: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryMatch:
    name: str
    kind: Literal["exact", "regex", "present"]
    value: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """An AND of conditions: what one Envoy RouteMatch can express."""

    path: PathMatch = PathMatch(kind="prefix", value="")
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    # The one host a request must have for this match to hold (lower-case, no trailing dot), when
    # the rule pins it with a plain Host(); lets the back end put the route in that virtual host.
    exact_host: str | None = None
    # The index in ``headers`` of the condition that pins ``exact_host``: inside that host's
    # virtual host Envoy has already checked it (domains, case and port ignored), so the back end
    # leaves it out there — one regex fewer per route for Envoy to compile and run.
    host_header: int = field(default=-1, metadata=OMIT_DEFAULT)


# Header values are literal, except these Envoy formatters the translator itself uses.
ORIGINAL_PATH = "%PATH(NQ)%"
DYNAMIC_VALUES = frozenset({ORIGINAL_PATH})


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderOps:
    """Header changes a route makes, in Traefik's order (set replaces; an empty value deletes)."""

    request_set: tuple[tuple[str, str], ...] = ()
    request_remove: tuple[str, ...] = ()
    response_set: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()
    # Appended after the sets (a further value of a list header such as Vary).
    response_append: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """The one path rewrite Envoy allows per route: ``regex_rewrite`` on the path."""

    pattern: str
    substitution: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """A redirect answered by Envoy. Traefik picks the status by method and ``permanent``."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    strip_port: bool = False
    status: int = 302
    # redirectRegex: the path rewritten by a regex (the query kept unless ``strip_query``).
    path_rewrite: Rewrite | None = None
    strip_query: bool = False


Action = Forward | DirectResponse | Redirect


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """A route's retry policy (the retry middleware): Envoy's ``RetryPolicy``."""

    num_retries: int
    retry_on: tuple[str, ...]  # Envoy retry_on conditions
    status_codes: tuple[int, ...] = ()  # for ``retriable-status-codes``
    interval: float = 0.0  # backoff base, seconds; 0 = retry at once
    # Failover: a retry goes to the next priority of the cluster (the fallback), not to
    # another server of the same one.
    next_priority: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterUse:
    """An HTTP filter a route turns on, with its per-route settings.

    ``kind`` names an entry of ``translators.envoy.filters.FILTERS``; ``config`` is that kind's
    frozen settings dataclass. The n-th use of a kind on one route takes the n-th instance of the
    filter in the listener.
    """

    kind: str
    config: object


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerCertificate:
    """A certificate Envoy serves on TLS entry points, delivered as an SDS Secret ``name``."""

    name: str  # ns/name of the kubernetes.io/tls Secret; also the SDS resource name
    certificate_chain: str
    private_key: str = field(metadata=REDACT, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSOptions:
    """A TLSOption, resolved. ``name`` is Traefik's (``default``, or ``<ns>-<name>``): TLS options
    are told apart by name, as Traefik does. Versions are Envoy TlsParameters names."""

    name: str = "default"
    min_version: str = "TLSv1_2"  # Traefik's default
    max_version: str = ""  # "" = Envoy's (TLS 1.3, as Go)
    cipher_suites: tuple[str, ...] = ()  # BoringSSL names; () = Envoy's defaults
    curves: tuple[str, ...] = ()  # BoringSSL names; () = Envoy's defaults
    # Go's tls.ClientAuthType names: NoClientCert, RequestClientCert, RequireAnyClientCert,
    # VerifyClientCertIfGiven, RequireAndVerifyClientCert.
    client_auth: str = "NoClientCert"
    client_ca: str = ""  # PEM bundle that client certificates are verified against
    alpn: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTLS:
    """A router's ``tls``: it is served on TLS connections only, with these options for the
    hosts of its rule. ``default_options`` is the ``default`` TLSOption as read with it (every
    route reads the same one; the listener's fallback chain uses it)."""

    options: TLSOptions
    default_options: TLSOptions
    certificate: ServerCertificate | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One Envoy route: one disjunct of one Traefik router's rule."""

    name: str
    router: str
    entrypoint: str
    match: Match
    action: Action
    priority: int
    source: SourceRef
    rule: str = ""
    # Position of the route in its IngressRoute and of the disjunct in its rule: the last
    # tie-breakers of the documented order.
    index: int = 0
    disjunct: int = 0
    # What the route's middlewares do, in order: header changes and one composed path rewrite.
    headers: HeaderOps = HeaderOps()
    rewrite: Rewrite | None = None
    filters: tuple[FilterUse, ...] = ()
    retry: Retry | None = None
    # Set: the router has ``tls`` and is served on TLS connections of its entry point only.
    tls: RouteTLS | None = field(default=None, metadata=OMIT_DEFAULT)


def route_order(route: Route) -> tuple[str, int, str, int, int]:
    """Highest priority first; ties by router name, then route index, then disjunct (documented)."""
    return (route.entrypoint, -route.priority, route.router, route.index, route.disjunct)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSChain:
    """One TLS filter chain of a listener: connections whose SNI is one of ``server_names``
    (``()``: every other TLS connection) get ``options`` and the entry point's TLS routes,
    behind ``guard`` (Traefik's domain-fronting check: 421 when the Host's TLS options are not
    the SNI's)."""

    server_names: tuple[str, ...]
    options: TLSOptions
    certificates: tuple[str, ...]  # SDS names; Envoy picks by SNI, the first when none match
    route_config: str
    guard: Route | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    address: str
    port: int
    route_config: str  # plaintext connections (every connection when there is no TLS chain)
    # Instances of each HTTP filter kind the listener carries (the most any one route uses).
    filter_slots: tuple[tuple[str, int], ...] = ()
    # Traefik's answers where Envoy's own differ, for requests to some clusters only.
    local_replies: tuple[LocalReply, ...] = field(default=(), metadata=OMIT_DEFAULT)
    # TLS termination: the chains (fallback last) and every certificate they serve.
    tls_chains: tuple[TLSChain, ...] = field(default=(), metadata=OMIT_DEFAULT)
    certificates: tuple[ServerCertificate, ...] = field(default=(), metadata=OMIT_DEFAULT)
    # Routed by scoped RDS, one RouteConfiguration per host (``--route-scopes host``).
    scoped: bool = field(default=False, metadata=OMIT_DEFAULT)
    # The per-host tables are built even while the listener is not scoped: connections opened
    # while it was keep its scoped routing until they drain (translators/scopes.py).
    scope_tables: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True, kw_only=True)
class IR:
    listeners: tuple[Listener, ...] = ()
    # In ``route_order``: by entry point, then priority (the back end relies on it).
    routes: tuple[Route, ...] = ()
    clusters: tuple[Cluster, ...] = ()  # by name


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    ir: IR
    diagnostics: tuple[Diagnostic, ...] = field(default=())


def to_plain(value: object) -> object:
    """IR → plain dicts, lists and scalars (golden files, ``/debug``), keys in field order."""
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        if isinstance(value, Forward | DirectResponse | Redirect):
            out["type"] = type(value).__name__
        for f in fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("omit_default") and item == f.default:
                continue
            out[f.name] = "<redacted>" if f.metadata.get("redact") else to_plain(item)
        return out
    return value
