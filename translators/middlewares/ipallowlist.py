"""ipAllowList (and its deprecated alias ipWhiteList): Envoy's rbac filter, per route.

Traefik checks the client address against ``sourceRange`` (IPs and CIDRs, v4 or v6). Without
``ipStrategy`` the client address is the TCP peer, which is Envoy's ``direct_remote_ip``. With
``ipStrategy`` it comes from X-Forwarded-For (``depth``, ``excludedIPs``); Envoy decides how far
to trust X-Forwarded-For once per connection manager (``xff_num_trusted_hops``), not per route,
so a non-empty ``ipStrategy`` is not translated yet and the route fails closed (answers 500).
Envoy's rbac filter always denies with 403, Traefik's default; another ``rejectStatusCode`` is
not translated either.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

DEFAULT_REJECT = 403
KNOWN_FIELDS = frozenset({"sourceRange", "ipStrategy", "rejectStatusCode"})


@dataclass(frozen=True, slots=True)
class IpAllowListConfig:
    ranges: tuple[tuple[str, int], ...]  # (network address, prefix length), as Envoy's CidrRange


def parse_range(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IP or a CIDR, as Traefik's net.ParseIP / net.ParseCIDR accept it (host bits masked)."""
    if "/" in text:
        return ipaddress.ip_network(text, strict=False)
    return ipaddress.ip_network(ipaddress.ip_address(text))


def ip_strategy_is_default(strategy: object, field: str) -> bool:
    """True for an absent or empty ipStrategy (the TCP peer); raises for one not translated."""
    if strategy is None:
        return True
    if not isinstance(strategy, Mapping):
        raise MiddlewareError(field, "ipStrategy must be an object")
    depth = strategy.get("depth") or 0
    excluded = strategy.get("excludedIPs") or []
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise MiddlewareError(f"{field}.depth", "depth must be a non-negative integer")
    for key in strategy:
        if key not in ("depth", "excludedIPs", "ipv6Subnet"):
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    if depth or excluded:
        which = "depth" if depth else "excludedIPs"
        raise Unsupported(
            f"{field}.{which}",
            "reading the client address from X-Forwarded-For is not translated yet (Envoy sets "
            "how far X-Forwarded-For is trusted per listener, not per route)",
        )
    if strategy.get("ipv6Subnet"):
        raise Unsupported(f"{field}.ipv6Subnet", "ipv6Subnet is not translated yet")
    return True


def ip_allow_list(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    for key in spec:
        if key not in KNOWN_FIELDS:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
    sources = spec.get("sourceRange")
    if not isinstance(sources, list) or not sources:
        raise MiddlewareError(f"{field}.sourceRange", "sourceRange must be a non-empty list")
    ranges: list[tuple[str, int]] = []
    for i, item in enumerate(sources):
        try:
            if not isinstance(item, str):
                raise ValueError(item)
            net = parse_range(item.strip())
        except ValueError as exc:
            raise MiddlewareError(
                f"{field}.sourceRange[{i}]", f"{item!r} is neither an IP address nor a CIDR"
            ) from exc
        entry = (str(net.network_address), net.prefixlen)
        if entry not in ranges:
            ranges.append(entry)
    ip_strategy_is_default(spec.get("ipStrategy"), f"{field}.ipStrategy")
    code = spec.get("rejectStatusCode")
    if code is not None and code != 0:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999:
            raise MiddlewareError(f"{field}.rejectStatusCode", "not an HTTP status code")
        if code != DEFAULT_REJECT:
            raise Unsupported(
                f"{field}.rejectStatusCode",
                f"Envoy's rbac filter always answers 403; {code} is not translated",
            )
    config = IpAllowListConfig(ranges=tuple(ranges))
    return [plan.add_filter("ip_allow_list", config) for plan in plans]
