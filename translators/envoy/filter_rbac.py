"""Envoy's rbac filter for the ipAllowList middleware: allow the source ranges, per route."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_v3
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_v3
from google.protobuf import wrappers_pb2

from translators.envoy.filters import FilterKind, register
from translators.middlewares.ipallowlist import IpAllowListConfig


def _listener() -> rbac_v3.RBAC:
    # Disabled on the listener; without rules it would enforce nothing anyway.
    return rbac_v3.RBAC()


def _per_route(config: object) -> rbac_v3.RBACPerRoute:
    assert isinstance(config, IpAllowListConfig)
    principals = [
        rbac_config_v3.Principal(
            direct_remote_ip=address_v3.CidrRange(
                address_prefix=address, prefix_len=wrappers_pb2.UInt32Value(value=length)
            )
        )
        for address, length in config.ranges
    ]
    policy = rbac_config_v3.Policy(
        permissions=[rbac_config_v3.Permission(any=True)],
        principals=[rbac_config_v3.Principal(or_ids=rbac_config_v3.Principal.Set(ids=principals))],
    )
    return rbac_v3.RBACPerRoute(
        rbac=rbac_v3.RBAC(
            rules=rbac_config_v3.RBAC(
                action=rbac_config_v3.RBAC.ALLOW, policies={"ip-allow-list": policy}
            )
        )
    )


register("ip_allow_list", FilterKind("envoy.filters.http.rbac", _listener, _per_route))
