"""The headers middleware: custom request/response headers and the static security headers.

Traefik sets custom headers in map order after its own; an empty value deletes the header.
CORS, ``allowedHosts`` and the proxy-header options are not translated yet: a Middleware using
them is reported and its routes are not served (they would behave differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

_NOT_YET = (
    "accessControlAllowCredentials",
    "accessControlAllowHeaders",
    "accessControlAllowMethods",
    "accessControlAllowOriginList",
    "accessControlAllowOriginListRegex",
    "accessControlExposeHeaders",
    "accessControlMaxAge",
    "addVaryHeader",
    "allowedHosts",
    "hostsProxyHeaders",
    "sslProxyHeaders",
    "publicKey",
)
# Accepted by Traefik v3 and ignored by it.
_IGNORED_BY_TRAEFIK = (
    "sslRedirect",
    "sslTemporaryRedirect",
    "sslHost",
    "sslForceHost",
    "featurePolicy",
)


def _mapping(spec: Mapping[str, Any], key: str, field: str) -> Mapping[str, str]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MiddlewareError(f"{field}.{key}", f"{key} must map header names to strings")
    return value


def _security_headers(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Traefik's secure headers (pkg/middlewares/headers/secure.go), in its order."""
    out: list[tuple[str, str]] = []
    if spec.get("isDevelopment"):
        return out
    sts = int(spec.get("stsSeconds") or 0)
    if sts > 0 or spec.get("forceSTSHeader"):
        value = f"max-age={sts}"
        if spec.get("stsIncludeSubdomains"):
            value += "; includeSubDomains"
        if spec.get("stsPreload"):
            value += "; preload"
        # Traefik sends STS only over TLS unless forceSTSHeader; Switchman serves HTTP only yet.
        if spec.get("forceSTSHeader"):
            out.append(("Strict-Transport-Security", value))
    if spec.get("customFrameOptionsValue"):
        out.append(("X-Frame-Options", str(spec["customFrameOptionsValue"])))
    elif spec.get("frameDeny"):
        out.append(("X-Frame-Options", "DENY"))
    if spec.get("contentTypeNosniff"):
        out.append(("X-Content-Type-Options", "nosniff"))
    if spec.get("customBrowserXSSValue"):
        out.append(("X-XSS-Protection", str(spec["customBrowserXSSValue"])))
    elif spec.get("browserXssFilter"):
        out.append(("X-XSS-Protection", "1; mode=block"))
    if spec.get("contentSecurityPolicy"):
        out.append(("Content-Security-Policy", str(spec["contentSecurityPolicy"])))
    if spec.get("contentSecurityPolicyReportOnly"):
        out.append(
            ("Content-Security-Policy-Report-Only", str(spec["contentSecurityPolicyReportOnly"]))
        )
    if spec.get("referrerPolicy"):
        out.append(("Referrer-Policy", str(spec["referrerPolicy"])))
    if spec.get("permissionsPolicy"):
        out.append(("Permissions-Policy", str(spec["permissionsPolicy"])))
    return out


def headers(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    for key in _NOT_YET:
        if spec.get(key) not in (None, [], {}, False, 0, ""):
            raise Unsupported(f"{field}.{key}", f"headers.{key} is not translated yet")
    request = _mapping(spec, "customRequestHeaders", field)
    response = _mapping(spec, "customResponseHeaders", field)
    for name in request:
        if name.lower() == "host":
            raise Unsupported(
                f"{field}.customRequestHeaders.{name}",
                "rewriting Host through customRequestHeaders is not translated yet",
            )
    security = _security_headers(spec)
    out = []
    for plan in plans:
        for name, value in request.items():
            plan = plan.set_request(name, value) if value else plan.remove_request(name)
        for name, value in security:
            plan = plan.set_response(name, value)
        for name, value in response.items():
            plan = plan.set_response(name, value) if value else plan.remove_response(name)
        out.append(plan)
    return out
