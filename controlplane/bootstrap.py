"""``switchman bootstrap``: an Envoy bootstrap that pulls everything over ADS."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2 as bootstrap_v3
from envoy.extensions.resource_monitors.downstream_connections.v3 import (
    downstream_connections_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from translators.envoy.filter_ext_authz import XDS_CLUSTER

MAX_REGEX_PROGRAM_SIZE = 1000  # keep equal to translators.options.Options.max_regex_program_size
# Registers the descriptor that ParseDict needs to check the typed options below.
_REGISTERED = (
    http_protocol_options_pb2.HttpProtocolOptions,
    downstream_connections_pb2.DownstreamConnectionsConfig,
)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_bootstrap(
    *,
    xds_host: str,
    xds_port: int,
    node_id: str,
    node_cluster: str = "switchman-gateway",
    admin_host: str = "127.0.0.1",
    admin_port: int = 9901,
    max_connections: int = 50_000,
    protocol: str = "delta",
) -> dict[str, Any]:
    """The bootstrap as a dict, validated against Envoy's Bootstrap message."""
    config: dict[str, Any] = {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                # State of the world, or incremental (Delta) xDS.
                "api_type": "DELTA_GRPC" if protocol == "delta" else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {
                                "http2_protocol_options": {
                                    "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                                }
                            },
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        # Envoy refuses regexes whose RE2 program is over 100 by default, and then the whole
        # RouteConfiguration with them; the translator checks every regex against this limit.
        "layered_runtime": {
            "layers": [
                {
                    "name": "switchman",
                    "static_layer": {
                        "re2.max_program_size.error_level": MAX_REGEX_PROGRAM_SIZE,
                        "re2.max_program_size.warn_level": MAX_REGEX_PROGRAM_SIZE,
                    },
                }
            ]
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": max_connections,
                    },
                }
            ]
        },
    }
    # Fails loudly on a field Envoy would not know.
    json_format.ParseDict(copy.deepcopy(config), bootstrap_v3.Bootstrap())
    return config


def render_bootstrap(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
