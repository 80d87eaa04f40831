"""Switchman's own authorization service (``envoy.service.auth.v3.Authorization``).

Envoy's basic_auth filter checks ``{SHA}`` passwords only, and has no Digest. Routes with other
users (bcrypt, apr1/MD5-crypt), a realm or ``headerField``, and every digestAuth, turn on Envoy's
ext_authz filter instead (``translators/envoy/filter_ext_authz.py``), which asks this service, on
the xDS port next to ADS. A route sends only its Middleware's key; the users are looked up in the
translation the pipeline last made, so a Secret change applies with the next snapshot. Anything
the service cannot decide (an unknown key) is denied with 500: it fails closed. forwardAuth
checks come here too (``switchman.forward_auth`` context extension) and are answered by
``controlplane/forward_auth.py``.

Digest (RFC 2617, as Traefik's goauth does it: MD5, ``qop="auth"``): nonces are stateless and
signed, ``<time><random><HMAC(time, random)>`` with a per-process key, valid for
``NONCE_LIFETIME`` seconds (an expired one is answered ``stale=true``); the ``nc`` of each nonce
must grow, so a captured Authorization header cannot be replayed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import bcrypt
import grpc
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.service.auth.v3 import external_auth_pb2 as auth_v3
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2 as http_status_v3
from google.rpc import code_pb2, status_pb2

from controlplane.forward_auth import ForwardAuthService
from translators.envoy.filter_ext_authz import AUTH_KEY
from translators.envoy.filter_forward_auth import FORWARD_AUTH_KEY, HOSTNAME_METADATA
from translators.ir import IR
from translators.middlewares.auth import AuthServiceConfig, auth_table, hash_scheme

with warnings.catch_warnings():
    # passlib 1.7.4 imports the stdlib ``crypt`` module, deprecated in 3.11 (and gone in 3.13,
    # where passlib does without it); nothing here uses it.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.hash import apr_md5_crypt, ldap_sha1, md5_crypt

log = logging.getLogger("switchman.authz")

NONCE_LIFETIME = 300.0
MAX_TRACKED_NONCES = 100_000
_UNAUTHORIZED = "401 Unauthorized\n"


def verify_password(hashed: str, password: str) -> bool:
    """Does ``password`` match an htpasswd hash (``{SHA}``, bcrypt, apr1/MD5-crypt)?"""
    scheme = hash_scheme(hashed)
    try:
        if scheme == "bcrypt":
            # Go's bcrypt reads $2y$ as $2a$/$2b$ too; pyca's bcrypt accepts all three.
            return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
        if scheme == "md5":
            handler = apr_md5_crypt if hashed.startswith("$apr1$") else md5_crypt
            return bool(handler.verify(password, hashed))
        if scheme == "sha":
            return bool(ldap_sha1.verify(password, hashed))
    except ValueError:  # a malformed hash, or a password bcrypt refuses (over 72 bytes)
        return False
    return False


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def parse_digest(value: str) -> dict[str, str] | None:
    """The parameters of a ``Digest`` Authorization header, or None if it is not one."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in params:
            return None
        params[name] = raw
        pos = m.end()
    return params


def parse_basic(value: str) -> tuple[str, str] | None:
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass(slots=True)
class DigestNonces:
    """Signed, expiring nonces, and the highest ``nc`` seen for each one still valid."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    lifetime: float = NONCE_LIFETIME
    clock: Callable[[], float] = time.time
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def opaque(self) -> str:
        return hmac.new(self.key, b"opaque", hashlib.sha256).hexdigest()[:32]

    def _mac(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        body = f"{int(self.clock() * 1000):016x}{secrets.token_hex(8)}"
        return body + self._mac(body)

    def check(self, nonce: str) -> str:
        """``ok``, ``stale`` (ours, expired) or ``bad`` (not ours)."""
        if len(nonce) != 64 or not hmac.compare_digest(self._mac(nonce[:32]), nonce[32:]):
            return "bad"
        try:
            issued = int(nonce[:16], 16) / 1000
        except ValueError:
            return "bad"
        age = self.clock() - issued
        return "ok" if -5 <= age <= self.lifetime else "stale"

    def use(self, nonce: str, nc: int) -> bool:
        """Record a verified request's ``nc``; False if it does not grow (a replay)."""
        now = self.clock()
        if len(self._seen) >= MAX_TRACKED_NONCES:
            self._seen = {n: v for n, v in self._seen.items() if now - v[0] <= self.lifetime}
            while len(self._seen) >= MAX_TRACKED_NONCES:  # still full: forget the oldest
                del self._seen[next(iter(self._seen))]
        issued, last = self._seen.get(nonce, (int(nonce[:16], 16) / 1000, 0))
        if nc <= last:
            return False
        self._seen[nonce] = (issued, nc)
        return True


