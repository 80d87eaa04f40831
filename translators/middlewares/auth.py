"""basicAuth: users from a Kubernetes Secret, checked by Envoy's basic_auth filter.

Secrets as Traefik reads them: ``kubernetes.io/basic-auth`` (``username`` and ``password``;
Traefik stores the password as ``{SHA}``), or any other type whose data values hold htpasswd
lines. Envoy's filter verifies ``{SHA}`` hashes only; users with bcrypt, apr1/MD5 or other
hashes make the middleware untranslatable for now, and the route fails closed (answers 500).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported


@dataclass(frozen=True, slots=True)
class BasicAuthConfig:
    users: tuple[str, ...]  # htpasswd lines, {SHA} hashes


def _decode(value: str, field: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise MiddlewareError(field, "Secret data is not valid base64 text") from exc


def _secret_users(ctx: Context, name: str, field: str) -> list[str]:
    entry = ctx.world.secrets.get((ctx.namespace, name))
    if entry is None:
        raise MiddlewareError(field, f"Secret {ctx.namespace}/{name} not found", "SecretNotFound")
    secret = entry.obj
    data = {k: _decode(v, field) for k, v in sorted(secret.data.items())}
    data.update(secret.string_data)
    if secret.type == "kubernetes.io/basic-auth":
        user, password = data.get("username"), data.get("password")
        if not user or password is None:
            raise MiddlewareError(field, "a basic-auth Secret needs username and password")
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        return [f"{user}:{{SHA}}{digest}"]
    lines = [line.strip() for value in data.values() for line in value.splitlines() if line.strip()]
    if not lines:
        raise MiddlewareError(field, f"Secret {ctx.namespace}/{name} holds no users")
    return lines


def basic_auth(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    secret = spec.get("secret")
    if not isinstance(secret, str) or not secret:
        raise MiddlewareError(f"{field}.secret", "secret is required")
    users = _secret_users(ctx, secret, f"{field}.secret")
    for line in users:
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise MiddlewareError(f"{field}.secret", f"not an htpasswd line: {line[:20]!r}")
        if not hashed.startswith("{SHA}"):
            scheme = (
                "bcrypt"
                if hashed.startswith("$2")
                else ("apr1/MD5" if hashed.startswith("$apr1$") else "this hash")
            )
            raise Unsupported(
                f"{field}.secret",
                f"user {user!r} has a {scheme} password, which Envoy's basic_auth filter cannot "
                "check (only {SHA})",
            )
    if spec.get("headerField"):
        raise Unsupported(f"{field}.headerField", "headerField is not translated yet")
    if spec.get("realm") not in (None, "", "traefik"):
        raise Unsupported(
            f"{field}.realm", "a realm other than Traefik's default is not translated"
        )
    out = []
    for plan in plans:
        plan = plan.add_filter("basic_auth", BasicAuthConfig(users=tuple(users)))
        if spec.get("removeHeader") is True:
            plan = plan.remove_request("Authorization")
        out.append(plan)
    return out
