"""basicAuth and digestAuth: users from a Kubernetes Secret.

Secrets as Traefik reads them: ``kubernetes.io/basic-auth`` (``username`` and ``password``;
Traefik stores the password as ``{SHA}``), or any other type whose data values hold htpasswd
lines (basicAuth: ``user:hash`` with ``{SHA}``, bcrypt ``$2a$``/``$2b$``/``$2y$``, MD5-crypt
``$apr1$``/``$1$``, as Traefik's goauth checks them) or htdigest lines (digestAuth:
``user:realm:md5(user:realm:password)``).

A basicAuth whose users are all ``{SHA}``, with Traefik's default realm and no ``headerField``,
runs on Envoy's own basic_auth filter. Anything else (other hashes, a realm, ``headerField``,
digestAuth) runs on Envoy's ext_authz filter, answered by the authorization service Switchman
itself serves (``controlplane/authz.py``): the route carries only an opaque key, and the service
finds the users under that key in the translation it last published (``auth_table``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from translators.ir import IR
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

DEFAULT_REALM = "traefik"
# Hash schemes by prefix, as goauth (Traefik's basicAuth) recognises them.
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
MD5_PREFIXES = ("$apr1$", "$1$")
SHA_PREFIX = "{SHA}"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_HA1 = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True, slots=True)
class BasicAuthConfig:
    users: tuple[str, ...]  # htpasswd lines, {SHA} hashes


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthServiceConfig:
    """One basicAuth/digestAuth Middleware checked by Switchman's authorization service."""

    key: str  # ``<namespace>/<middleware>``: what the route sends the service
    scheme: Literal["basic", "digest"]
    realm: str
    # basic: (user, htpasswd hash); digest: (user, HA1 hex) of this realm's htdigest lines
    users: tuple[tuple[str, str], ...]
    remove_header: bool = False
    header_field: str = ""


def hash_scheme(hashed: str) -> Literal["sha", "bcrypt", "md5"] | None:
    if hashed.startswith(SHA_PREFIX):
        return "sha"
    if hashed.startswith(BCRYPT_PREFIXES):
        return "bcrypt"
    if hashed.startswith(MD5_PREFIXES):
        return "md5"
    return None


def auth_table(ir: IR) -> dict[str, AuthServiceConfig]:
    """Every config the routes of ``ir`` send to the authorization service, by key."""
    out: dict[str, AuthServiceConfig] = {}
    for route in ir.routes:
        for use in route.filters:
            if use.kind == "ext_authz" and isinstance(use.config, AuthServiceConfig):
                out.setdefault(use.config.key, use.config)
    return out


def _decode(value: str, field: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise MiddlewareError(field, "Secret data is not valid base64 text") from exc


def _secret_data(ctx: Context, name: str, field: str) -> tuple[str, dict[str, str]]:
    entry = ctx.world.secrets.get((ctx.namespace, name))
    if entry is None:
        raise MiddlewareError(field, f"Secret {ctx.namespace}/{name} not found", "SecretNotFound")
    secret = entry.obj
    data = {k: _decode(v, field) for k, v in sorted(secret.data.items())}
    data.update(secret.string_data)
    return str(secret.type or ""), data


def _lines(ctx: Context, name: str, field: str, data: Mapping[str, str]) -> list[str]:
    lines = [line.strip() for value in data.values() for line in value.splitlines() if line.strip()]
    if not lines:
        raise MiddlewareError(field, f"Secret {ctx.namespace}/{name} holds no users")
    return lines


def _secret_users(ctx: Context, name: str, field: str) -> list[str]:
    kind, data = _secret_data(ctx, name, field)
    if kind == "kubernetes.io/basic-auth":
        user, password = data.get("username"), data.get("password")
        if not user or password is None:
            raise MiddlewareError(field, "a basic-auth Secret needs username and password")
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        return [f"{user}:{SHA_PREFIX}{digest}"]
    return _lines(ctx, name, field, data)


def _secret_name(spec: Mapping[str, Any], field: str) -> str:
    secret = spec.get("secret")
    if not isinstance(secret, str) or not secret:
        raise MiddlewareError(f"{field}.secret", "secret is required")
    return secret


def _options(spec: Mapping[str, Any], field: str) -> tuple[str, str, bool]:
    realm = spec.get("realm")
    if realm in (None, ""):
        realm = DEFAULT_REALM
    if not isinstance(realm, str) or '"' in realm or "\\" in realm or not realm.isprintable():
        raise MiddlewareError(
            f"{field}.realm", "realm must be printable text without quotes or backslashes"
        )
    header_field = spec.get("headerField") or ""
    if not isinstance(header_field, str) or (header_field and not _TOKEN.match(header_field)):
        raise MiddlewareError(f"{field}.headerField", "headerField must be an HTTP header name")
    remove = spec.get("removeHeader") is True
    return realm, header_field, remove


def _service(plans: list[Plan], ctx: Context, config_args: dict[str, Any]) -> list[Plan]:
    config = AuthServiceConfig(key=f"{ctx.source.namespace}/{ctx.source.name}", **config_args)
    return [plan.add_filter("ext_authz", config) for plan in plans]


def basic_auth(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    secret = _secret_name(spec, field)
    lines = _secret_users(ctx, secret, f"{field}.secret")
    users: dict[str, str] = {}
    for line in lines:
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise MiddlewareError(f"{field}.secret", f"not an htpasswd line: {line[:20]!r}")
        if hash_scheme(hashed) is None:
            raise Unsupported(
                f"{field}.secret",
                f"user {user!r} has a password hash Traefik does not check (only {{SHA}}, "
                "bcrypt $2a$/$2b$/$2y$ and MD5-crypt $apr1$/$1$)",
            )
        users[user] = hashed  # a later line for the same user wins, as in Traefik's map
    realm, header_field, remove = _options(spec, field)
    envoy_can = (
        all(hash_scheme(h) == "sha" for h in users.values())
        and realm == DEFAULT_REALM
        and not header_field
    )
    if not envoy_can:
        return _service(
            plans,
            ctx,
            {
                "scheme": "basic",
                "realm": realm,
                "users": tuple(sorted(users.items())),
                "remove_header": remove,
                "header_field": header_field,
            },
        )
    out = []
    for plan in plans:
        plan = plan.add_filter("basic_auth", BasicAuthConfig(users=tuple(lines)))
        if remove:
            plan = plan.remove_request("Authorization")
        out.append(plan)
    return out


def digest_auth(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    secret = _secret_name(spec, field)
    _, data = _secret_data(ctx, secret, f"{field}.secret")
    lines = _lines(ctx, secret, f"{field}.secret", data)
    realm, header_field, remove = _options(spec, field)
    users: dict[str, str] = {}
    for line in lines:
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not _HA1.match(parts[2]):
            raise MiddlewareError(
                f"{field}.secret", f"not an htdigest line (user:realm:md5): {line[:20]!r}"
            )
        user, user_realm, ha1 = parts
        if user_realm == realm:  # Traefik looks users up by user and the middleware's realm
            users[user] = ha1.lower()
    if not users:
        raise MiddlewareError(
            f"{field}.secret", f"Secret {ctx.namespace}/{secret} has no user of realm {realm!r}"
        )
    return _service(
        plans,
        ctx,
        {
            "scheme": "digest",
            "realm": realm,
            "users": tuple(sorted(users.items())),
            "remove_header": remove,
            "header_field": header_field,
        },
    )
