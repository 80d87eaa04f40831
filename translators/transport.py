"""ServersTransport → ``UpstreamTransport``: the TLS and connection settings of a cluster.

Follows Traefik's CRD provider (``loadServersTransports`` in ``pkg/provider/kubernetes/crd``):
- ``rootCAs[]`` names a Secret (``tls.ca``, else ``ca.crt``) or a ConfigMap (``ca.crt``, else
  ``tls.ca``), never both; the deprecated ``rootCAsSecrets[]`` is read too.
- ``certificatesSecrets[]`` name Secrets with ``tls.crt`` and ``tls.key``.
- ``forwardingTimeouts``: ``dialTimeout`` 30 s, ``responseHeaderTimeout`` 0, ``idleConnTimeout``
  90 s, ``readIdleTimeout`` 0, ``pingTimeout`` 15 s (a number is seconds, or a Go duration).

Unlike Traefik, which logs and skips a CA or certificate it cannot load, anything missing or
malformed fails the transport: every route using it is not served (fail closed), and the
diagnostic names the ServersTransport and the field. Secret PEM is inlined into the cluster's TLS
context (SDS is future work).
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from dataclasses import dataclass, field
from typing import NoReturn

from translators.errors import Diagnostic, SourceRef
from translators.ir import ClientCertificate, UpstreamTransport
from translators.middlewares.base import MiddlewareError
from translators.middlewares.traffic import parse_duration
from translators.models import ServersTransport
from translators.world import Entry, World


class TransportError(Exception):
    """A ServersTransport that cannot be used; carries the diagnostic that explains it."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# Go's crypto/tls names → BoringSSL's (Envoy). TLS 1.3 suites are not configurable in Go either.
GO_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
_TLS13_CIPHERS = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_VERSIONS = {
    "VersionTLS10": "TLSv1_0",
    "VersionTLS11": "TLSv1_1",
    "VersionTLS12": "TLSv1_2",
    "VersionTLS13": "TLSv1_3",
}
# peerCertSANs ``type`` → Envoy's SubjectAltNameMatcher.SanType.
_SAN_TYPES = {"DNSName": "DNS", "IPAddress": "IP_ADDRESS", "URI": "URI", "EmailAddress": "EMAIL"}
_KEY_BLOCK = re.compile(
    r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----\s*([A-Za-z0-9+/=\s]+?)\s*"
    r"-----END \1-----"
)


@dataclass(slots=True)
class TransportResolver:
    """Resolves ServersTransports by (namespace, name), once each."""

    world: World
    _done: dict[tuple[str, str], tuple[UpstreamTransport, list[Diagnostic]]] = field(
        default_factory=dict
    )

    def resolve(self, namespace: str, name: str) -> tuple[UpstreamTransport, list[Diagnostic]]:
        """The transport and its warnings; raises TransportError when it cannot be used."""
        key = (namespace, name)
        if key not in self._done:
            entry = self.world.serverstransports.get(key)
            if entry is None:
                raise KeyError(key)
            self._done[key] = _Builder(self.world, entry).build()
        return self._done[key]


