"""An IngressRoute's ``tls`` → ``RouteTLS``; the TLS routes of an entry point → its TLS chains.

Follows Traefik's CRD provider and TLS manager (``pkg/provider/kubernetes/crd``, ``pkg/tls``,
``pkg/server/router/tcp``):

- ``tls.secretName`` names a Secret with ``tls.crt`` and ``tls.key`` in the IngressRoute's
  namespace. Every certificate goes into one store: a connection gets the certificate whose names
  match its SNI, whatever router named it. Traefik falls back to a self-signed default certificate;
  Switchman (Envoy's selection) falls back to the first certificate in name order (``ns/name``).
- ``tls.options`` names a TLSOption (namespace defaulted to the IngressRoute's; the
  ``<ns>-<name>@kubernetescrd`` form too). A TLSOption named ``default`` (in any one namespace)
  replaces Traefik's default options (minimum TLS 1.2, ALPN h2 and http/1.1).
- TLS options are picked per SNI host: each host of a TLS router's rule (``Host()``) gets that
  router's options; a host claimed with two different options gets the default ones. The HTTPS
  handler then refuses (421) a request whose Host has other options than its SNI (domain
  fronting), which is what keeps a client from skipping a host's client-certificate requirement.

Anything missing or malformed makes the IngressRoute's routes not served (never served without the
TLS they asked for), with a diagnostic naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from translators import names
from translators.errors import Diagnostic, SourceRef
from translators.ir import (
    ERROR_PAGE_HEADER,
    DirectResponse,
    HeaderMatch,
    Match,
    Route,
    RouteTLS,
    ServerCertificate,
    TLSChain,
    TLSOptions,
)
from translators.models import IngressRoute, TLSOption
from translators.options import Options
from translators.transport import _KEY_BLOCK, _TLS13_CIPHERS, _VERSIONS, GO_CIPHERS
from translators.world import Entry, World

# Go's crypto/tls curve names (as Traefik reads them) → BoringSSL's (Envoy's ecdh_curves).
GO_CURVES = {
    "CurveP256": "P-256",
    "secp256r1": "P-256",
    "CurveP384": "P-384",
    "secp384r1": "P-384",
    "CurveP521": "P-521",
    "secp521r1": "P-521",
    "X25519": "X25519",
    "X25519MLKEM768": "X25519MLKEM768",
}
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
_VERIFYING = frozenset({"VerifyClientCertIfGiven", "RequireAndVerifyClientCert"})
DEFAULT = "default"
_PROVIDER = "@kubernetescrd"


class TLSError(Exception):
    """A ``tls`` section that cannot be served; carries the diagnostic that explains it."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _fail(ref: SourceRef, path: str, message: str, reason: str = "InvalidTLS") -> NoReturn:
    raise TLSError(Diagnostic(source=ref, field=path, reason=reason, message=message))


def _warn(ref: SourceRef, path: str, message: str, reason: str = "Unsupported") -> Diagnostic:
    return Diagnostic(source=ref, field=path, reason=reason, message=message, severity="warning")


