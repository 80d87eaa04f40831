"""passTLSClientCert: the client certificate, or fields of it, in request headers, as Traefik.

Traefik (pkg/middlewares/passtlsclientcert) writes, for the chain the client sent (leaf first):

- ``pem: true`` → ``X-Forwarded-Tls-Client-Cert``: each certificate's PEM without its BEGIN/END
  lines and newlines (the base64 of the DER), joined with ``,``; not URL-escaped (Traefik
  dropped the escaping in v2.10).
- ``info`` → ``X-Forwarded-Tls-Client-Cert-Info``: per certificate ``Subject="…"``,
  ``Issuer="…"``, ``SerialNumber="…"`` (decimal), ``NB="…"``/``NA="…"`` (Unix seconds),
  ``SAN="…"`` (DNS names, e-mails, IPs, URIs), the selected ones joined with ``;``; certificates
  joined with ``,``; the whole ``url.QueryEscape``d. A DN lists the selected attributes in
  Traefik's order, whatever their order in the certificate: every DC, then C, ST, L, O, OU
  (every value), SN and CN (the last value).

Envoy's Lua filter does it (``pass_tls_client_cert`` filter kind, translators/envoy/
filter_pass_tls.py): it reads the chain Envoy got, and parses each certificate's DER itself, so
the fields are Go's, not Envoy's RFC 2253 strings. Without a client certificate no header is
set. The client's own copies of both headers are removed first, as Traefik's forwarded-headers
handling does at the entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from translators.middlewares.base import Context, MiddlewareError, Plan

KIND = "pass_tls_client_cert"
CERT_HEADER = "x-forwarded-tls-client-cert"
INFO_HEADER = "x-forwarded-tls-client-cert-info"
# Attribute keys in the order Traefik writes them (getSubjectDNInfo / getIssuerDNInfo).
SUBJECT_FIELDS = (
    ("domainComponent", "DC"),
    ("country", "C"),
    ("province", "ST"),
    ("locality", "L"),
    ("organization", "O"),
    ("organizationalUnit", "OU"),
    ("serialNumber", "SN"),
    ("commonName", "CN"),
)
# Traefik's issuer options have no organizationalUnit.
ISSUER_FIELDS = tuple(f for f in SUBJECT_FIELDS if f[0] != "organizationalUnit")
INFO_FLAGS = (("notAfter", "na"), ("notBefore", "nb"), ("sans", "sans"), ("serialNumber", "serial"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PassTLSConfig:
    """What the route's Lua filter writes. ``info`` False: no Info header at all (Traefik's
    ``info`` absent); True with nothing selected still writes one, empty per certificate."""

    pem: bool = False
    info: bool = False
    subject: tuple[str, ...] = ()
    issuer: tuple[str, ...] = ()
    serial: bool = False
    not_before: bool = False
    not_after: bool = False
    sans: bool = False


def _flag(spec: Mapping[str, Any], key: str, field: str) -> bool:
    value = spec.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be true or false, not {value!r}")
    return value


def _object(spec: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise MiddlewareError(f"{field}.{key}", f"{key} must be an object")
    return value


def _unknown(
    spec: Mapping[str, Any], known: frozenset[str], field: str, ctx: Context, why: str = ""
) -> None:
    for key in sorted(set(spec) - known, key=str):
        ctx.warn(
            f"{field}.{key}",
            f"Traefik has no field {key!r} here{why}; it is ignored",
            reason="Ignored",
        )


def _dn(
    spec: Mapping[str, Any],
    key: str,
    fields: tuple[tuple[str, str], ...],
    field: str,
    ctx: Context,
) -> tuple[str, ...]:
    dn = _object(spec, key, field)
    if dn is None:
        return ()
    path = f"{field}.{key}"
    why = " (Traefik's issuer has no organizationalUnit)" if key == "issuer" else ""
    _unknown(dn, frozenset(name for name, _ in fields), path, ctx, why)
    return tuple(short for name, short in fields if _flag(dn, name, path))


def parse_pass_tls(spec: Mapping[str, Any], ctx: Context, field: str) -> PassTLSConfig:
    _unknown(spec, frozenset({"pem", "info"}), field, ctx)
    pem = _flag(spec, "pem", field)
    info = _object(spec, "info", field)
    if info is None:
        return PassTLSConfig(pem=pem)
    path = f"{field}.info"
    _unknown(info, frozenset({"subject", "issuer", *(k for k, _ in INFO_FLAGS)}), path, ctx)
    flags = {attr: _flag(info, key, path) for key, attr in INFO_FLAGS}
    return PassTLSConfig(
        pem=pem,
        info=True,
        subject=_dn(info, "subject", SUBJECT_FIELDS, path, ctx),
        issuer=_dn(info, "issuer", ISSUER_FIELDS, path, ctx),
        serial=flags["serial"],
        not_before=flags["nb"],
        not_after=flags["na"],
        sans=flags["sans"],
    )


def pass_tls_client_cert(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    config = parse_pass_tls(spec, ctx, field)
    written = {name for name, on in ((CERT_HEADER, config.pem), (INFO_HEADER, config.info)) if on}
    for plan in plans:
        earlier = {n.lower() for n, _ in plan.request_set} | {
            n.lower() for n in plan.request_remove
        }
        for name in sorted(written & earlier):
            # Route header options apply after every filter: the earlier headers middleware
            # wins here, where Traefik's passTLSClientCert, running later, would.
            ctx.warn(
                field,
                f"an earlier middleware sets or removes {name}; Envoy applies that after "
                "passTLSClientCert, so it wins (in Traefik this middleware, listed later, would)",
            )
        if written & earlier:
            break
    return [plan.add_filter(KIND, config) for plan in plans]
