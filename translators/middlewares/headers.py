"""The headers middleware: custom request/response headers and the static security headers.

Traefik sets custom headers in map order after its own; an empty value deletes the header.
CORS goes to Envoy's cors filter (a ``CorsPolicy`` per route, see ``translators/envoy/filter_cors``)
plus the response headers Traefik adds whatever the origin. ``allowedHosts`` and the proxy-header
options are not translated yet: a Middleware using them is reported and its routes are not served
(they would behave differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2

from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

_NOT_YET = (
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


_CORS = (
    "accessControlAllowCredentials",
    "accessControlAllowHeaders",
    "accessControlAllowMethods",
    "accessControlAllowOriginList",
    "accessControlAllowOriginListRegex",
    "accessControlExposeHeaders",
    "accessControlMaxAge",
    "addVaryHeader",
)


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """A route's CorsPolicy. ``origins`` are exact; ``origin_regexes`` are whole-origin RE2."""

    origins: tuple[str, ...]
    origin_regexes: tuple[str, ...]
    allow_methods: str
    allow_headers: str
    expose_headers: str
    max_age: str
    allow_credentials: bool


def _strings(spec: Mapping[str, Any], key: str, field: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a list of strings")
    return value


def _cors(spec: Mapping[str, Any], field: str) -> tuple[CorsConfig, list[tuple[str, str]]] | None:
    """Traefik's CORS (pkg/middlewares/headers/header.go): the policy, and the response headers
    Traefik sets on every non-preflight response whatever the origin."""
    if all(spec.get(key) in (None, [], False, 0, "") for key in _CORS):
        return None
    credentials = spec.get("accessControlAllowCredentials", False)
    if not isinstance(credentials, bool):
        raise MiddlewareError(
            f"{field}.accessControlAllowCredentials", "accessControlAllowCredentials must be a bool"
        )
    max_age = spec.get("accessControlMaxAge") or 0
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise MiddlewareError(
            f"{field}.accessControlMaxAge", "accessControlMaxAge must be an integer"
        )
    origins = _strings(spec, "accessControlAllowOriginList", field)
    regexes = []
    for i, regex in enumerate(_strings(spec, "accessControlAllowOriginListRegex", field)):
        try:
            re2.compile(regex)
        except re2.error as exc:
            raise MiddlewareError(
                f"{field}.accessControlAllowOriginListRegex[{i}]", f"invalid regex: {exc}"
            ) from exc
        # Go's MatchString finds the pattern anywhere in the origin; Envoy matches the whole.
        regexes.append(f".*(?:{regex}).*")
    exact = [o for o in origins if o != "*"]
    if len(exact) != len(origins):
        regexes.append(".*")  # "*" allows every origin
    expose = ",".join(_strings(spec, "accessControlExposeHeaders", field))
    config = CorsConfig(
        origins=tuple(exact),
        origin_regexes=tuple(regexes),
        allow_methods=",".join(_strings(spec, "accessControlAllowMethods", field)),
        allow_headers=",".join(_strings(spec, "accessControlAllowHeaders", field)),
        expose_headers=expose,
        max_age=str(max_age),
        allow_credentials=credentials,
    )
    always: list[tuple[str, str]] = []
    if "*" in origins and not credentials:
        # Traefik answers "*" even without an Origin; with one, Envoy's filter echoes it.
        always.append(("Access-Control-Allow-Origin", "*"))
    if credentials:
        always.append(("Access-Control-Allow-Credentials", "true"))
    if expose:
        always.append(("Access-Control-Expose-Headers", expose))
    return config, always


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
    cors = _cors(spec, field)
    out = []
    for plan in plans:
        if cors is not None:
            plan = plan.add_filter("cors", cors[0])
        for name, value in request.items():
            plan = plan.set_request(name, value) if value else plan.remove_request(name)
        for name, value in security:
            plan = plan.set_response(name, value)
        for name, value in response.items():
            plan = plan.set_response(name, value) if value else plan.remove_response(name)
        if cors is not None:
            for name, value in cors[1]:
                plan = plan.set_response(name, value)
            if spec.get("addVaryHeader") is True:
                # Traefik appends ",Origin" to the backend's Vary; a second Vary line means
                # the same (RFC 9110 §5.3).
                plan = plan.append_response("Vary", "Origin")
        out.append(plan)
    return out