@dataclass(slots=True)
class TLSResolver:
    world: World
    options: Options
    warnings: list[Diagnostic] = field(default_factory=list)

    def resolve(self, entry: Entry[IngressRoute]) -> RouteTLS:
        """The IngressRoute's TLS; raises TLSError when its routes must not be served."""
        ir, ref = entry.obj, entry.ref
        tls = ir.spec.tls
        assert tls is not None  # the caller asks only for an IngressRoute with tls
        ns = ir.metadata.namespace
        if tls.store is not None:
            self.warnings.append(
                _warn(
                    ref,
                    "spec.tls.store",
                    "TLSStore is not translated: Traefik's default store is the only one, and "
                    "Switchman serves every certificate from it",
                    "Ignored",
                )
            )
        if tls.domains:
            self.warnings.append(
                _warn(
                    ref,
                    "spec.tls.domains",
                    "domains only tell a certResolver which certificates to request; without "
                    "ACME they select nothing (as in Traefik)",
                    "Ignored",
                )
            )
        if tls.cert_resolver:
            if not tls.secret_name:
                _fail(
                    ref,
                    "spec.tls.certResolver",
                    "certificate resolvers (ACME) are not translated and no secretName is "
                    "given; the routes of this IngressRoute are not served",
                    "Unsupported",
                )
            self.warnings.append(
                _warn(
                    ref,
                    "spec.tls.certResolver",
                    "certificate resolvers (ACME) are not translated; the secretName "
                    "certificate is served",
                )
            )
        default_options = self._default_options(ref)
        options = default_options
        if tls.options is not None and tls.options.name:
            options = self._options_ref(ref, ns, tls.options.name, tls.options.namespace)
        certificate = None
        if tls.secret_name:
            certificate = self._certificate(ref, ns, tls.secret_name)
        return RouteTLS(options=options, default_options=default_options, certificate=certificate)

    # -- certificates ---------------------------------------------------------------------------

    def _certificate(self, ref: SourceRef, ns: str, name: str) -> ServerCertificate:
        path = "spec.tls.secretName"
        data = _secret_data(self.world, ref, ns, name, path)
        cert, key = data.get("tls.crt"), data.get("tls.key")
        if not cert or not key:
            _fail(ref, path, f"Secret {ns}/{name} needs tls.crt and tls.key; not served")
        if not _is_pem_certificates(cert):
            _fail(ref, path, f"Secret {ns}/{name}: tls.crt is not a PEM certificate; not served")
        match = _KEY_BLOCK.search(key)
        if match is None or not _is_base64(match.group(2)):
            _fail(ref, path, f"Secret {ns}/{name}: tls.key is not a PEM private key; not served")
        return ServerCertificate(
            name=names.secret_name(ns, name), certificate_chain=cert, private_key=key
        )

    # -- options --------------------------------------------------------------------------------

    def _default_options(self, ref: SourceRef) -> TLSOptions:
        found = sorted((k for k in self.world.tlsoptions if k[1] == DEFAULT), key=lambda k: k[0])
        if not found:
            return TLSOptions()
        if len(found) > 1:
            # Traefik drops every "default" TLSOption then: its built-in defaults apply.
            self.warnings.append(
                _warn(
                    ref,
                    "spec.tls.options",
                    "TLSOption 'default' is defined in more than one namespace "
                    f"({', '.join(k[0] for k in found)}); Traefik's default options are used",
                    "Conflict",
                )
            )
            return TLSOptions()
        return self._build(self.world.tlsoptions[found[0]], DEFAULT, ref)

    def _options_ref(self, ref: SourceRef, ns: str, name: str, namespace: str | None) -> TLSOptions:
        path = "spec.tls.options"
        if name.endswith(_PROVIDER) or "@" not in name:
            if "@" in name:
                # Traefik's own ID: "<ns>-<name>" (or "default"); the namespace field is ignored.
                ident = name.removesuffix(_PROVIDER)
                if ident == DEFAULT:
                    return self._default_options(ref)
                key = next(
                    (k for k in sorted(self.world.tlsoptions) if f"{k[0]}-{k[1]}" == ident), None
                )
                if key is None:
                    _fail(
                        ref,
                        f"{path}.name",
                        f"TLSOption {name} not found; not served",
                        "TLSOptionNotFound",
                    )
            else:
                target = namespace or ns
                if target != ns and not self.options.allow_cross_namespace:
                    _fail(
                        ref,
                        f"{path}.namespace",
                        f"TLSOption {target}/{name} is in another namespace and "
                        "allowCrossNamespace is off; not served",
                        "CrossNamespaceRefused",
                    )
                key = (target, name)
                if name == DEFAULT and key in self.world.tlsoptions:
                    return self._default_options(ref)
                if key not in self.world.tlsoptions:
                    if name == DEFAULT:
                        return self._default_options(ref)
                    _fail(
                        ref,
                        f"{path}.name",
                        f"TLSOption {target}/{name} not found; not served",
                        "TLSOptionNotFound",
                    )
            entry = self.world.tlsoptions[key]
            return self._build(entry, f"{key[0]}-{key[1]}", ref)
        _fail(
            ref,
            f"{path}.name",
            f"TLSOption {name!r} is from another provider; only Kubernetes CRD TLSOptions are "
            "translated; not served",
            "Unsupported",
        )

    def _build(self, entry: Entry[TLSOption], ident: str, user: SourceRef) -> TLSOptions:
        """The options, or TLSError naming the TLSOption's field (and the IngressRoute)."""
        ref, spec = entry.ref, entry.obj.spec
        ns = entry.obj.metadata.namespace
        who = f"TLSOption {ns}/{entry.obj.metadata.name}"

        def fail(path: str, message: str) -> NoReturn:
            _fail(
                ref,
                path,
                f"{message}; routes of {user.kind} {user.namespace}/{user.name} using it are "
                "not served",
                "InvalidTLSOption",
            )

        versions = {}
        for fld, value in (("minVersion", spec.min_version), ("maxVersion", spec.max_version)):
            if value and value not in _VERSIONS:
                fail(f"spec.{fld}", f"{value!r} is not one of {', '.join(_VERSIONS)}")
            versions[fld] = _VERSIONS[value] if value else ""
        ciphers: list[str] = []
        for i, suite in enumerate(spec.cipher_suites or ()):
            if suite in _TLS13_CIPHERS:
                continue  # as in Go: TLS 1.3 suites are not configurable
            if suite not in GO_CIPHERS:
                fail(f"spec.cipherSuites[{i}]", f"unknown or unsupported cipher suite {suite!r}")
            if GO_CIPHERS[suite] not in ciphers:
                ciphers.append(GO_CIPHERS[suite])
        curves: list[str] = []
        for i, curve in enumerate(spec.curve_preferences or ()):
            if curve not in GO_CURVES:
                fail(
                    f"spec.curvePreferences[{i}]",
                    f"unknown curve {curve!r} (have: {', '.join(sorted(GO_CURVES))})",
                )
            if GO_CURVES[curve] not in curves:
                curves.append(GO_CURVES[curve])
        auth = spec.client_auth
        cas: list[str] = []
        client_auth = "NoClientCert"
        if auth is not None:
            for i, secret in enumerate(auth.secret_names or ()):
                path = f"spec.clientAuth.secretNames[{i}]"
                try:
                    data = _secret_data(self.world, ref, ns, secret, path)
                except TLSError as exc:
                    fail(path, exc.diagnostic.message)
                pem = next((data[k] for k in ("tls.ca", "ca.crt") if k in data), None)
                if pem is None:
                    fail(path, f"Secret {ns}/{secret} has neither tls.ca nor ca.crt")
                if not _is_pem_certificates(pem):
                    fail(path, f"Secret {ns}/{secret}: the CA is not PEM X.509 certificates")
                cas.append(pem if pem.endswith("\n") else pem + "\n")
            if cas:
                client_auth = "RequireAndVerifyClientCert"  # Traefik's choice when CAs are given
            kind = auth.client_auth_type
            if kind:
                if kind not in CLIENT_AUTH_TYPES:
                    fail(
                        "spec.clientAuth.clientAuthType",
                        f"unknown client auth type {kind!r} (have: {', '.join(CLIENT_AUTH_TYPES)})",
                    )
                if kind in _VERIFYING and not cas:
                    fail(
                        "spec.clientAuth.clientAuthType",
                        f"{kind} needs CA certificates (clientAuth.secretNames)",
                    )
                if kind == "RequireAnyClientCert":
                    # Envoy asks for a client certificate only with a CA to verify it against.
                    _fail(
                        ref,
                        "spec.clientAuth.clientAuthType",
                        "RequireAnyClientCert is not translated: Envoy only requests client "
                        "certificates it can verify against clientAuth.secretNames CAs (use "
                        f"RequireAndVerifyClientCert); routes of {user.kind} "
                        f"{user.namespace}/{user.name} using it are not served",
                        "Unsupported",
                    )
                if kind == "RequestClientCert":
                    self.warnings.append(
                        _warn(
                            ref,
                            "spec.clientAuth.clientAuthType",
                            "RequestClientCert: Envoy does not ask for an unverified client "
                            "certificate; connections are accepted without one (as NoClientCert)",
                            "Approximated",
                        )
                    )
                    kind = "NoClientCert"
                client_auth = kind
        if spec.sni_strict:
            self.warnings.append(
                _warn(
                    ref,
                    "spec.sniStrict",
                    f"sniStrict is not enforced: Envoy serves the first certificate when none "
                    f"matches the SNI, where Traefik refuses the handshake ({who})",
                )
            )
        if spec.prefer_server_cipher_suites is not None:
            self.warnings.append(
                _warn(
                    ref,
                    "spec.preferServerCipherSuites",
                    "preferServerCipherSuites is deprecated and ignored (as in Go)",
                    "Ignored",
                )
            )
        if spec.disable_session_tickets:
            self.warnings.append(
                _warn(ref, "spec.disableSessionTickets", "disableSessionTickets is not translated")
            )
        alpn = tuple(spec.alpn_protocols) if spec.alpn_protocols else TLSOptions().alpn
        return TLSOptions(
            name=ident,
            min_version=versions["minVersion"] or TLSOptions().min_version,
            max_version=versions["maxVersion"],
            cipher_suites=tuple(ciphers),
            curves=tuple(curves),
            client_auth=client_auth,
            client_ca="".join(cas),
            alpn=alpn,
        )


