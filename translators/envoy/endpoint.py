"""ClusterLoadAssignment (EDS) for one cluster."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import health_check_pb2 as health_v3
from envoy.config.endpoint.v3 import endpoint_components_pb2 as endpoint_v3
from envoy.config.endpoint.v3 import endpoint_pb2 as eds_v3

from translators.ir import Cluster


def build_load_assignment(cluster: Cluster) -> eds_v3.ClusterLoadAssignment:
    lb_endpoints = [
        endpoint_v3.LbEndpoint(
            endpoint=endpoint_v3.Endpoint(
                address=address_v3.Address(
                    socket_address=address_v3.SocketAddress(address=ep.address, port_value=ep.port)
                ),
                # With passHostHeader: false Traefik sends Host = the server's ip:port;
                # auto_host_rewrite takes it from here.
                hostname=f"[{ep.address}]:{ep.port}"
                if ":" in ep.address
                else f"{ep.address}:{ep.port}",
            ),
            # Traefik "fences" terminating endpoints: no new requests. Envoy: DRAINING.
            health_status=health_v3.HealthStatus.DRAINING
            if ep.draining
            else health_v3.HealthStatus.HEALTHY,
        )
        for ep in cluster.endpoints
    ]
    return eds_v3.ClusterLoadAssignment(
        cluster_name=cluster.name,
        endpoints=[endpoint_v3.LocalityLbEndpoints(lb_endpoints=lb_endpoints)]
        if lb_endpoints
        else [],
    )
