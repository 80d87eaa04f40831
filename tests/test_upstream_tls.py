"""ServersTransport and the service ``scheme`` end to end: real TLS backends behind a real Envoy.

Certificates come from the ``openssl`` command (the ``cryptography`` package is not a dependency):
a CA, a server certificate for ``backend.test`` and 127.0.0.1, a client certificate, and an
unrelated CA. Backends are Python ``http.server``s wrapped in ``ssl``, with and without requiring
a client certificate. The h2c backend is a second Envoy with a static HTTP/2-only listener.
"""

from __future__ import annotations

import base64
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend, Process, find_envoy, free_port, wait_for
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
    make_ca(d, "otherca")
    make_leaf(
        d,
        "server",
        "ca",
        "subjectAltName=DNS:backend.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    return d


def _tls_backend(pki: Path, name: str, *, require_client_cert: bool) -> Backend:
    b = Backend(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki / "ca.crt")
    b.server.socket = ctx.wrap_socket(b.server.socket, server_side=True)
    return b.start()


@pytest.fixture
def tls_backends(pki: Path) -> Iterator[Callable[[str, bool], Backend]]:
    started: list[Backend] = []

    def make(name: str, require_client_cert: bool = False) -> Backend:
        b = _tls_backend(pki, name, require_client_cert=require_client_cert)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _secrets(pki: Path) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: ca, namespace: default}}
data: {{ca.crt: {_b64(pki / "ca.crt")}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: otherca, namespace: default}}
data: {{tls.ca: {_b64(pki / "otherca.crt")}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: client, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {_b64(pki / "client.crt")}, tls.key: {_b64(pki / "client.key")}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca-configmap, namespace: default}}
data:
  ca.crt: |
{_indent((pki / "ca.crt").read_text(), 4)}
"""


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def _transport(name: str, spec: str, group: str = "traefik.io") -> str:
    return f"""apiVersion: {group}/v1alpha1
kind: ServersTransport
metadata: {{name: {name}, namespace: default}}
spec:
{_indent(spec, 2)}
"""


def _route(host: str, service: str, extra: str = "", port: int = 443) -> str:
    name = host.replace(".", "-")
    return f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: {name}, namespace: default}}
spec:
  routes:
  - match: Host(`{host}`)
    services: [{{name: {service}, port: {port}{extra}}}]
"""


def _docs(*docs: str) -> str:
    return "---\n".join(docs)


def test_https_servers_transport(
    pki: Path,
    tls_backends: Callable[..., Backend],
    make_stack: Callable[..., Stack],
) -> None:
    plain = tls_backends("tls")
    mtls = tls_backends("mtls", True)
    files = {
        "secrets.yaml": _secrets(pki),
        # Port 443 named https: the scheme defaults to https (as in Traefik).
        "services.yaml": _docs(
            service_yaml("tls", [plain], port=443, port_name="https"),
            service_yaml("mtls", [mtls], port=443, port_name="https"),
        ),
        "transports.yaml": _docs(
            _transport("good", "serverName: backend.test\nrootCAs: [{secret: ca}]"),
            _transport(
                "good-cm",
                "serverName: backend.test\nrootCAs: [{configMap: ca-configmap}]",
                group="traefik.containo.us",
            ),
            _transport("wrong-ca", "serverName: backend.test\nrootCAs: [{secret: otherca}]"),
            _transport("wrong-name", "serverName: other.test\nrootCAs: [{secret: ca}]"),
            _transport("skip", "insecureSkipVerify: true"),
            _transport(
                "client",
                "serverName: backend.test\nrootCAs: [{secret: ca}]\n"
                "certificatesSecrets: [client]\n"
                "forwardingTimeouts: {dialTimeout: 5s, idleConnTimeout: 30s}",
            ),
        ),
        "routes.yaml": _docs(
            _route("good.test", "tls", ", serversTransport: good"),
            _route("good-cm.test", "tls", ", serversTransport: good-cm"),
            _route("explicit.test", "tls", ", scheme: https, serversTransport: good"),
            _route("wrong-ca.test", "tls", ", serversTransport: wrong-ca"),
            _route("wrong-name.test", "tls", ", serversTransport: wrong-name"),
            _route("skip.test", "tls", ", serversTransport: skip"),
            _route("mtls.test", "mtls", ", serversTransport: client"),
            _route("no-client-cert.test", "mtls", ", serversTransport: good"),
        ),
    }
    stack = make_stack(files)
    stack.wait_serving(lambda: stack.request(host="good.test")[0] == 200, "https route served")
    for host, backend in [
        ("good.test", "tls"),
        ("good-cm.test", "tls"),
        ("explicit.test", "tls"),
        ("skip.test", "tls"),
        ("mtls.test", "mtls"),
    ]:
        stack.wait_serving(
            lambda h=host: stack.request(host=h)[0] == 200,
            f"{host} served",  # type: ignore[misc]
        )
        status, got, echo = stack.request(host=host)
        assert (status, got) == (200, backend), (host, status, echo)
    for host in ["wrong-ca.test", "wrong-name.test", "no-client-cert.test"]:
        status, _, _ = stack.request(host=host)
        assert status in (502, 503), (host, status)
    # Each (Service port, scheme, transport) is its own cluster.
    clusters = {
        c["cluster"]["name"]
        for c in stack.envoy.config_dump()["configs"][1]["dynamic_active_clusters"]
    }
    assert {
        "default/tls/443/https/transport/good",
        "default/tls/443/https/transport/skip",
        "default/mtls/443/https/transport/client",
    } <= clusters, clusters


