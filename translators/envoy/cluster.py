"""Cluster (CDS) for one Service port.

Envoy defaults that differ from Traefik's are overridden here:
- ``healthy_panic_threshold`` 0: Envoy would otherwise send traffic to unhealthy/draining hosts
  once half of them are unhealthy; Traefik never does.
- circuit breaker thresholds raised: Envoy caps a cluster at 1,024 connections and requests by
  default; Traefik has no such limit.
- ``connect_timeout`` 30 s: Traefik's default ``dialTimeout``.

A ServersTransport (``cluster.transport``) sets the TLS context of an ``https`` cluster (SNI,
trusted CA or none for ``insecureSkipVerify``, SAN matching, one client certificate, versions,
ciphers; PEM inline — SDS is future work), ``connect_timeout`` (``dialTimeout``), the upstream
idle timeout (``idleConnTimeout``) and, for ``h2c``, HTTP/2 keepalive PINGs (``readIdleTimeout``
interval, ``pingTimeout`` timeout).

A route's own copy of a cluster (``cluster.policy``: circuitBreaker, inFlightReq) adds
failure-percentage outlier detection and/or a ``max_requests`` threshold; the listener answers
for those copies when every host is ejected (UH) or the threshold overflows (UO).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2 as cb_v3
from envoy.config.cluster.v3 import cluster_pb2 as cluster_v3
from envoy.config.cluster.v3 import outlier_detection_pb2 as outlier_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.core.v3 import protocol_pb2 as protocol_v3
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_v3
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as tls_v3
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_v3
from envoy.type.matcher.v3 import string_pb2 as string_matcher_v3
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from translators.envoy.common import ads_source, duration, pack
from translators.ir import Cluster, OutlierDetection, UpstreamTransport

_UNLIMITED = 1_000_000_000
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def build_cluster(cluster: Cluster) -> cluster_v3.Cluster:
    out = cluster_v3.Cluster(
        name=cluster.name,
        type=cluster_v3.Cluster.DiscoveryType.EDS,
        eds_cluster_config=cluster_v3.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=duration(30),
        lb_policy=cluster_v3.Cluster.LbPolicy.ROUND_ROBIN,
        common_lb_config=cluster_v3.Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=0)
        ),
        circuit_breakers=cb_v3.CircuitBreakers(
            thresholds=[
                cb_v3.CircuitBreakers.Thresholds(
                    priority=base_v3.RoutingPriority.DEFAULT,
                    max_connections=wrappers_pb2.UInt32Value(value=_UNLIMITED),
                    max_pending_requests=wrappers_pb2.UInt32Value(value=_UNLIMITED),
                    max_requests=wrappers_pb2.UInt32Value(value=_UNLIMITED),
                    max_retries=wrappers_pb2.UInt32Value(value=_UNLIMITED),
                )
            ]
        ),
    )
    policy = cluster.policy
    if policy is not None:
        if policy.max_requests is not None:  # inFlightReq; overflow is answered 429 (listener)
            out.circuit_breakers.thresholds[0].max_requests.value = policy.max_requests
        if policy.outlier is not None:
            out.outlier_detection.CopyFrom(_outlier_detection(policy.outlier))
    transport = cluster.transport
    if transport is not None:
        out.connect_timeout.CopyFrom(duration(transport.dial_timeout))
    if cluster.scheme == "h2c":
        h2 = protocol_v3.Http2ProtocolOptions()
        if transport is not None and transport.read_idle_timeout > 0:
            h2.connection_keepalive.interval.CopyFrom(duration(transport.read_idle_timeout))
            h2.connection_keepalive.timeout.CopyFrom(duration(transport.ping_timeout or 15))
        options = upstream_http_v3.HttpProtocolOptions(
            explicit_http_config=upstream_http_v3.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=h2
            )
        )
        _idle(options, transport)
        out.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(options))
    elif transport is not None:
        options = upstream_http_v3.HttpProtocolOptions(
            explicit_http_config=upstream_http_v3.HttpProtocolOptions.ExplicitHttpConfig(
                http_protocol_options=protocol_v3.Http1ProtocolOptions()
            )
        )
        _idle(options, transport)
        out.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(options))
    if cluster.scheme == "https":
        # Traefik verifies backend certificates against the system roots by default.
        tls = (
            _transport_tls(transport, cluster.system_ca_file)
            if transport is not None
            else tls_v3.UpstreamTlsContext(
                common_tls_context=tls_v3.CommonTlsContext(
                    validation_context=_system_roots(cluster.system_ca_file)
                )
            )
        )
        out.transport_socket.name = "envoy.transport_sockets.tls"
        out.transport_socket.typed_config.CopyFrom(pack(tls))
    return out


def _outlier_detection(o: OutlierDetection) -> outlier_v3.OutlierDetection:
    """circuitBreaker: failure-percentage ejection only. Every other detector is switched off
    (consecutive 5xx and success rate are on by default), any number of hosts qualifies (the
    default minimum is 5), every host may be ejected, and always for ``ejection_time``
    (``max_ejection_time`` equal to the base, no jitter), as Traefik's fallbackDuration."""

    def u32(value: int) -> wrappers_pb2.UInt32Value:
        return wrappers_pb2.UInt32Value(value=value)

    return outlier_v3.OutlierDetection(
        interval=duration(o.interval),
        base_ejection_time=duration(o.ejection_time),
        max_ejection_time=duration(o.ejection_time),
        max_ejection_time_jitter=duration(0),
        max_ejection_percent=u32(100),
        enforcing_consecutive_5xx=u32(0),
        enforcing_consecutive_gateway_failure=u32(0),
        enforcing_success_rate=u32(0),
        # NetworkErrorRatio: connection failures, timeouts and resets are judged apart from
        # the answers (local origin); otherwise they count as 5xx with the answers.
        split_external_local_origin_errors=o.local_origin,
        enforcing_consecutive_local_origin_failure=u32(0),
        enforcing_local_origin_success_rate=u32(0),
        failure_percentage_threshold=u32(o.threshold),
        enforcing_failure_percentage=u32(0 if o.local_origin else 100),
        enforcing_failure_percentage_local_origin=u32(100 if o.local_origin else 0),
        failure_percentage_minimum_hosts=u32(1),
        failure_percentage_request_volume=u32(o.request_volume),
    )


