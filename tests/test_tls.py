"""TLS termination on IngressRoutes through a real Envoy: certificates by SNI, TLS and plaintext
routes apart on one port, TLSOption versions and client certificates, the domain-fronting check,
and bad input.

Certificates come from the ``openssl`` command (the ``cryptography`` package is not a
dependency): a CA signing server certificates for ``a.test`` and ``b.test``, a client CA signing
a client certificate, and a client certificate from an unrelated CA.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend, wait_for
from tests.pki import make_ca, make_leaf
from tests.support import Stack, service_yaml
from translators.options import Options

pytestmark = pytest.mark.envoy

if shutil.which("openssl") is None:  # pragma: no cover
    pytest.skip("the openssl command is needed to make test certificates", allow_module_level=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "clientca")
    make_ca(d, "otherca")
    for host in ("a.test", "b.test", "m.test"):
        make_leaf(d, host, "ca", f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth")
    make_leaf(
        d,
        "client",
        "clientca",
        "subjectAltName=DNS:client.test,DNS:alt.test\nextendedKeyUsage=clientAuth",
        "/C=FR/O=Cheese/CN=client",
    )
    make_leaf(d, "stranger", "otherca", "extendedKeyUsage=clientAuth")
    return d


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _tls_secret(pki: Path, name: str, cert: str, kind: str = "kubernetes.io/tls") -> str:
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: {kind}
data: {{tls.crt: {_b64(pki / f"{cert}.crt")}, tls.key: {_b64(pki / f"{cert}.key")}}}
"""


def _ca_secret(pki: Path, name: str, ca: str) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
data: {{ca.crt: {_b64(pki / f"{ca}.crt")}}}
"""


def _route(name: str, match: str, backend: str, tls: str | None, middlewares: str = "") -> str:
    tls_part = "" if tls is None else f"  tls: {tls}\n"
    mw = f"    middlewares: [{middlewares}]\n" if middlewares else ""
    return f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: {name}, namespace: default}}
spec:
  entryPoints: [web]
  routes:
  - match: {match}
{mw}    services: [{{name: {backend}, port: 80}}]
{tls_part}"""


def _tls_option(name: str, spec: str) -> str:
    return f"""apiVersion: traefik.io/v1alpha1
kind: TLSOption
metadata: {{name: {name}, namespace: default}}
spec: {spec}
"""


def _docs(*docs: str) -> str:
    return "---\n".join(docs)


@dataclass
class Answer:
    status: int
    body: bytes
    peer_cn: str

    @property
    def echo(self) -> dict[str, object]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data

    @property
    def backend(self) -> str:
        return str(self.echo.get("backend", "")) if self.status == 200 else ""

    def header(self, name: str) -> str | None:
        headers = self.echo["headers"]
        assert isinstance(headers, list)
        found = [v for k, v in headers if k.lower() == name.lower()]
        assert len(found) <= 1, found
        return found[0] if found else None


