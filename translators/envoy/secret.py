"""Secret (SDS) for each served certificate, and the DownstreamTlsContext of a TLS chain.

Certificates travel as SDS ``Secret`` resources over ADS rather than inline in the Listener: a
certificate renewal is then one small Secret update (the listener is not drained and rebuilt),
and the private key is in exactly one resource. Envoy holds a listener that names a Secret it has
not received yet in warming, so the Listener never serves TLS without its certificate.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_v3
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2 as secret_v3
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as tls_v3
from google.protobuf import wrappers_pb2

from translators.envoy.common import ads_source
from translators.ir import ServerCertificate, TLSChain, TLSOptions


def build_secret(cert: ServerCertificate) -> secret_v3.Secret:
    return secret_v3.Secret(
        name=cert.name,
        tls_certificate=tls_common_v3.TlsCertificate(
            certificate_chain=base_v3.DataSource(inline_string=cert.certificate_chain),
            private_key=base_v3.DataSource(inline_string=cert.private_key),
        ),
    )


def _params(options: TLSOptions) -> tls_common_v3.TlsParameters:
    params = tls_common_v3.TlsParameters()
    if options.min_version:
        params.tls_minimum_protocol_version = tls_common_v3.TlsParameters.TlsProtocol.Value(
            options.min_version
        )
    if options.max_version:
        params.tls_maximum_protocol_version = tls_common_v3.TlsParameters.TlsProtocol.Value(
            options.max_version
        )
    params.cipher_suites.extend(options.cipher_suites)
    params.ecdh_curves.extend(options.curves)
    return params


def build_tls_context(chain: TLSChain) -> tls_v3.DownstreamTlsContext:
    """Go's ClientAuthType on Envoy: a validation context with the CAs makes Envoy ask for a
    certificate and verify it; ``require_client_certificate`` refuses a handshake without one.
    (Envoy asks for no certificate it cannot verify: the front end refuses RequireAnyClientCert
    and maps RequestClientCert to NoClientCert, with diagnostics.)"""
    options = chain.options
    common = tls_v3.CommonTlsContext(
        tls_params=_params(options),
        tls_certificate_sds_secret_configs=[
            secret_v3.SdsSecretConfig(name=name, sds_config=ads_source())
            for name in chain.certificates
        ],
        alpn_protocols=list(options.alpn),
    )
    auth = options.client_auth
    if options.client_ca and auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        common.validation_context.CopyFrom(
            tls_common_v3.CertificateValidationContext(
                trusted_ca=base_v3.DataSource(inline_string=options.client_ca)
            )
        )
    out = tls_v3.DownstreamTlsContext(common_tls_context=common)
    if auth == "RequireAndVerifyClientCert":
        out.require_client_certificate.CopyFrom(wrappers_pb2.BoolValue(value=True))
    return out


def redact(data: Any) -> Any:
    """A protojson dict with every private key replaced (``/debug``, ``switchman translate``)."""
    if isinstance(data, dict):
        return {
            k: {"inline_string": "<redacted>"} if k == "private_key" else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
