"""Traefik's HTTP CRDs, in both API groups (``traefik.io`` and ``traefik.containo.us``).

Field names and defaults follow Traefik's Go types
(``pkg/provider/kubernetes/crd/traefikio/v1alpha1``). Absent means "Traefik's default", so most
fields are optional here and defaults are applied by the front end, where they can be explained.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from translators.models.base import Model, Resource

TRAEFIK_GROUPS = ("traefik.io", "traefik.containo.us")


class MiddlewareRef(Model):
    name: str = Field(min_length=1)
    namespace: str | None = None


class LoadBalancerSpec(Model):
    """A route's (or a TraefikService's) reference to a Service or a TraefikService."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    kind: Literal["Service", "TraefikService"] | None = None
    port: int | str | None = None
    weight: int | None = None
    scheme: str | None = None
    pass_host_header: bool | None = None
    servers_transport: str | None = None
    # Known, translated in later work; the front end reports them as Unsupported when set.
    sticky: dict[str, Any] | None = None
    strategy: str | None = None
    response_forwarding: dict[str, Any] | None = None
    native_lb: bool | None = Field(default=None, alias="nativeLB")
    node_port_lb: bool | None = Field(default=None, alias="nodePortLB")
    health_check: dict[str, Any] | None = None
    passive_health_check: dict[str, Any] | None = None
    middlewares: list[MiddlewareRef] | None = None


class Route(Model):
    match: str
    kind: str | None = None
    priority: int | None = None
    syntax: Literal["v2", "v3"] | None = None
    middlewares: list[MiddlewareRef] = Field(default_factory=list)
    services: list[LoadBalancerSpec] = Field(default_factory=list)
    observability: dict[str, Any] | None = None


class TLSOptionRef(Model):
    name: str
    namespace: str | None = None


class Domain(Model):
    main: str | None = None
    sans: list[str] | None = None


class TLS(Model):
    secret_name: str | None = None
    options: TLSOptionRef | None = None
    store: dict[str, Any] | None = None
    cert_resolver: str | None = None
    domains: list[Domain] | None = None


class IngressRouteSpec(Model):
    entry_points: list[str] | None = None
    routes: list[Route] = Field(min_length=1)
    tls: TLS | None = None
    ingress_class_name: str | None = None
    parent_refs: list[dict[str, Any]] | None = None


class IngressRoute(Resource):
    kind: Literal["IngressRoute"] = "IngressRoute"
    spec: IngressRouteSpec


class Weighted(Model):
    services: list[LoadBalancerSpec] = Field(default_factory=list)
    sticky: dict[str, Any] | None = None


class TraefikServiceSpec(Model):
    weighted: Weighted | None = None
    mirroring: dict[str, Any] | None = None
    highest_random_weight: dict[str, Any] | None = None
    failover: dict[str, Any] | None = None


class TraefikService(Resource):
    kind: Literal["TraefikService"] = "TraefikService"
    spec: TraefikServiceSpec


class Middleware(Resource):
    """A Middleware; its one configured type is read by the middleware front end."""

    kind: Literal["Middleware"] = "Middleware"
    spec: dict[str, Any] = Field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return sorted(k for k, v in self.spec.items() if v is not None)


class RootCA(Model):
    """One trust anchor source of a ServersTransport: a Secret or a ConfigMap (not both)."""

    secret: str | None = None
    config_map: str | None = None


class ForwardingTimeouts(Model):
    dial_timeout: int | float | str | None = None
    response_header_timeout: int | float | str | None = None
    idle_conn_timeout: int | float | str | None = None
    read_idle_timeout: int | float | str | None = None
    ping_timeout: int | float | str | None = None


class ServersTransportSpec(Model):
    server_name: str | None = None
    insecure_skip_verify: bool | None = None
    root_cas: list[RootCA] | None = Field(default=None, alias="rootCAs")
    # Deprecated in Traefik v3 (``rootCAs[].secret`` replaces it); still read.
    root_cas_secrets: list[str] | None = Field(default=None, alias="rootCAsSecrets")
    certificates_secrets: list[str] | None = None
    max_idle_conns_per_host: int | None = None
    forwarding_timeouts: ForwardingTimeouts | None = None
    disable_http2: bool | None = Field(default=None, alias="disableHTTP2")
    peer_cert_uri: str | None = Field(default=None, alias="peerCertURI")
    # Plain names, or ``{type, value}`` pairs (DNSName, IPAddress, URI, EmailAddress).
    peer_cert_sans: list[str | dict[str, Any]] | None = Field(default=None, alias="peerCertSANs")
    cipher_suites: list[str] | None = None
    min_version: str | None = None
    max_version: str | None = None
    spiffe: dict[str, Any] | None = None


class ServersTransport(Resource):
    """How Traefik talks to a backend: TLS (SNI, trust, client certificates) and timeouts."""

    kind: Literal["ServersTransport"] = "ServersTransport"
    spec: ServersTransportSpec = Field(default_factory=ServersTransportSpec)


class ClientAuth(Model):
    secret_names: list[str] | None = None
    client_auth_type: str | None = None


class TLSOptionSpec(Model):
    min_version: str | None = None
    max_version: str | None = None
    cipher_suites: list[str] | None = None
    curve_preferences: list[str] | None = None
    client_auth: ClientAuth | None = None
    sni_strict: bool | None = None
    alpn_protocols: list[str] | None = None
    prefer_server_cipher_suites: bool | None = None
    disable_session_tickets: bool | None = None


class TLSOption(Resource):
    """TLS settings of the connections whose SNI names a host of a router that refers to it."""

    kind: Literal["TLSOption"] = "TLSOption"
    spec: TLSOptionSpec = Field(default_factory=TLSOptionSpec)
