"""The only place Envoy resource names are made.

Names are deterministic, ``/``-separated and derived from source identity, so they double as
de-duplication keys and stay stable across restarts. Long names are capped with a hash suffix.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 200


def _cap(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: MAX_NAME - 13]}~{digest}"


def cluster_name(namespace: str, service: str, port: int) -> str:
    return _cap(f"{namespace}/{service}/{port}")


def cluster_variant(cluster: str, suffix: str) -> str:
    """A variant of a cluster (another scheme or ServersTransport): ``<cluster>/<suffix>``."""
    return _cap(f"{cluster}/{suffix}")


def failover_cluster_name(namespace: str, traefikservice: str) -> str:
    """A failover TraefikService's cluster; a Service port's third part is always a number."""
    return _cap(f"{namespace}/{traefikservice}/failover")


def listener_name(entrypoint: str) -> str:
    return _cap(entrypoint)


def route_config_name(entrypoint: str) -> str:
    return _cap(entrypoint)


def tls_route_config_name(entrypoint: str, options: str) -> str:
    """The routes of an entry point's TLS chain for connections with these TLS options (a
    plaintext route configuration is named by the entry point alone, which has no ``/``)."""
    return _cap(f"{entrypoint}/tls/{options}")


def tls_guard_route_name(entrypoint: str, options: str) -> str:
    return _cap(f"tls-guard/{entrypoint}/{options}")


def secret_name(namespace: str, secret: str) -> str:
    """A certificate's SDS Secret: ``ns/name`` of the Kubernetes Secret."""
    return _cap(f"{namespace}/{secret}")


def router_name(namespace: str, ingressroute: str, match: str) -> str:
    """Traefik's router key: ``<ns>-<name>-<first 10 hex of sha256(match)>``."""
    digest = hashlib.sha256(match.encode()).hexdigest()[:10]
    return f"{namespace}-{ingressroute}-{digest}"


def route_name(router: str, index: int, disjunct: int, variant: int = 0) -> str:
    suffix = f"/{variant}" if variant else ""
    return _cap(f"{router}/{index}/{disjunct}{suffix}")


def error_page_route_name(key: str, index: int | None = None) -> str:
    """An errors middleware's internal route (``index`` None: their router name)."""
    return _cap(f"errors/{key}" if index is None else f"errors/{key}/{index}")


def forward_auth_cluster_name(host: str, port: int) -> str:
    """A forwardAuth server's cluster; ``forwardAuth`` has capitals, so no namespace is like it."""
    return _cap(f"forwardAuth/{host}/{port}")
