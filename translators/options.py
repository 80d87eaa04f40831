"""Translation options: Traefik's provider and core settings that change semantics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from translators.ir import EntryPoint
from translators.rules import Syntax


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    entrypoints: tuple[EntryPoint, ...] = (
        EntryPoint(name="web", address="0.0.0.0", port=8000),
        EntryPoint(name="websecure", address="0.0.0.0", port=8443),
    )
    default_rule_syntax: Syntax = "v3"
    allow_cross_namespace: bool = False
    allow_empty_services: bool = False
    allow_external_name_services: bool = False
    # A rule whose DNF has more alternatives than this is refused (it would explode the table).
    max_rule_alternatives: int = 64
    # Largest RE2 program a generated regex may have; the bootstrap raises Envoy's limit to it.
    max_regex_program_size: int = 1000
    # The CA bundle Envoy checks https backends against when no ServersTransport gives rootCAs.
    upstream_ca_file: str = "/etc/ssl/certs/ca-certificates.crt"
    # forwardAuth: "service" calls the auth server from Switchman's authorization service with
    # Traefik's exact request; "envoy" lets Envoy's HTTP ext_authz client call it (no extra hop,
    # not Traefik's request shape). See translators/middlewares/forward_auth.py.
    forward_auth_mode: Literal["service", "envoy"] = "service"
    # "host": an entry point whose every route pins one Host gets one RouteConfiguration per host
    # behind scoped RDS, so an edit re-sends (and Envoy rebuilds) one host's routes, not the whole
    # table. See translators/scopes.py and docs/xds.md.
    route_scopes: Literal["off", "host"] = "off"