def _header(name: str, value: str) -> base_v3.HeaderValueOption:
    return base_v3.HeaderValueOption(
        header=base_v3.HeaderValue(key=name, value=value),
        append_action=base_v3.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _deny(status: int, headers: Mapping[str, str] = {}, body: str = "") -> auth_v3.CheckResponse:
    return auth_v3.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=auth_v3.DeniedHttpResponse(
            status=http_status_v3.HttpStatus(code=status),
            headers=[_header(k, v) for k, v in headers.items()],
            body=body,
        ),
    )


def _allow(config: AuthServiceConfig, user: str) -> auth_v3.CheckResponse:
    ok = auth_v3.OkHttpResponse()
    if config.header_field:
        ok.headers.append(_header(config.header_field, user))
    if config.remove_header:
        ok.headers_to_remove.append("authorization")
    return auth_v3.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


class AuthorizationService(auth_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers Envoy's ext_authz checks from the latest translation's auth table."""

    def __init__(self, current_ir: Callable[[], IR | None], nonces: DigestNonces | None = None):
        self._current_ir = current_ir
        self._ir: IR | None = None
        self._table: dict[str, AuthServiceConfig] = {}
        self.nonces = nonces or DigestNonces()
        # forwardAuth checks: the HTTP call to the auth server (controlplane/forward_auth.py).
        self.forward_auth = ForwardAuthService(current_ir)

    async def close(self) -> None:
        await self.forward_auth.close()

    def lookup(self, key: str) -> AuthServiceConfig | None:
        ir = self._current_ir()
        if ir is not self._ir:
            self._ir, self._table = ir, (auth_table(ir) if ir is not None else {})
        return self._table.get(key)

    async def Check(
        self, request: auth_v3.CheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> auth_v3.CheckResponse:
        extensions = request.attributes.context_extensions
        if FORWARD_AUTH_KEY in extensions:
            metadata = dict(context.invocation_metadata() or ())
            hostname = metadata.get(HOSTNAME_METADATA, "")
            return await self.forward_auth.check(
                extensions[FORWARD_AUTH_KEY],
                request,
                hostname if isinstance(hostname, str) else "",
            )
        key = extensions.get(AUTH_KEY, "")
        config = self.lookup(key)
        if config is None:
            log.error("ext_authz check for unknown key %r: denied with 500", key)
            return _deny(500, body="500 Internal Server Error\n")
        http = request.attributes.request.http
        authorization = http.headers.get("authorization", "")
        if config.scheme == "basic":
            return await self._basic(config, authorization)
        return self._digest(config, authorization, http.method, http.path)

    async def _basic(self, config: AuthServiceConfig, authorization: str) -> auth_v3.CheckResponse:
        creds = parse_basic(authorization)
        if creds is not None:
            user, password = creds
            hashed = dict(config.users).get(user)
            # bcrypt is slow on purpose: off the event loop that also serves ADS.
            if hashed is not None and await asyncio.to_thread(verify_password, hashed, password):
                return _allow(config, user)
        return _deny(
            401, {"WWW-Authenticate": f"Basic realm={_quote(config.realm)}"}, _UNAUTHORIZED
        )

    def challenge(self, config: AuthServiceConfig, stale: bool = False) -> auth_v3.CheckResponse:
        value = (
            f'Digest realm={_quote(config.realm)}, qop="auth", '
            f"nonce={_quote(self.nonces.issue())}, opaque={_quote(self.nonces.opaque)}, "
            "algorithm=MD5"
        )
        if stale:
            value += ", stale=true"
        return _deny(401, {"WWW-Authenticate": value}, _UNAUTHORIZED)

    def _digest(
        self, config: AuthServiceConfig, authorization: str, method: str, path: str
    ) -> auth_v3.CheckResponse:
        p = parse_digest(authorization)
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "opaque")
        if p is None or any(not p.get(n) for n in needed):
            return self.challenge(config)
        if (
            p["qop"] != "auth"
            or p.get("algorithm", "MD5").upper() != "MD5"
            or p["realm"] != config.realm
            or not hmac.compare_digest(p["opaque"], self.nonces.opaque)
            or p["uri"] != path
            or not re.fullmatch(r"[0-9a-fA-F]{8}", p["nc"])
        ):
            return self.challenge(config)
        state = self.nonces.check(p["nonce"])
        if state != "ok":
            return self.challenge(config, stale=state == "stale")
        ha1 = dict(config.users).get(p["username"])
        if ha1 is None:
            return self.challenge(config)
        ha2 = _md5(f"{method}:{p['uri']}")
        expected = _md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        if not hmac.compare_digest(expected, p["response"].lower()):
            return self.challenge(config)
        if not self.nonces.use(p["nonce"], int(p["nc"], 16)):
            return self.challenge(config)  # a replayed nc
        return _allow(config, p["username"])


def add_to_server(server: grpc.aio.Server, service: AuthorizationService) -> None:
    auth_grpc.add_AuthorizationServicer_to_server(service, server)