def _secret_data(world: World, ref: SourceRef, ns: str, name: str, path: str) -> dict[str, str]:
    entry = world.secrets.get((ns, name))
    if entry is None:
        _fail(ref, path, f"Secret {ns}/{name} not found; not served", "SecretNotFound")
    data: dict[str, str] = {}
    for k, v in sorted(entry.obj.data.items()):
        try:
            data[k] = base64.b64decode(v, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            _fail(ref, path, f"Secret {ns}/{name} key {k} is not valid base64 text; not served")
    data.update(entry.obj.string_data)
    return data


def _is_pem_certificates(pem: str) -> bool:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        return False
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        return False
    return True


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        return False
    return True


# -- chains --------------------------------------------------------------------------------------

MISDIRECTED = DirectResponse(status=421, body="Misdirected Request\n")


def tls_chains(
    entrypoint: str,
    routes: Sequence[Route],
    certificates: tuple[str, ...],
    diags: list[Diagnostic],
) -> tuple[TLSChain, ...]:
    """The TLS chains of one entry point from its routes (no TLS route: no TLS chain).

    One chain per TLS options name that some host maps to (its hosts as server names), and the
    fallback chain (every other SNI, or none) with the default options, last. Every chain
    serves every certificate (Traefik's one store)."""
    mine = [r for r in routes if r.tls is not None and r.entrypoint == entrypoint]
    if not mine:
        return ()
    if not certificates:
        for src in sorted({r.source for r in mine}):
            diags.append(
                Diagnostic(
                    source=src,
                    field="spec.tls.secretName",
                    reason="NoCertificate",
                    message="no certificate to serve: no TLS IngressRoute names a secretName "
                    "(Traefik would serve its self-signed default certificate); not served",
                )
            )
        return ()
    default = mine[0].tls.default_options if mine[0].tls is not None else TLSOptions()
    claims: dict[str, dict[str, tuple[TLSOptions, Route]]] = {}
    for r in mine:
        assert r.tls is not None
        host = r.match.exact_host
        if host is not None:
            claims.setdefault(host, {}).setdefault(r.tls.options.name, (r.tls.options, r))
    host_options: dict[str, TLSOptions] = {}
    for host in sorted(claims):
        found = claims[host]
        if len(found) == 1:
            host_options[host] = next(iter(found.values()))[0]
            continue
        for opt_name in sorted(found):
            r = found[opt_name][1]
            diags.append(
                _warn(
                    r.source,
                    "spec.tls.options",
                    f"host {host} has routers with different TLS options "
                    f"({', '.join(sorted(found))}); the default TLS options are used for it, "
                    "as in Traefik",
                    "Conflict",
                )
            )
        host_options[host] = default
    by_name: dict[str, tuple[TLSOptions, list[str]]] = {}
    for host, opts in host_options.items():
        if opts.name != DEFAULT:
            by_name.setdefault(opts.name, (opts, []))[1].append(host)
    chains = []
    for opt_name in sorted(by_name):
        opts, hosts = by_name[opt_name]
        chains.append(
            TLSChain(
                server_names=tuple(sorted(hosts)),
                options=opts,
                certificates=certificates,
                route_config=names.tls_route_config_name(entrypoint, opt_name),
                guard=_guard(entrypoint, opt_name, hosts, invert=True),
            )
        )
    others = sorted(h for h, o in host_options.items() if o.name != DEFAULT)
    chains.append(
        TLSChain(
            server_names=(),
            options=default,
            certificates=certificates,
            route_config=names.tls_route_config_name(entrypoint, DEFAULT),
            guard=_guard(entrypoint, DEFAULT, others, invert=False) if others else None,
        )
    )
    return tuple(chains)


def _guard(entrypoint: str, opt_name: str, hosts: Iterable[str], *, invert: bool) -> Route:
    """421 for a Host (any case, an optional trailing dot and port) among ``hosts`` — or, with
    ``invert``, not among them."""
    alternatives = "|".join(re.escape(h) for h in sorted(hosts))
    pattern = f"(?i)(?:{alternatives})\\.?(?::[0-9]+)?"
    return Route(
        name=names.tls_guard_route_name(entrypoint, opt_name),
        router="tls-guard",
        entrypoint=entrypoint,
        match=Match(
            headers=(
                HeaderMatch(name=":authority", kind="regex", value=pattern, invert=invert),
                # An errors middleware's internal redirect (clients cannot send this header).
                HeaderMatch(name=ERROR_PAGE_HEADER, kind="present", invert=True),
            )
        ),
        action=MISDIRECTED,
        priority=0,
        source=SourceRef(),
    )


def all_certificates(routes: Iterable[Route]) -> tuple[ServerCertificate, ...]:
    """Every certificate of the TLS routes, by name (the first is the fallback)."""
    out: dict[str, ServerCertificate] = {}
    for r in routes:
        if r.tls is not None and r.tls.certificate is not None:
            out.setdefault(r.tls.certificate.name, r.tls.certificate)
    return tuple(out[n] for n in sorted(out))
