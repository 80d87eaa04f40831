"""redirectScheme: Traefik's redirect, answered by Envoy.

Status codes as Traefik picks them: non-permanent 302 for GET (and HEAD) and 307 otherwise;
permanent 301 for GET and 308 otherwise. The target scheme's default port is dropped. A request
already on the target scheme and port is not redirected (Traefik passes it on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from translators.ir import HeaderMatch, Redirect
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

_DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_scheme(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    scheme = spec.get("scheme")
    if not isinstance(scheme, str) or not scheme:
        raise MiddlewareError(f"{field}.scheme", "scheme is required")
    port_value = spec.get("port")
    port: int | None = None
    if port_value not in (None, ""):
        try:
            port = int(str(port_value))
        except ValueError as exc:
            raise MiddlewareError(f"{field}.port", f"port {port_value!r} is not a number") from exc
    permanent = spec.get("permanent") is True
    if scheme not in ("http", "https"):
        raise Unsupported(f"{field}.scheme", f"redirect to scheme {scheme!r} is not translated")
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    # Switchman's listeners are plain HTTP: a request is on "https" only if it arrived as such.
    already = HeaderMatch(name="x-forwarded-proto", kind="exact", value=scheme)
    get = HeaderMatch(name=":method", kind="exact", value="GET")
    statuses = (
        (get, 301 if permanent else 302),
        (replace(get, invert=True), 308 if permanent else 307),
    )
    out = []
    for plan in plans:
        redirecting = (*plan.conditions, replace(already, invert=True))
        for method, status in statuses:
            redirect = Redirect(scheme=scheme, port=port, strip_port=port is None, status=status)
            out.append(replace(plan, conditions=(*redirecting, method), redirect=redirect))
        if port is None:
            out.append(replace(plan, conditions=(*plan.conditions, already)))
    return out
