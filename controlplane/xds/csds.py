"""Client Status Discovery Service (``envoy.service.status.v3``): what each Envoy holds.

Standard tooling (``istioctl``-style dumps, ``grpcurl``) can ask the control plane which
resources, at which versions, each connected Envoy has acknowledged, and which it rejected.
Answers come from the streams' own records (``NodeStatus``), never from the Envoys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2 as dump_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.service.status.v3 import csds_pb2 as csds_v3
from envoy.service.status.v3 import csds_pb2_grpc

from controlplane.xds.server import NodeStatus


def client_config(status: NodeStatus, contents: bool = True) -> csds_v3.ClientConfig:
    out = csds_v3.ClientConfig(node=base_v3.Node(id=status.node_id, cluster=status.cluster))
    for type_url in sorted(set(status.holdings) | set(status.rejected)):
        held = status.holdings.get(type_url, {})
        rejected, message = status.rejected.get(type_url, ({}, ""))
        for name in sorted(set(held) | set(rejected)):
            res = rejected.get(name) or held[name]
            cfg = csds_v3.ClientConfig.GenericXdsConfig(
                type_url=type_url,
                name=name,
                version_info=res.version,
                config_status=csds_v3.ConfigStatus.SYNCED,
                client_status=dump_v3.ClientResourceStatus.ACKED,
            )
            if name in rejected:
                cfg.config_status = csds_v3.ConfigStatus.ERROR
                cfg.client_status = dump_v3.ClientResourceStatus.NACKED
                cfg.error_state.details = message
            if contents:
                cfg.xds_config.CopyFrom(res.packed)
            out.generic_xds_configs.append(cfg)
    return out


class ClientStatusService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, nodes: dict[int, NodeStatus]) -> None:
        self.nodes = nodes

    def _answer(self, req: csds_v3.ClientStatusRequest) -> csds_v3.ClientStatusResponse:
        wanted = req.node.id if req.HasField("node") and req.node.id else None
        return csds_v3.ClientStatusResponse(
            config=[
                client_config(n, contents=not req.exclude_resource_contents)
                for n in sorted(self.nodes.values(), key=lambda n: n.node_id)
                if wanted is None or n.node_id == wanted
            ]
        )

    async def FetchClientStatus(
        self, request: csds_v3.ClientStatusRequest, context: Any
    ) -> csds_v3.ClientStatusResponse:
        return self._answer(request)

    async def StreamClientStatus(
        self, request_iterator: AsyncIterator[csds_v3.ClientStatusRequest], context: Any
    ) -> AsyncIterator[csds_v3.ClientStatusResponse]:
        async for req in request_iterator:
            yield self._answer(req)


def add_to_server(server: Any, service: ClientStatusService) -> None:
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(service, server)
