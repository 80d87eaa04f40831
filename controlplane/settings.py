"""Settings, parsed once in ``main()`` and passed down."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from translators.groups import NodeGroup
from translators.ir import EntryPoint
from translators.options import Options


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_entrypoint(value: str) -> EntryPoint:
    name, sep, address = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {value!r}")
    host, port = parse_hostport(address)
    return EntryPoint(name=name, address=host, port=port)


MIB = 1024 * 1024


def parse_node_group(value: str) -> NodeGroup:
    """``NAME=EP[,EP...]``: Envoys of group NAME get those entry points only."""
    name, sep, eps = value.partition("=")
    entrypoints = tuple(e.strip() for e in eps.split(",") if e.strip())
    if not sep or not name or not entrypoints or name == "default":
        raise argparse.ArgumentTypeError(
            f"expected NAME=ENTRYPOINT[,ENTRYPOINT...] (NAME not 'default'), got {value!r}"
        )
    return NodeGroup(name=name, entrypoints=entrypoints)


def parse_group_by(value: str) -> str:
    """``cluster`` (the node's cluster) or ``metadata:KEY`` (a string in the node's metadata)."""
    if value == "cluster" or (value.startswith("metadata:") and len(value) > len("metadata:")):
        return value
    raise argparse.ArgumentTypeError(f"expected 'cluster' or 'metadata:KEY', got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcSettings:
    """The xDS port's gRPC server: keepalives and message limits (docs/xds.md).

    Keepalive pings find an Envoy that vanished without closing its connection (a node that
    died, a dropped NAT entry), so its stream and memory go within ``keepalive_time +
    keepalive_timeout`` instead of lingering until the next push fails. Envoy pings the control
    plane too (every 30 s in ``switchman bootstrap``); ``min_ping_interval`` must stay below that,
    or gRPC answers the pings with GOAWAY ``too_many_pings``.
    """

    keepalive_time: float = 30.0  # seconds between the server's pings on a quiet connection
    keepalive_timeout: float = 10.0  # seconds to wait for a ping's ACK before dropping
    keepalive_permit_without_calls: bool = True  # ping even when no stream is open
    min_ping_interval: float = 10.0  # the most often a client may ping without data
    # gRPC's 4 MB default breaks large RouteConfigurations (10,000 routes are ~8 MB).
    max_message_bytes: int = 64 * MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    config_dir: Path
    xds_address: tuple[str, int]
    admin_address: tuple[str, int]
    options: Options
    debounce: float
    max_delay: float
    log_json: bool = False
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    node_groups: tuple[NodeGroup, ...] = ()
    group_by: str = "cluster"