def _idle(
    options: upstream_http_v3.HttpProtocolOptions, transport: UpstreamTransport | None
) -> None:
    if transport is not None and transport.idle_conn_timeout > 0:
        options.common_http_protocol_options.idle_timeout.CopyFrom(
            duration(transport.idle_conn_timeout)
        )


_SAN = tls_common_v3.SubjectAltNameMatcher.SanType


def _system_roots(ca_file: str) -> tls_common_v3.CertificateValidationContext:
    """Envoy does not implement ``system_root_certs``: name the host's bundle instead."""
    validation = tls_common_v3.CertificateValidationContext()
    validation.trusted_ca.filename = ca_file
    return validation


def _transport_tls(transport: UpstreamTransport, ca_file: str) -> tls_v3.UpstreamTlsContext:
    common = tls_v3.CommonTlsContext()
    if not transport.insecure_skip_verify:
        validation = tls_common_v3.CertificateValidationContext()
        if transport.trusted_ca:
            validation.trusted_ca.inline_string = transport.trusted_ca
        else:
            validation.CopyFrom(_system_roots(ca_file))
        for san_type, value in transport.peer_sans:
            validation.match_typed_subject_alt_names.append(
                tls_common_v3.SubjectAltNameMatcher(
                    san_type=_SAN.Value(san_type),
                    matcher=string_matcher_v3.StringMatcher(exact=value),
                )
            )
        common.validation_context.CopyFrom(validation)
    # else: no validation context, so Envoy accepts any certificate (insecureSkipVerify).
    cert = transport.client_certificate
    if cert is not None:
        common.tls_certificates.append(
            tls_common_v3.TlsCertificate(
                certificate_chain=base_v3.DataSource(inline_string=cert.certificate_chain),
                private_key=base_v3.DataSource(inline_string=cert.private_key),
            )
        )
    params = tls_common_v3.TlsParameters()
    if transport.min_version:
        params.tls_minimum_protocol_version = tls_common_v3.TlsParameters.TlsProtocol.Value(
            transport.min_version
        )
    if transport.max_version:
        params.tls_maximum_protocol_version = tls_common_v3.TlsParameters.TlsProtocol.Value(
            transport.max_version
        )
    params.cipher_suites.extend(transport.cipher_suites)
    if params.ByteSize():
        common.tls_params.CopyFrom(params)
    return tls_v3.UpstreamTlsContext(common_tls_context=common, sni=transport.server_name)