@dataclass(slots=True)
class _Builder:
    world: World
    entry: Entry[ServersTransport]
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ref(self) -> SourceRef:
        return self.entry.ref

    @property
    def ns(self) -> str:
        return self.entry.obj.metadata.namespace

    def fail(self, path: str, message: str, reason: str = "InvalidServersTransport") -> NoReturn:
        raise TransportError(
            Diagnostic(source=self.ref, field=path, reason=reason, message=message)
        )

    def warn(self, path: str, message: str, reason: str = "Unsupported") -> None:
        self.warnings.append(
            Diagnostic(
                source=self.ref, field=path, reason=reason, message=message, severity="warning"
            )
        )

    def build(self) -> tuple[UpstreamTransport, list[Diagnostic]]:
        spec = self.entry.obj.spec
        name = f"{self.ns}/{self.entry.obj.metadata.name}"
        if spec.spiffe is not None:
            self.fail(
                "spec.spiffe",
                "SPIFFE is not translated (Envoy needs an SDS SPIFFE validator); routes using "
                f"ServersTransport {name} are not served",
                "Unsupported",
            )
        if spec.max_idle_conns_per_host is not None:
            self.warn(
                "spec.maxIdleConnsPerHost",
                "maxIdleConnsPerHost is ignored: Envoy has no cap on idle connections per host",
            )
        if spec.disable_http2:
            self.warn(
                "spec.disableHTTP2",
                "disableHTTP2 has no effect: Switchman already speaks HTTP/1.1 to https backends "
                "(no HTTP/2 by ALPN); an h2c service still uses HTTP/2",
                "Ignored",
            )
        sans = self._sans()
        if spec.server_name and not sans and not spec.insecure_skip_verify:
            # Go verifies the certificate against ServerName.
            sans = (("DNS", spec.server_name),)
        timeouts = self._timeouts()
        transport = UpstreamTransport(
            name=name,
            server_name=spec.server_name or "",
            insecure_skip_verify=bool(spec.insecure_skip_verify),
            trusted_ca=self._root_cas(),
            client_certificate=self._client_certificate(),
            peer_sans=() if spec.insecure_skip_verify else sans,
            min_version=self._version("minVersion", spec.min_version),
            max_version=self._version("maxVersion", spec.max_version),
            cipher_suites=self._ciphers(),
            **timeouts,
        )
        return transport, self.warnings

    def _version(self, fld: str, value: str | None) -> str:
        if value is None or value == "":
            return ""
        if value not in _VERSIONS:
            self.fail(
                f"spec.{fld}",
                f"{value!r} is not one of {', '.join(_VERSIONS)}",
            )
        return _VERSIONS[value]

    def _ciphers(self) -> tuple[str, ...]:
        out: list[str] = []
        for i, suite in enumerate(self.entry.obj.spec.cipher_suites or ()):
            if suite in _TLS13_CIPHERS:
                continue  # as in Go: TLS 1.3 suites are not configurable
            if suite not in GO_CIPHERS:
                self.fail(
                    f"spec.cipherSuites[{i}]", f"unknown or unsupported cipher suite {suite!r}"
                )
            if GO_CIPHERS[suite] not in out:
                out.append(GO_CIPHERS[suite])
        return tuple(out)

    def _sans(self) -> tuple[tuple[str, str], ...]:
        spec = self.entry.obj.spec
        out: list[tuple[str, str]] = []
        if spec.peer_cert_uri:
            out.append(("URI", spec.peer_cert_uri))
        for i, san in enumerate(spec.peer_cert_sans or ()):
            path = f"spec.peerCertSANs[{i}]"
            if isinstance(san, str):
                # A bare name: Go's x509 matches it against DNS names or IP addresses.
                out.extend([("DNS", san), ("IP_ADDRESS", san)])
                continue
            kind, value = san.get("type"), san.get("value")
            if kind not in _SAN_TYPES:
                self.fail(f"{path}.type", f"type {kind!r} is not one of {', '.join(_SAN_TYPES)}")
            if not isinstance(value, str) or not value:
                self.fail(f"{path}.value", "value is required")
            out.append((_SAN_TYPES[str(kind)], str(value)))
        return tuple(dict.fromkeys(out))

    def _timeouts(self) -> dict[str, float]:
        raw = self.entry.obj.spec.forwarding_timeouts
        defaults = {
            "dial_timeout": 30.0,
            "response_header_timeout": 0.0,
            "idle_conn_timeout": 90.0,
            "read_idle_timeout": 0.0,
            "ping_timeout": 15.0,
        }
        if raw is None:
            values = dict(defaults)
        else:
            values = {}
            for key, default in defaults.items():
                value = getattr(raw, key)
                camel = _camel(key)
                path = f"spec.forwardingTimeouts.{camel}"
                try:
                    values[key] = default if value is None else parse_duration(value, path)
                except MiddlewareError as exc:
                    self.fail(path, exc.message)
        if values["dial_timeout"] == 0:
            self.warn(
                "spec.forwardingTimeouts.dialTimeout",
                "dialTimeout 0 (no limit in Go) has no Envoy equivalent; 30 s is used",
                "Approximated",
            )
            values["dial_timeout"] = 30.0
        if values.pop("response_header_timeout"):
            self.warn(
                "spec.forwardingTimeouts.responseHeaderTimeout",
                "responseHeaderTimeout is not translated yet; responses are not timed out",
            )
        return values

    def _root_cas(self) -> str:
        spec = self.entry.obj.spec
        bundles: list[str] = []
        for i, secret in enumerate(spec.root_cas_secrets or ()):
            path = f"spec.rootCAsSecrets[{i}]"
            bundles.append(self._ca_from("Secret", secret, path))
        for i, ca in enumerate(spec.root_cas or ()):
            path = f"spec.rootCAs[{i}]"
            if ca.secret and ca.config_map:
                self.fail(path, "rootCAs entry names both a Secret and a ConfigMap; name one")
            if ca.secret:
                bundles.append(self._ca_from("Secret", ca.secret, f"{path}.secret"))
            elif ca.config_map:
                bundles.append(self._ca_from("ConfigMap", ca.config_map, f"{path}.configMap"))
            else:
                self.fail(path, "rootCAs entry names neither a Secret nor a ConfigMap")
        return "".join(b if b.endswith("\n") else b + "\n" for b in bundles)

    def _data(self, kind: str, name: str, path: str) -> dict[str, str]:
        if kind == "Secret":
            entry = self.world.secrets.get((self.ns, name))
            if entry is None:
                self.fail(path, f"Secret {self.ns}/{name} not found", "SecretNotFound")
            data: dict[str, str] = {}
            for k, v in sorted(entry.obj.data.items()):
                try:
                    data[k] = base64.b64decode(v, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    self.fail(path, f"Secret {self.ns}/{name} key {k} is not valid base64 text")
            data.update(entry.obj.string_data)
            return data
        cm = self.world.configmaps.get((self.ns, name))
        if cm is None:
            self.fail(path, f"ConfigMap {self.ns}/{name} not found", "ConfigMapNotFound")
        return dict(cm.obj.data)

    def _ca_from(self, kind: str, name: str, path: str) -> str:
        data = self._data(kind, name, path)
        order = ("tls.ca", "ca.crt") if kind == "Secret" else ("ca.crt", "tls.ca")
        pem = next((data[k] for k in order if k in data), None)
        if pem is None:
            self.fail(path, f"{kind} {self.ns}/{name} has neither tls.ca nor ca.crt")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            self.fail(path, f"{kind} {self.ns}/{name}: the CA is not PEM X.509 certificates")
        return pem

    def _client_certificate(self) -> ClientCertificate | None:
        names = self.entry.obj.spec.certificates_secrets or []
        if len(names) > 1:
            self.warn(
                "spec.certificatesSecrets",
                "Envoy presents one client certificate per cluster: only the first Secret "
                f"({names[0]}) is used",
                "Approximated",
            )
        if not names:
            return None
        path = "spec.certificatesSecrets[0]"
        data = self._data("Secret", names[0], path)
        cert, key = data.get("tls.crt"), data.get("tls.key")
        if not cert or not key:
            self.fail(path, f"Secret {self.ns}/{names[0]} needs tls.crt and tls.key")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert)
        except (ssl.SSLError, ValueError):
            self.fail(path, f"Secret {self.ns}/{names[0]}: tls.crt is not a PEM certificate")
        match = _KEY_BLOCK.search(key)
        if match is None or not _is_base64(match.group(2)):
            self.fail(path, f"Secret {self.ns}/{names[0]}: tls.key is not a PEM private key")
        return ClientCertificate(
            secret=f"{self.ns}/{names[0]}", certificate_chain=cert, private_key=key
        )


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        return False
    return True


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)
