"""Snapshots and the cache that hands them to streams.

A ``Snapshot`` is immutable: per type URL, each resource is packed into an ``Any`` once, with a
content-hash version. Versions are content hashes, so they survive a control-plane restart without
looking current when they are not (Contour PR #6250), and an unchanged resource keeps its version
across snapshots (a stream is only woken for what it watches).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf import any_pb2

from translators.envoy import TYPE_ORDER, Resources
from translators.envoy.wire import message_of


@dataclass(frozen=True, slots=True)
class Prepared:
    name: str
    version: str
    packed: any_pb2.Any
    resource: Any  # the proto, or ``Encoded`` bytes

    @property
    def message(self) -> Any:
        return message_of(self.resource)


@dataclass(frozen=True, slots=True)
class TypeSnapshot:
    resources: Mapping[str, Prepared]
    version: str
    # The back end's (name, message) tuple this was made from: handed the same tuple again
    # (BackendCache does that for a type that did not change), the TypeSnapshot is reused.
    source: tuple[tuple[str, Any], ...] = ()

    def subset_version(self, names: Iterable[str]) -> str:
        h = hashlib.sha256()
        for name in sorted(names):
            res = self.resources.get(name)
            h.update(f"{name}={res.version if res else '-'};".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Snapshot:
    types: Mapping[str, TypeSnapshot]
    version: str
    meta: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, type_url: str) -> TypeSnapshot:
        return self.types.get(type_url) or TypeSnapshot(
            resources=MappingProxyType({}), version="empty"
        )


def _prepare(name: str, message: Any, previous: Prepared | None) -> Prepared:
    if previous is not None and previous.resource is message:
        return previous  # the back end reused the message: nothing to serialize or hash
    data = message.SerializeToString(deterministic=True)
    version = hashlib.sha256(data).hexdigest()[:16]
    if previous is not None and previous.version == version:
        return previous  # same bytes: share the packed Any with the previous snapshot
    packed = any_pb2.Any(type_url=f"type.googleapis.com/{message.DESCRIPTOR.full_name}", value=data)
    return Prepared(name=name, version=version, packed=packed, resource=message)


def make_snapshot(resources: Resources, previous: Snapshot | None = None) -> Snapshot:
    types: dict[str, TypeSnapshot] = {}
    overall = hashlib.sha256()
    for type_url in TYPE_ORDER:
        prev_type = previous.types.get(type_url) if previous else None
        entries = resources.by_type.get(type_url, ())
        if prev_type is not None and entries and prev_type.source is entries:
            types[type_url] = prev_type  # the very same input: the same resources and version
            overall.update(f"{type_url}={prev_type.version};".encode())
            continue
        prepared: dict[str, Prepared] = {}
        for name, message in entries:
            prev = prev_type.resources.get(name) if prev_type else None
            prepared[name] = _prepare(name, message, prev)
        h = hashlib.sha256()
        for name in sorted(prepared):
            h.update(f"{name}={prepared[name].version};".encode())
        version = h.hexdigest()[:16]
        overall.update(f"{type_url}={version};".encode())
        types[type_url] = TypeSnapshot(
            resources=MappingProxyType(prepared), version=version, source=entries
        )
    return Snapshot(types=MappingProxyType(types), version=overall.hexdigest()[:16])


class SnapshotCache:
    """Holds the current snapshot; streams wait on it for changes."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._changed = asyncio.Condition()
        self._generation = 0

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def generation(self) -> int:
        return self._generation

    async def set_snapshot(self, snapshot: Snapshot) -> bool:
        """Publish; returns False when nothing changed (nobody is woken)."""
        if self._snapshot is not None and self._snapshot.version == snapshot.version:
            return False
        async with self._changed:
            self._snapshot = snapshot
            self._generation += 1
            self._changed.notify_all()
        return True

    async def wait_changed(self, generation: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self._generation != generation)
            return self._generation