def test_https_without_root_cas_rejects_an_untrusted_certificate(
    tls_backends: Callable[..., Backend], make_stack: Callable[..., Stack]
) -> None:
    plain = tls_backends("tls")
    stack = make_stack(
        {
            "services.yaml": service_yaml("tls", [plain], port=443, port_name="https"),
            "routes.yaml": _route("default.test", "tls"),
        }
    )
    wait_for(lambda: stack.request(host="default.test")[0] != 404, 15, "route served")
    assert stack.request(host="default.test")[0] in (502, 503)


def test_bad_servers_transport_references(
    pki: Path,
    tmp_path: Path,
    tls_backends: Callable[..., Backend],
    make_stack: Callable[..., Stack],
) -> None:
    plain = tls_backends("tls")
    files = {
        "secrets.yaml": _secrets(pki),
        "services.yaml": service_yaml("tls", [plain], port=443, port_name="https"),
        "transports.yaml": _docs(
            _transport("good", "serverName: backend.test\nrootCAs: [{secret: ca}]"),
            _transport("no-ca", "rootCAs: [{secret: missing-ca}]"),
            _transport("no-cert", "rootCAs: [{secret: ca}]\ncertificatesSecrets: [missing-cert]"),
            _transport("bad-pem", "rootCAs: [{secret: client}]"),
            _transport("spiffe", "spiffe: {ids: [spiffe://x/y]}"),
        ),
        "routes.yaml": _docs(
            _route("good.test", "tls", ", serversTransport: good"),
            _route("missing.test", "tls", ", serversTransport: nope"),
            _route("provider.test", "tls", ", serversTransport: good@file"),
            _route("no-ca.test", "tls", ", serversTransport: no-ca"),
            _route("no-cert.test", "tls", ", serversTransport: no-cert"),
            _route("bad-pem.test", "tls", ", serversTransport: bad-pem"),
            _route("spiffe.test", "tls", ", serversTransport: spiffe"),
            _route("scheme.test", "tls", ", scheme: ftp"),
        ),
    }
    _, diags = translate_directory(_write(files, tmp_path / "bad-config"), Options())
    errors = {(d.source.kind, d.source.name, d.field, d.reason) for d in diags}
    assert (
        "IngressRoute",
        "missing-test",
        "spec.routes[0].services[0].serversTransport",
        "ServersTransportNotFound",
    ) in errors, errors
    assert (
        "IngressRoute",
        "provider-test",
        "spec.routes[0].services[0].serversTransport",
        "Unsupported",
    ) in errors, errors
    assert ("ServersTransport", "no-ca", "spec.rootCAs[0].secret", "SecretNotFound") in errors
    assert (
        "ServersTransport",
        "no-cert",
        "spec.certificatesSecrets[0]",
        "SecretNotFound",
    ) in errors
    # The client Secret has tls.crt/tls.key, no CA key.
    assert (
        "ServersTransport",
        "bad-pem",
        "spec.rootCAs[0].secret",
        "InvalidServersTransport",
    ) in errors
    assert ("ServersTransport", "spiffe", "spec.spiffe", "Unsupported") in errors
    assert (
        "IngressRoute",
        "scheme-test",
        "spec.routes[0].services[0].scheme",
        "InvalidScheme",
    ) in errors, errors
    by_name = {d.source.name: d.message for d in diags}
    assert "default/missing-ca" in by_name["no-ca"]
    assert "IngressRoute default/no-ca-test" in by_name["no-ca"]

    stack = make_stack(files)
    stack.wait_serving(lambda: stack.request(host="good.test")[0] == 200, "good route served")
    for host in [
        "missing.test",
        "provider.test",
        "no-ca.test",
        "no-cert.test",
        "bad-pem.test",
        "spiffe.test",
        "scheme.test",
    ]:
        assert stack.request(host=host)[0] == 404, host


