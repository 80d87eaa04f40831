"""The ResourceStore: the latest objects of every source, and a change signal.

Sources only fill the store; the pipeline only reads it. A source replaces its whole contribution
at once, so the pipeline never sees half of an edit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from translators.errors import Diagnostic, SourceRef
from translators.models import Resource

Pair = tuple[Resource, SourceRef]


@dataclass(frozen=True, slots=True)
class SourceState:
    # The objects in chunks (a file's, for the file source): a chunk that did not change is the
    # same tuple as before, which is how incremental translation skips it.
    chunks: tuple[tuple[Pair, ...], ...]
    diagnostics: tuple[Diagnostic, ...]
    synced: bool


class ResourceStore:
    def __init__(self, sources: Iterable[str]) -> None:
        self._states: dict[str, SourceState] = {
            name: SourceState(chunks=(), diagnostics=(), synced=False) for name in sources
        }
        self._changed = asyncio.Event()
        self.revision = 0

    def replace(
        self,
        source: str,
        objects: Iterable[Pair],
        diagnostics: Iterable[Diagnostic],
        *,
        synced: bool = True,
    ) -> None:
        """Replace a source's whole contribution with ``objects`` (one chunk)."""
        self.replace_chunks(source, [tuple(objects)], diagnostics, synced=synced)

    def replace_chunks(
        self,
        source: str,
        chunks: Iterable[tuple[Pair, ...]],
        diagnostics: Iterable[Diagnostic],
        *,
        synced: bool = True,
    ) -> None:
        self._states[source] = SourceState(
            chunks=tuple(chunks), diagnostics=tuple(diagnostics), synced=synced
        )
        self.revision += 1
        self._changed.set()

    @property
    def synced(self) -> bool:
        """True once every source has completed its first full sync."""
        return all(s.synced for s in self._states.values())

    def objects(self) -> list[Pair]:
        return [pair for chunk in self.chunks() for pair in chunk]

    def chunks(self) -> list[tuple[Pair, ...]]:
        out: list[tuple[Pair, ...]] = []
        for name in sorted(self._states):
            out.extend(self._states[name].chunks)
        return out

    def diagnostics(self) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for name in sorted(self._states):
            out.extend(self._states[name].diagnostics)
        return out

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()
