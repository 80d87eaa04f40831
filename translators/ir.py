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


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryPoint:
    name: str
    address: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    address: str
    port: int
    draining: bool = False


# A dataclass field with this metadata is written as "<redacted>" by ``to_plain`` (/debug, goldens).
REDACT = {"redact": True}


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


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedBackend:
    cluster: str
    weight: int


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    address: str
    port: int
    route_config: str
    # Instances of each HTTP filter kind the listener carries (the most any one route uses).
    filter_slots: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class IR:
    listeners: tuple[Listener, ...] = ()
    routes: tuple[Route, ...] = ()
    clusters: tuple[Cluster, ...] = ()


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
            out[f.name] = (
                "<redacted>" if f.metadata.get("redact") else to_plain(getattr(value, f.name))
            )
        return out
    return value
