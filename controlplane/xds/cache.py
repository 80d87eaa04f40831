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
from translators.envoy.wire import Move, changed_positions, message_of
from translators.groups import DEFAULT_GROUP


@dataclass(frozen=True, slots=True)
class Prepared:
    name: str
    version: str
    packed: any_pb2.Any
    resource: Any  # the proto, or ``Encoded`` bytes
    # 64 bits of a hash of name and version: a type's version is their sum (see make_snapshot).
    digest: int = 0

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
    digest: int = 0  # the version as a number: the sum of the resources' digests
    size: int = 0  # serialized bytes of every resource
    # Made from the TypeSnapshot of version ``base`` by replacing ``changed`` (same names, in
    # the same places): what a stream that has seen ``base`` needs to look at, and no more.
    base: str | None = None
    changed: tuple[str, ...] = ()

    def subset_digest(self, names: Iterable[str]) -> int:
        """The version of a named subset as a number: the sum of its resources' digests, a
        name the snapshot lacks counting as ``name=-`` (so it can be updated by difference)."""
        acc = 0
        for name in names:
            res = self.resources.get(name)
            acc += res.digest if res is not None else _digest(f"{name}=-")
        return acc & DIGEST_MASK


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
    digest = _digest(f"{name}={version}")
    return Prepared(name=name, version=version, packed=packed, resource=message, digest=digest)


DIGEST_MASK = (1 << 64) - 1


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest())


def make_snapshot(resources: Resources, previous: Snapshot | None = None) -> Snapshot:
    """Per type, each resource prepared once; reuses everything the previous snapshot has.

    A type's version is the sum (mod 2^64) of its resources' (name, version) hashes: it depends
    only on the content, and an edit that replaces a few resources updates it by difference.
    """
    types: dict[str, TypeSnapshot] = {}
    overall = hashlib.sha256()
    for type_url in TYPE_ORDER:
        prev_type = previous.types.get(type_url) if previous else None
        entries = resources.by_type.get(type_url, ())
        move = resources.moves.get(type_url)
        if prev_type is not None and entries and prev_type.source is entries:
            types[type_url] = prev_type  # the very same input: the same resources and version
        elif move is not None and prev_type is not None and prev_type.source is move.previous:
            types[type_url] = _moved(prev_type, entries, move)
        else:
            types[type_url] = _spliced(prev_type, entries) or _prepared(prev_type, entries)
        overall.update(f"{type_url}={types[type_url].version};".encode())
    return Snapshot(types=MappingProxyType(types), version=overall.hexdigest()[:16])


def _type_snapshot(
    prepared: dict[str, Prepared],
    acc: int,
    size: int,
    entries: tuple[tuple[str, Any], ...],
    base: str | None = None,
    changed: tuple[str, ...] = (),
) -> TypeSnapshot:
    return TypeSnapshot(
        resources=MappingProxyType(prepared),
        version=f"{acc:016x}",
        source=entries,
        digest=acc,
        size=size,
        base=base,
        changed=changed,
    )


def _prepared(prev_type: TypeSnapshot | None, entries: tuple[tuple[str, Any], ...]) -> TypeSnapshot:
    prepared: dict[str, Prepared] = {}
    for name, message in entries:
        prev = prev_type.resources.get(name) if prev_type else None
        prepared[name] = _prepare(name, message, prev)
    acc = sum(p.digest for p in prepared.values()) & DIGEST_MASK
    size = sum(len(p.packed.value) for p in prepared.values())
    return _type_snapshot(prepared, acc, size, entries)


def _spliced(
    prev_type: TypeSnapshot | None, entries: tuple[tuple[str, Any], ...]
) -> TypeSnapshot | None:
    """The same names in the same places, a few messages replaced: prepare only those."""
    if prev_type is None or not prev_type.source or len(prev_type.source) != len(entries):
        return None
    old = prev_type.source
    changed = changed_positions(old, entries)
    if any(entries[k][0] != old[k][0] for k in changed):
        return None
    prepared = dict(prev_type.resources)
    acc, size = prev_type.digest, prev_type.size
    replaced = []
    for k in changed:
        name, message = entries[k]
        before = prepared[name]
        after = _prepare(name, message, before)
        if after is not before:
            replaced.append(name)
        prepared[name] = after
        acc = (acc - before.digest + after.digest) & DIGEST_MASK
        size += len(after.packed.value) - len(before.packed.value)
    return _type_snapshot(prepared, acc, size, entries, prev_type.version, tuple(replaced))


def _moved(
    prev_type: TypeSnapshot, entries: tuple[tuple[str, Any], ...], move: Move
) -> TypeSnapshot:
    """The previous type with the names the back end says it removed, added or replaced: a few
    resources prepared, not thousands looked at (a host that comes or goes, with route scopes).
    Names came or went, so streams look at the whole type (no ``base``)."""
    prepared = dict(prev_type.resources)
    acc, size = prev_type.digest, prev_type.size
    for name in move.removed:
        gone = prepared.pop(name)
        acc -= gone.digest
        size -= len(gone.packed.value)
    for name, message in move.put:
        before = prepared.get(name)
        after = _prepare(name, message, before)
        if before is not None:
            acc -= before.digest
            size -= len(before.packed.value)
        prepared[name] = after
        acc += after.digest
        size += len(after.packed.value)
    return _type_snapshot(prepared, acc & DIGEST_MASK, size, entries)


def snapshot_bytes(snapshot: Snapshot) -> int:
    """The serialized size of every resource in a snapshot."""
    return sum(ts.size for ts in snapshot.types.values())


class SnapshotCache:
    """Holds the current snapshot of each node group; streams wait on it for changes.

    Groups are published together (one generation), so the Envoys of every group move to the
    same translation at once. A node whose group has no snapshot of its own gets the default
    group's.
    """

    def __init__(self) -> None:
        self._snapshots: Mapping[str, Snapshot] = MappingProxyType({})
        self._changed = asyncio.Condition()
        self._generation = 0

    @property
    def snapshot(self) -> Snapshot | None:
        """The default group's snapshot."""
        return self._snapshots.get(DEFAULT_GROUP)

    @property
    def snapshots(self) -> Mapping[str, Snapshot]:
        return self._snapshots

    def snapshot_for(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group) or self._snapshots.get(DEFAULT_GROUP)

    @property
    def generation(self) -> int:
        return self._generation

    async def set_snapshot(self, snapshot: Snapshot) -> bool:
        """Publish the default group only; returns False when nothing changed."""
        return await self.set_snapshots({DEFAULT_GROUP: snapshot})

    async def set_snapshots(self, snapshots: Mapping[str, Snapshot]) -> bool:
        """Publish every group; returns False when nothing changed (nobody is woken)."""
        current = self._snapshots
        if current.keys() == snapshots.keys() and all(
            current[g].version == s.version for g, s in snapshots.items()
        ):
            return False
        async with self._changed:
            self._snapshots = MappingProxyType(dict(snapshots))
            self._generation += 1
            self._changed.notify_all()
        return True

    async def wait_changed(self, generation: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self._generation != generation)
            return self._generation
