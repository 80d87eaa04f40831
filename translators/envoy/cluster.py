"""Cluster (CDS) for one Service port.

Envoy defaults that differ from Traefik's are overridden here:
- ``healthy_panic_threshold`` 0: Envoy would otherwise send traffic to unhealthy/draining hosts
  once half of them are unhealthy; Traefik never does.
- circuit breaker thresholds raised: Envoy caps a cluster at 1,024 connections and requests by
  default; Traefik has no such limit.
- ``connect_timeout`` 30 s: Traefik's default ``dialTimeout``.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2 as cb_v3
from envoy.config.cluster.v3 import cluster_pb2 as cluster_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.core.v3 import protocol_pb2 as protocol_v3
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_v3
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as tls_v3
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_v3
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from translators.envoy.common import ads_source, duration, pack
from translators.ir import Cluster

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
    if cluster.scheme == "h2c":
        out.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(
            pack(
                upstream_http_v3.HttpProtocolOptions(
                    explicit_http_config=upstream_http_v3.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_v3.Http2ProtocolOptions()
                    )
                )
            )
        )
    elif cluster.scheme == "https":
        # Traefik verifies backend certificates against the system roots by default.
        tls = tls_v3.UpstreamTlsContext(
            common_tls_context=tls_v3.CommonTlsContext(
                validation_context=tls_common_v3.CertificateValidationContext(
                    system_root_certs=tls_common_v3.CertificateValidationContext.SystemRootCerts()
                )
            )
        )
        out.transport_socket.name = "envoy.transport_sockets.tls"
        out.transport_socket.typed_config.CopyFrom(pack(tls))
    return out
