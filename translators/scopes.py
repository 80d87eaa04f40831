"""Route scopes (``--route-scopes host``): which entry points are routed by host with scoped RDS.

One RouteConfiguration per entry point holds every virtual host, so an edit to one host's route
re-sends the whole table and every Envoy rebuilds all of it (about 70 µs per virtual host). With
scoped RDS (SRDS) each host's routes are a RouteConfiguration of their own, chosen per request by
a scope key, and an edit re-sends and rebuilds one host's.

The scope key is the entry point and the request's host (``:authority`` up to the first ``:``,
so a port is ignored, as Traefik's ``Host`` does). Envoy compares keys exactly, and a request
whose key names no scope gets 404, with no fallback to another table. So an entry point is scoped
only when that changes nothing a request can see:

- every route pins one plain host (``Host(`a.example.com`) && …``): a request for any other
  host matches no route, in Traefik too;
- no route is one of the errors middleware's internal page routes (they are reached by an
  internal redirect that keeps the original request's scope key);
- the entry point terminates no TLS (its TLS chains each have their own table and guard).

Otherwise the entry point keeps one table, and a warning says which route (or what) prevents
scoping. What stays different in a scoped entry point is documented in docs/compatibility.md:
Envoy's scope keys are case-sensitive (a request for ``A.Example.com`` gets 404 where Traefik
lower-cases the host), and an IPv6 literal host is never scoped.
"""

from __future__ import annotations

from collections.abc import Iterable

from translators.errors import Diagnostic, SourceRef
from translators.ir import Route
from translators.middlewares.errors import ERROR_PAGE_HOST

# Set by each scoped listener before routing: "<route config>|<Host header>"; Envoy's key is the
# part before the first ":" (the port), and the header is removed before the request goes on.
SCOPE_HEADER = "x-switchman-scope"


def scope_key(route_config: str, host: str) -> str:
    return f"{route_config}|{host}"


def scope_table(route_config: str, host: str) -> str:
    """The name of one host's RouteConfiguration (and of its scope)."""
    return f"{route_config}/{host}"


def scopable_name(route_config: str) -> bool:
    """A route configuration name that can prefix a scope key (no separator, no formatter)."""
    return not any(c in route_config for c in ":|%/")


def unscopable(route: Route) -> bool:
    host = route.match.exact_host
    return host is None or host == ERROR_PAGE_HOST or ":" in host or "|" in host


def scope_blocker(routes: Iterable[Route]) -> Route | None:
    """The first route that keeps an entry point from being scoped, if any."""
    return next((r for r in routes if unscopable(r)), None)


def unscoped_warning(entrypoint: str, route: Route | None, why: str = "") -> Diagnostic:
    """Why ``--route-scopes host`` leaves an entry point as one table: ``route`` is in the way,
    or the entry point itself (``why``)."""
    if route is None:
        return Diagnostic(
            source=SourceRef(),
            field="",
            reason="Unscoped",
            message=f"entry point {entrypoint}: --route-scopes host does not apply ({why}); "
            "served as one route table",
            severity="warning",
        )
    what = (
        "is an errors middleware's page route"
        if route.match.exact_host == ERROR_PAGE_HOST
        else "does not pin one plain Host"
    )
    return Diagnostic(
        source=route.source,
        field=f"spec.routes[{route.index}].match",
        reason="Unscoped",
        message=f"entry point {entrypoint} is served as one route table, not one per host "
        f"(--route-scopes host): router {route.router} {what}, so requests for other hosts "
        "must still reach it",
        severity="warning",
    )
