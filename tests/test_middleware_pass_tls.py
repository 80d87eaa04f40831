"""passTLSClientCert through a real Envoy with client certificates (mTLS).

The client sends a chain (its certificate and the intermediate CA that signed it); the echo
backend shows what arrived. The expected header values are computed here from the certificate
files the way Traefik's Go code builds them (pkg/middlewares/passtlsclientcert): the PEM body
without BEGIN/END lines and newlines, certificates joined with ``,``; the Info fields in
Traefik's order and format, ``url.QueryEscape``d. The certificate fields are read with the
standard library's own decoder (``ssl._ssl._test_decode_cert``, OpenSSL underneath), not with
the Lua script's DER parser under test.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend, wait_for
from tests.pki import openssl
from tests.support import Stack, service_yaml
from tests.test_tls import _b64, _docs, _tls_option
from translators.options import Options

pytestmark = pytest.mark.envoy

if shutil.which("openssl") is None:  # pragma: no cover
    pytest.skip("the openssl command is needed to make test certificates", allow_module_level=True)

HOST = "pass.test"
CERT = "X-Forwarded-Tls-Client-Cert"
INFO = "X-Forwarded-Tls-Client-Cert-Info"
LEAF_SUBJECT = (
    '/DC=org/DC=example/C=FR/C=US/ST=Provence/L=Nice/O=Fromage, & Co/O=Say "cheese"'
    "/OU=Dev+OU=Ops/serialNumber=42/CN=clïent"
)
LEAF_SANS = (
    "subjectAltName=DNS:client.test,DNS:alt.test,email:me@example.org,IP:127.0.0.1,"
    "IP:2001:db8::1,URI:spiffe://example.org/client"
)
LEAF_SERIAL = "0x1234567890ABCDEF1234567890"  # wider than 64 bits


def _key(d: Path, name: str) -> None:
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-out", f"{name}.key", cwd=d,
    )  # fmt: skip


def _sign(
    d: Path, name: str, subj: str, ca: str | None, ext: str, serial: str = "", days: str = "2"
) -> None:
    _key(d, name)
    (d / f"{name}.ext").write_text(ext + "\n")
    openssl(
        "req", "-new", "-utf8", "-multivalue-rdn", "-key", f"{name}.key", "-out", f"{name}.csr",
        "-subj", subj, cwd=d,
    )  # fmt: skip
    signer = (
        ["-signkey", f"{name}.key"] if ca is None else ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key"]
    )
    serial_args = ["-set_serial", serial] if serial else (["-CAcreateserial"] if ca else [])
    openssl(
        "x509", "-req", "-in", f"{name}.csr", *signer, *serial_args, "-out", f"{name}.crt",
        "-days", days, "-extfile", f"{name}.ext", cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign"
    # The server side: its own CA, as in tests/test_tls.py (``_https`` trusts ca.crt).
    _sign(d, "ca", "/CN=ca", None, ca_ext)
    _sign(d, HOST, f"/CN={HOST}", "ca", f"subjectAltName=DNS:{HOST}\nextendedKeyUsage=serverAuth")
    # The client side: root → intermediate → client; the client sends client + intermediate.
    _sign(
        d,
        "root",
        "/DC=org/DC=example/C=FR/ST=Provence/L=Nice/O=Cheese Corp/serialNumber=7/CN=Root CA",
        None,
        ca_ext,
    )
    _sign(d, "inter", "/C=FR/O=Cheese Corp/OU=PKI/CN=Intermediate", "root", ca_ext)
    _sign(
        d,
        "client",
        LEAF_SUBJECT,
        "inter",
        LEAF_SANS + "\nextendedKeyUsage=clientAuth",
        serial=LEAF_SERIAL,
    )
    (d / "chain.crt").write_text((d / "client.crt").read_text() + (d / "inter.crt").read_text())
    (d / "chain.key").write_text((d / "client.key").read_text())
    return d


# --- what Traefik sends, from the certificate files ------------------------------------------

_DN_ORDER = (
    ("domainComponent", "DC"),
    ("countryName", "C"),
    ("stateOrProvinceName", "ST"),
    ("localityName", "L"),
    ("organizationName", "O"),
    ("organizationalUnitName", "OU"),
    ("serialNumber", "SN"),
    ("commonName", "CN"),
)


def _decode(path: Path) -> dict[str, Any]:
    decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    assert isinstance(decoded, dict)
    return decoded


def _pem_bodies(path: Path) -> list[str]:
    """Traefik's sanitize(): each PEM block without BEGIN/END lines and newlines."""
    text = path.read_text()
    blocks = text.split("-----END CERTIFICATE-----")[:-1]
    return [b.split("-----BEGIN CERTIFICATE-----")[1].replace("\n", "") for b in blocks]