def _write(files: dict[str, str], d: Path) -> Path:
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


_H2C_BACKEND = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: h2c
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: h2c
          codec_type: HTTP2
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: '{{"backend": "h2c"}}'}}}}
                response_headers_to_add:
                - header: {{key: content-type, value: application/json}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


@pytest.fixture
def h2c_backend(tmp_path: Path) -> Iterator[Backend]:
    """An HTTP/2-only (prior knowledge, cleartext) backend: a second Envoy."""
    port, admin = free_port(), free_port()
    config = tmp_path / "h2c-backend.yaml"
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    config.write_text(
        _H2C_BACKEND.format(port=port, admin=admin, hcm=hcm + "HttpConnectionManager")
    )
    args = [find_envoy(), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
            "--log-level", "warn", "--base-id", "7"]  # fmt: skip
    proc = Process(args, tmp_path / "h2c-backend.log")

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"h2c backend exited:\n{proc.log()}")
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        wait_for(up, 20, "h2c backend listening")
        # Only host and port are read from a Backend by service_yaml.
        b = Backend.__new__(Backend)
        b.name, b.host, b.port = "h2c", "127.0.0.1", port
        yield b
    finally:
        proc.stop()


def test_h2c_scheme(h2c_backend: Backend, make_stack: Callable[..., Stack]) -> None:
    files = {
        "services.yaml": service_yaml("grpcish", [h2c_backend]),
        "transports.yaml": _transport("keepalive", "forwardingTimeouts: {readIdleTimeout: 10s}"),
        "routes.yaml": _docs(
            _route("h2c.test", "grpcish", ", scheme: h2c", port=80),
            _route("h2c-ka.test", "grpcish", ", scheme: h2c, serversTransport: keepalive", 80),
            _route("http.test", "grpcish", port=80),
        ),
    }
    stack = make_stack(files)
    stack.wait_serving(lambda: stack.request(host="h2c.test")[0] == 200, "h2c route served")
    assert stack.request(host="h2c.test")[:2] == (200, "h2c")
    stack.wait_serving(lambda: stack.request(host="h2c-ka.test")[0] == 200, "h2c-ka served")
    # HTTP/1.1 to an HTTP/2-only backend fails: the h2c result is not an accident.
    assert stack.request(host="http.test")[0] in (502, 503)
    dump = stack.envoy.config_dump()["configs"][1]["dynamic_active_clusters"]
    ka = next(
        c["cluster"]
        for c in dump
        if c["cluster"]["name"] == "default/grpcish/80/h2c/transport/keepalive"
    )
    opts = ka["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    keepalive = opts["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "10s", "timeout": "15s"}, keepalive
