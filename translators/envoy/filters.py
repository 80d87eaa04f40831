"""HTTP filters that routes turn on: registry, listener instances, per-route configs.

Envoy runs one filter chain per listener, in one order; Traefik runs each router's middlewares
in the order the router lists them. Every filter kind Switchman uses is present in every
listener's connection manager, ``disabled`` by default, in the fixed order of ``FILTERS``; a
route enables the instances it needs with ``typed_per_filter_config`` and carries its own
settings there (so a change of settings is an RDS update, never a listener change). A route
that uses a kind twice uses a second instance (``<kind>/1``). The front end reports a route
whose middlewares are listed in an order the fixed chain cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_v3
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_v3,
)
from google.protobuf import any_pb2

from translators.envoy.common import pack
from translators.filter_order import FILTER_ORDER
from translators.ir import FilterUse


@dataclass(frozen=True, slots=True)
class FilterKind:
    """One kind of HTTP filter: how to build its listener instance and a route's settings."""

    envoy_name: str
    listener_config: Callable[[], Any]
    per_route: Callable[[Any], Any]


# The chain order (translators/filter_order.py). Kinds are registered by their modules
# (translators/envoy/filter_*.py); only registered kinds are put in listeners.
FILTERS: dict[str, FilterKind] = {}


def register(kind: str, spec: FilterKind) -> None:
    if kind not in FILTER_ORDER:
        raise ValueError(f"filter kind {kind!r} has no place in FILTER_ORDER")
    FILTERS[kind] = spec


def instance_name(kind: str, slot: int) -> str:
    return f"{FILTERS[kind].envoy_name}/{kind}/{slot}"


def listener_filters(slots: Mapping[str, int]) -> list[hcm_v3.HttpFilter]:
    """Every registered kind (at least one instance), disabled, in chain order."""
    out = []
    for kind in FILTER_ORDER:
        spec = FILTERS.get(kind)
        if spec is None:
            continue
        for slot in range(max(1, slots.get(kind, 0))):
            out.append(
                hcm_v3.HttpFilter(
                    name=instance_name(kind, slot),
                    typed_config=pack(spec.listener_config()),
                    disabled=True,
                )
            )
    return out


def route_filter_configs(uses: Sequence[FilterUse]) -> dict[str, any_pb2.Any]:
    out: dict[str, any_pb2.Any] = {}
    seen: dict[str, int] = {}
    for use in uses:
        slot = seen.get(use.kind, 0)
        seen[use.kind] = slot + 1
        per_route = FILTERS[use.kind].per_route(use.config)
        # A kind without per-route settings returns None: the route only enables the instance
        # (Envoy reads a present but empty ``config`` as "enabled").
        config = route_v3.FilterConfig(disabled=False)
        if per_route is None:
            config.config.SetInParent()
        else:
            config.config.CopyFrom(pack(per_route))
        out[instance_name(use.kind, slot)] = pack(config)
    return out


def chain_position(kind: str) -> int:
    return FILTER_ORDER.index(kind)