def _dn(name: tuple[tuple[tuple[str, str], ...], ...], selected: set[str]) -> str:
    """getSubjectDNInfo: DCs, then every C, ST, L, O, OU value, the last SN and CN."""
    flat = [(k, v) for rdn in name for k, v in rdn]
    parts = []
    for key, short in _DN_ORDER:
        if short not in selected:
            continue
        values = [v for k, v in flat if k == key]
        if short in ("SN", "CN"):
            values = values[-1:]
        parts += [f"{short}={v}" for v in values if v or short == "DC"]
    return ",".join(parts)


def _sans(decoded: dict[str, Any]) -> list[str]:
    """getSANs: DNS names, e-mail addresses, IP addresses (Go's form), URIs."""
    alt = decoded.get("subjectAltName", ())
    kinds = {"DNS": [], "email": [], "IP Address": [], "URI": []}  # type: dict[str, list[str]]
    for kind, value in alt:
        if kind in kinds:
            kinds[kind].append(value)
    ips = [str(ipaddress.ip_address(v.strip())) for v in kinds["IP Address"]]
    return kinds["DNS"] + kinds["email"] + ips + kinds["URI"]


def _decode_body(body: str) -> dict[str, Any]:
    """One certificate (a sanitized PEM body) decoded by the standard library."""
    lines = [body[j : j + 64] for j in range(0, len(body), 64)]
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cert.pem"
        path.write_text(pem)
        return _decode(path)


def _info(path: Path, subject: set[str], issuer: set[str], everything: bool = True) -> str:
    """getCertInfo, then url.QueryEscape (Python's quote_plus escapes the same characters)."""
    entries = []
    for body in _pem_bodies(path):
        cert = _decode_body(body)
        values = []
        if s := _dn(cert["subject"], subject):
            values.append(f'Subject="{s}"')
        if s := _dn(cert["issuer"], issuer):
            values.append(f'Issuer="{s}"')
        if everything:
            values.append(f'SerialNumber="{int(cert["serialNumber"], 16)}"')
            values.append(f'NB="{ssl.cert_time_to_seconds(cert["notBefore"])}"')
            values.append(f'NA="{ssl.cert_time_to_seconds(cert["notAfter"])}"')
            if sans := _sans(cert):
                values.append(f'SAN="{",".join(sans)}"')
        entries.append(";".join(values))
    return quote_plus(",".join(entries))


# --- the stack --------------------------------------------------------------------------------

ALL_SUBJECT = {"DC", "C", "ST", "L", "O", "OU", "SN", "CN"}
ALL_ISSUER = ALL_SUBJECT - {"OU"}


def _files(pki: Path, backend: Backend) -> dict[str, str]:
    every = ", ".join(
        f"{k}: true"
        for k in (
            "country",
            "province",
            "locality",
            "organization",
            "commonName",
            "serialNumber",
            "domainComponent",
        )
    )
    middlewares = _docs(
        f"""apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {{name: everything, namespace: default}}
spec:
  passTLSClientCert:
    pem: true
    info:
      notAfter: true
      notBefore: true
      sans: true
      serialNumber: true
      subject: {{{every}, organizationalUnit: true}}
      issuer: {{{every}}}
""",
        """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: some, namespace: default}
spec:
  passTLSClientCert:
    info: {subject: {commonName: true, organization: true}, issuer: {country: true}}
""",
    )
    routes = f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: pass, namespace: default}}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`{HOST}`) && PathPrefix(`/everything`)
    middlewares: [{{name: everything}}]
    services: [{{name: app, port: 80}}]
  - match: Host(`{HOST}`) && PathPrefix(`/some`)
    middlewares: [{{name: some}}]
    services: [{{name: app, port: 80}}]
  - match: Host(`{HOST}`) && PathPrefix(`/none`)
    services: [{{name: app, port: 80}}]
  tls:
    secretName: server-cert
    options: {{name: mtls}}
"""
    return {
        "secrets.yaml": _docs(
            f"""apiVersion: v1
kind: Secret
metadata: {{name: server-cert, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {_b64(pki / f"{HOST}.crt")}, tls.key: {_b64(pki / f"{HOST}.key")}}}
""",
            f"""apiVersion: v1
