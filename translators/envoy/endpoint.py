"""ClusterLoadAssignment (EDS) for one cluster; a failover cluster's endpoints in two priorities."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import health_check_pb2 as health_v3
from envoy.config.endpoint.v3 import endpoint_components_pb2 as endpoint_v3
from envoy.config.endpoint.v3 import endpoint_pb2 as eds_v3

from translators.ir import Cluster, Endpoint

# A failover cluster's overprovisioning factor (percent): a priority counts as fully available
# while it has one healthy host in 100,000, so traffic never spills to the fallback early (Envoy's
# default, 140, moves load as soon as under 72% of a priority's hosts are healthy).
NO_SPILL = 10_000_000


def _lb_endpoint(ep: Endpoint) -> endpoint_v3.LbEndpoint:
    out = endpoint_v3.LbEndpoint(
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
    if ep.weight != 1:
        out.load_balancing_weight.value = ep.weight
    return out


def build_load_assignment(cluster: Cluster) -> eds_v3.ClusterLoadAssignment:
    by_priority: dict[int, list[endpoint_v3.LbEndpoint]] = {}
    for ep in cluster.endpoints:
        by_priority.setdefault(ep.priority, []).append(_lb_endpoint(ep))
    out = eds_v3.ClusterLoadAssignment(
        cluster_name=cluster.name,
        endpoints=[
            endpoint_v3.LocalityLbEndpoints(priority=p, lb_endpoints=by_priority[p])
            for p in sorted(by_priority)
        ],
    )
    if cluster.failover:
        out.policy.overprovisioning_factor.value = NO_SPILL
    return out
