"""Node groups: Envoys that get the same configuration share one snapshot.

A group names the entry points its Envoys serve (a public gateway: ``web`` and ``websecure``; an
internal one: ``internal``). The front end translates every entry point once; each group's
snapshot is the back end run over the part of the IR its entry points use, so a change is
translated once however many Envoys and groups there are. Envoys that belong to no configured
group get the default group: every entry point (what a single gateway fleet wants).
"""

from __future__ import annotations

from dataclasses import dataclass

from translators import names
from translators.ir import IR
from translators.translate import _referenced

DEFAULT_GROUP = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroup:
    name: str
    entrypoints: tuple[str, ...]  # entry point names; () = every entry point


def restrict(ir: IR, group: NodeGroup) -> IR:
    """The IR a group's Envoys get: their listeners, those listeners' routes, the clusters
    those routes use."""
    if not group.entrypoints:
        return ir
    listeners = {names.listener_name(ep) for ep in group.entrypoints}
    eps = set(group.entrypoints)
    routes = tuple(r for r in ir.routes if r.entrypoint in eps)
    used = _referenced(routes)
    return IR(
        listeners=tuple(lst for lst in ir.listeners if lst.name in listeners),
        routes=routes,
        clusters=tuple(c for c in ir.clusters if c.name in used),
    )