def _https(
    port: int,
    pki: Path,
    sni: str | None,
    host: str,
    *,
    client: str | None = None,
    max_version: ssl.TLSVersion | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "ca.crt")
    ctx.check_hostname = False  # the certificate picked is asserted on instead
    if max_version is not None:
        ctx.maximum_version = max_version
    if client is not None:
        ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as s,
    ):
        cert = s.getpeercert() or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.sock = s
        conn.request("GET", "/", headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return Answer(status=resp.status, body=resp.read(), peer_cn=cn)


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def make(name: str) -> Backend:
        b = Backend(name).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def _serving(stack: Stack, pki: Path, sni: str, host: str, backend: str) -> None:
    def ok() -> bool:
        try:
            return _https(stack.web_port, pki, sni, host).backend == backend
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False

    wait_for(ok, 30, f"{host} served over TLS")


@pytest.mark.parametrize("protocol", ["delta", "sotw"])
def test_sni_certificates_and_tls_routes_apart_from_plaintext(
    pki: Path,
    backends: Callable[[str], Backend],
    make_stack: Callable[..., Stack],
    protocol: str,
) -> None:
    files = {
        "secrets.yaml": _docs(
            _tls_secret(pki, "a-cert", "a.test"), _tls_secret(pki, "b-cert", "b.test")
        ),
        "services.yaml": _docs(
            *(service_yaml(n, [backends(n)]) for n in ("secure-a", "secure-b", "plain"))
        ),
        "routes.yaml": _docs(
            _route("a", "Host(`a.test`)", "secure-a", "{secretName: a-cert}"),
            _route("b", "Host(`b.test`)", "secure-b", "{secretName: b-cert}"),
            # Same host as the TLS route, no tls: plaintext connections only.
            _route("plain", "Host(`a.test`)", "plain", None),
        ),
    }
    stack = make_stack(files, protocol=protocol)  # SDS Secrets over both ADS variants
    _serving(stack, pki, "a.test", "a.test", "secure-a")
    port = stack.web_port
    a = _https(port, pki, "a.test", "a.test")
    assert (a.status, a.backend, a.peer_cn) == (200, "secure-a", "a.test")
    assert a.header("X-Forwarded-Proto") == "https"
    b = _https(port, pki, "b.test", "b.test")
    assert (b.status, b.backend, b.peer_cn) == (200, "secure-b", "b.test")
    # No SNI, or an SNI no certificate names: the first certificate by Secret name.
    assert _https(port, pki, None, "b.test").peer_cn == "a.test"
    assert _https(port, pki, "other.test", "b.test").backend == "secure-b"
    # Plaintext on the same port: only the route without tls.
    stack.wait_serving(lambda: stack.request(host="a.test")[1] == "plain", "plain route")
    status, backend, _ = stack.request(host="b.test")
    assert (status, backend) == (404, "")
    # Private keys never reach /debug.
    dump = json.dumps(stack.controlplane.admin_json("/debug/config"))
    assert "PRIVATE KEY" not in dump
    assert "<redacted>" in dump


def test_tls_options_versions_and_client_certificates(
    pki: Path, backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    files = {
        "secrets.yaml": _docs(
            _tls_secret(pki, "a-cert", "a.test"),
            _tls_secret(pki, "b-cert", "b.test"),
            _tls_secret(pki, "m-cert", "m.test"),
            _ca_secret(pki, "client-ca", "clientca"),
        ),
        "options.yaml": _docs(
            _tls_option("modern", "{minVersion: VersionTLS13}"),
            _tls_option("any", "{clientAuth: {clientAuthType: RequireAnyClientCert}}"),
            _tls_option(
                "mtls",
                "{clientAuth: {secretNames: [client-ca], "
                "clientAuthType: RequireAndVerifyClientCert}}",
            ),
        ),
        "services.yaml": _docs(*(service_yaml(n, [backends(n)]) for n in ("a", "b", "m"))),
        "routes.yaml": _docs(
            _route("a", "Host(`a.test`)", "a", "{secretName: a-cert, options: {name: modern}}"),
            _route("b", "Host(`b.test`)", "b", "{secretName: b-cert}"),
            _route("m", "Host(`m.test`)", "m", "{secretName: m-cert, options: {name: mtls}}"),
            _route("any", "Host(`any.test`)", "b", "{options: {name: any}}"),
        ),
    }
    stack = make_stack(files)
    _serving(stack, pki, "b.test", "b.test", "b")
    port = stack.web_port
    _serving(stack, pki, "a.test", "a.test", "a")
    # minVersion TLS 1.3: a TLS 1.2 client is refused; b.test keeps the default (1.2 allowed).
    with pytest.raises(ssl.SSLError):
        _https(port, pki, "a.test", "a.test", max_version=ssl.TLSVersion.TLSv1_2)
    assert _https(port, pki, "b.test", "b.test", max_version=ssl.TLSVersion.TLSv1_2).backend == "b"
    # RequireAndVerifyClientCert: a certificate from the CA is needed.
    _serving_mtls = _https(port, pki, "m.test", "m.test", client="client")
    assert (_serving_mtls.status, _serving_mtls.backend) == (200, "m")
    for client in (None, "stranger"):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _https(port, pki, "m.test", "m.test", client=client)
    # RequireAnyClientCert is refused (Envoy requests no certificate it cannot verify): the
    # route is not served, not even to a client that sends one.
    assert _https(port, pki, "any.test", "any.test", client="stranger").status == 404
    # Domain fronting: a connection without the client certificate (SNI b.test) cannot reach
    # m.test by its Host header; Traefik answers 421 too.
    fronted = _https(port, pki, "b.test", "m.test")
    assert fronted.status == 421, fronted
    assert _https(port, pki, "m.test", "b.test", client="client").status == 421
    assert _https(port, pki, None, "m.test").status == 421


def test_bad_tls_input_is_reported_and_not_served(
    pki: Path, tmp_path: Path, backends: Callable[[str], Backend], make_stack: Callable[..., Stack]
) -> None:
    bad_pem = """apiVersion: v1
kind: Secret
metadata: {name: bad-pem, namespace: default}
type: kubernetes.io/tls
stringData: {tls.crt: "not a certificate", tls.key: "not a key"}
"""
    files = {
        "secrets.yaml": _docs(
            _tls_secret(pki, "a-cert", "a.test"),
            bad_pem,
            _ca_secret(pki, "only-ca", "clientca"),
        ),
        "options.yaml": _docs(
            _tls_option("badauth", "{clientAuth: {clientAuthType: Sometimes}}"),
            _tls_option("noca", "{clientAuth: {clientAuthType: RequireAndVerifyClientCert}}"),
            _tls_option("badversion", "{minVersion: TLS13}"),
        ),
        "services.yaml": service_yaml("app", [backends("app")]),
        "routes.yaml": _docs(
            _route("good", "Host(`a.test`)", "app", "{secretName: a-cert}"),
            _route("missing", "Host(`missing.test`)", "app", "{secretName: nope}"),
            _route("notls", "Host(`notls.test`)", "app", "{secretName: only-ca}"),
            _route("badpem", "Host(`badpem.test`)", "app", "{secretName: bad-pem}"),
            _route(
                "unknown",
                "Host(`unknown.test`)",
                "app",
                "{secretName: a-cert, options: {name: nope}}",
            ),
            _route(
                "badauth",
                "Host(`badauth.test`)",
                "app",
                "{secretName: a-cert, options: {name: badauth}}",
            ),
            _route(
                "noca", "Host(`noca.test`)", "app", "{secretName: a-cert, options: {name: noca}}"
            ),
            _route(
                "badversion",
                "Host(`badversion.test`)",
                "app",
                "{secretName: a-cert, options: {name: badversion}}",
            ),
        ),
    }
    config = tmp_path / "bad-config"
    config.mkdir()
    for name, text in files.items():
        (config / name).write_text(text)
    _, diags = translate_directory(config, Options())
    found = {(d.source.kind, d.source.name, d.field, d.reason) for d in diags}
    expected = {
        ("IngressRoute", "missing", "spec.tls.secretName", "SecretNotFound"),
        ("IngressRoute", "notls", "spec.tls.secretName", "InvalidTLS"),
        ("IngressRoute", "badpem", "spec.tls.secretName", "InvalidTLS"),
        ("IngressRoute", "unknown", "spec.tls.options.name", "TLSOptionNotFound"),
        ("TLSOption", "badauth", "spec.clientAuth.clientAuthType", "InvalidTLSOption"),
        ("TLSOption", "noca", "spec.clientAuth.clientAuthType", "InvalidTLSOption"),
        ("TLSOption", "badversion", "spec.minVersion", "InvalidTLSOption"),
    }
    assert expected <= found, sorted(found)
    messages = {d.source.name: d.message for d in diags}
    assert "Secret default/nope not found" in messages["missing"]
    assert "IngressRoute default/badauth" in messages["badauth"]

    stack = make_stack(files)
    _serving(stack, pki, "a.test", "a.test", "app")
    for host in (
        "missing.test",
        "notls.test",
        "badpem.test",
        "unknown.test",
        "badauth.test",
        "noca.test",
        "badversion.test",
    ):
        assert _https(stack.web_port, pki, host, host).status == 404, host
        assert stack.request(host=host)[0] == 404, host