kind: Secret
metadata: {{name: client-root, namespace: default}}
data: {{ca.crt: {_b64(pki / "root.crt")}}}
""",
        ),
        # VerifyClientCertIfGiven: a client without a certificate is served too.
        "options.yaml": _tls_option(
            "mtls",
            "{clientAuth: {secretNames: [client-root], clientAuthType: VerifyClientCertIfGiven}}",
        ),
        "services.yaml": service_yaml("app", [backend]),
        "middlewares.yaml": middlewares,
        "routes.yaml": routes,
    }


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend("app").start()
    yield b
    b.stop()


def _get(
    stack: Stack, pki: Path, path: str, client: str | None, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """GET over TLS (SNI pass.test), optionally with a client chain; the headers the backend
    saw, by lower-case name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "ca.crt")
    ctx.check_hostname = False
    if client is not None:
        ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    with (
        socket.create_connection(("127.0.0.1", stack.web_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as s,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
        conn.sock = s
        conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        seen: dict[str, str] = {}
        for name, value in json.loads(body)["headers"]:
            assert name.lower() not in seen, f"{name} twice"
            seen[name.lower()] = value
        return seen


def test_headers_as_traefik_sends_them(
    pki: Path, backend: Backend, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(_files(pki, backend))

    def serving() -> bool:
        try:
            _get(stack, pki, "/none", None)
            return True
        except (OSError, ssl.SSLError, http.client.HTTPException, AssertionError):
            return False

    wait_for(serving, 30, "the TLS route served")
    forged = {CERT: "forged", INFO: "forged"}

    seen = _get(stack, pki, "/everything", "chain", forged)
    expected_pem = ",".join(_pem_bodies(pki / "chain.crt"))
    assert seen.get(CERT.lower()) == expected_pem
    assert len(expected_pem.split(",")) == 2  # the client certificate and the intermediate
    expected_info = _info(pki / "chain.crt", ALL_SUBJECT, ALL_ISSUER)
    assert seen.get(INFO.lower()) == expected_info
    # The format, spelled out for the client certificate (the first entry).
    leaf = unquote_plus(expected_info)
    assert leaf.startswith(
        'Subject="DC=org,DC=example,C=FR,C=US,ST=Provence,L=Nice,O=Fromage, & Co,'
        'O=Say "cheese",OU=Dev,OU=Ops,SN=42,CN=clïent";'
        'Issuer="C=FR,O=Cheese Corp,CN=Intermediate";'
        'SerialNumber="1442304682740643783150283421840";NB="'
    )
    assert (
        ';SAN="client.test,alt.test,me@example.org,127.0.0.1,2001:db8::1,'
        'spiffe://example.org/client",Subject="C=FR,O=Cheese Corp,OU=PKI,CN=Intermediate";'
    ) in leaf

    # Only some fields: no pem header, only the selected DN attributes, nothing else.
    some = _get(stack, pki, "/some", "chain")
    assert CERT.lower() not in some
    assert some[INFO.lower()] == _info(pki / "chain.crt", {"O", "CN"}, {"C"}, everything=False)

    # No client certificate: no header, and the client's own copies are gone.
    bare = _get(stack, pki, "/everything", None, forged)
    assert CERT.lower() not in bare and INFO.lower() not in bare
    # A route without the middleware: nothing added, the client's copies removed (Traefik's
    # entry point drops them for every route).
    other = _get(stack, pki, "/none", "chain", forged)
    assert CERT.lower() not in other and INFO.lower() not in other


def test_bad_input_names_object_and_field(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(
        _docs(
            service_yaml("app", []),
            """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: bad-flag, namespace: default}
spec:
  passTLSClientCert: {info: {subject: {commonName: "yes"}}}
""",
            """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: bad-info, namespace: default}
spec:
  passTLSClientCert: {info: true}
""",
            """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: issuer-ou, namespace: default}
spec:
  passTLSClientCert: {info: {issuer: {organizationalUnit: true, commonName: true}}}
""",
            """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: set-cert, namespace: default}
spec:
  headers: {customRequestHeaders: {X-Forwarded-Tls-Client-Cert: mine}}
""",
            """apiVersion: traefik.io/v1alpha1
kind: Middleware
metadata: {name: pem, namespace: default}
spec:
  passTLSClientCert: {pem: true}
""",
            """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: r, namespace: default}
spec:
  entryPoints: [web]
  routes:
  - {match: PathPrefix(`/a`), middlewares: [{name: bad-flag}], services: [{name: app, port: 80}]}
  - {match: PathPrefix(`/b`), middlewares: [{name: bad-info}], services: [{name: app, port: 80}]}
  - {match: PathPrefix(`/c`), middlewares: [{name: issuer-ou}], services: [{name: app, port: 80}]}
  - match: PathPrefix(`/d`)
    middlewares: [{name: set-cert}, {name: pem}]
    services: [{name: app, port: 80}]
""",
        )
    )
    _, diags = translate_directory(config, Options())
    found = {(d.source.kind, d.source.name, d.field, d.reason, d.severity) for d in diags}
    assert {
        (
            "Middleware",
            "bad-flag",
            "spec.passTLSClientCert.info.subject.commonName",
            "InvalidMiddleware",
            "error",
        ),
        ("Middleware", "bad-info", "spec.passTLSClientCert.info", "InvalidMiddleware", "error"),
        (
            "Middleware",
            "issuer-ou",
            "spec.passTLSClientCert.info.issuer.organizationalUnit",
            "Ignored",
            "warning",
        ),
        # headers listed before passTLSClientCert: Envoy applies it last, so it wins.
        ("Middleware", "pem", "spec.passTLSClientCert", "Approximated", "warning"),
    } <= found, sorted(found)
