"""Settings, parsed once in ``main()`` and passed down."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    config_dir: Path
    xds_address: tuple[str, int]
    admin_address: tuple[str, int]
    options: Options
    debounce: float
    max_delay: float
    log_json: bool = False
