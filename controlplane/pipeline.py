"""The pipeline: store changes → debounce → translate → publish a snapshot.

Translation is incremental (translators/incremental.py): only the IngressRoutes that read a
changed object are translated again, and only changed routes and clusters are re-encoded.

Debounce has a leading edge: an edit after a quiet period is translated at once; under churn,
changes are coalesced for ``debounce`` seconds after the last one, never longer than
``max_delay`` after the first. A translation that raises (a bug, never user input) publishes
nothing: Envoy keeps the last good config, the error is logged and counted.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field

from controlplane.metrics import Metrics
from controlplane.store import ResourceStore
from controlplane.xds.cache import Snapshot, SnapshotCache, make_snapshot, snapshot_bytes
from translators.envoy import BackendCache, build_resources
from translators.errors import Diagnostic
from translators.groups import DEFAULT_GROUP, NodeGroup, restrict
from translators.incremental import IncrementalTranslator
from translators.ir import IR
from translators.options import Options

log = logging.getLogger("switchman.pipeline")
_FREEZE_MIN = 500  # IngressRoutes re-translated at once before the heap is frozen


@dataclass(slots=True)
class Pipeline:
    store: ResourceStore
    cache: SnapshotCache
    options: Options
    metrics: Metrics
    debounce: float = 0.02
    max_delay: float = 0.5
    ir: IR | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    published: asyncio.Event = field(default_factory=asyncio.Event)
    _reported: frozenset[Diagnostic] = frozenset()
    groups: tuple[NodeGroup, ...] = ()
    _translator: IncrementalTranslator | None = None
    _backends: dict[str, BackendCache] = field(default_factory=dict)
    _last_run: float = 0.0

    def translate(self) -> dict[str, Snapshot] | None:
        """Translate what changed; one snapshot per node group (the default group included).
        None on an internal error."""
        started = time.perf_counter()
        try:
            if self._translator is None:
                self._translator = IncrementalTranslator(self.options)
            _, world_diags, result = self._translator.update(self.store.chunks())
            snapshots: dict[str, Snapshot] = {}
            for group in (NodeGroup(name=DEFAULT_GROUP, entrypoints=()), *self.groups):
                backend = self._backends.setdefault(group.name, BackendCache())
                resources = build_resources(restrict(result.ir, group), backend)
                previous = self.cache.snapshots.get(group.name)
                snapshots[group.name] = make_snapshot(resources, previous)
        except Exception:
            # Start the next translation from scratch: no half-updated state is trusted.
            self._translator = None
            self._backends = {}
            self.metrics.translations.labels(result="error").inc()
            log.exception("internal error during translation; the last good snapshot keeps serving")
            return None
        self.metrics.translations.labels(result="ok").inc()
        self._settle_heap(self._translator.last_recomputed, self._translator.size)
        self.metrics.translation_seconds.observe(time.perf_counter() - started)
        self.ir = result.ir
        diags = tuple(sorted({*self.store.diagnostics(), *world_diags, *result.diagnostics}))
        self._report(diags)
        return snapshots

    def _settle_heap(self, recomputed: int, total: int) -> None:
        """After a large translation, move what it built out of the cyclic collector's sight.

        At 10,000 routes the config is millions of long-lived objects (protos, IR, models); a
        full collection walks all of them, a pause of hundreds of milliseconds that lands on
        whichever edit happens to allocate then. ``gc.freeze()`` (what large Python services do
        after loading) leaves them to reference counting, which frees them when the next
        translation replaces them; they hold no reference cycles. Small edits are not frozen:
        the collector keeps handling them as usual.
        """
        if recomputed >= _FREEZE_MIN and recomputed * 2 >= total:
            gc.collect()
            gc.freeze()

    def _report(self, diags: tuple[Diagnostic, ...]) -> None:
        self.diagnostics = diags
        current = frozenset(diags)
        for d in diags:
            if d not in self._reported:
                (log.error if d.severity == "error" else log.warning)("%s", d)
        for d in self._reported - current:
            log.info("resolved: %s", d)
        self._reported = current
        self.metrics.diagnostics.clear()
        counts: dict[tuple[str, str], int] = {}
        for d in diags:
            counts[(d.reason, d.severity)] = counts.get((d.reason, d.severity), 0) + 1
        for (reason, severity), n in counts.items():
            self.metrics.diagnostics.labels(reason=reason, severity=severity).set(n)

    async def publish_once(self) -> bool:
        if not self.store.synced:
            return False  # never publish before the first full sync of every source
        snapshots = self.translate()
        self._last_run = time.monotonic()
        if snapshots is None:
            return False
        if await self.cache.set_snapshots(snapshots):
            self.metrics.snapshots.inc()
            for group, snapshot in sorted(snapshots.items()):
                self.metrics.snapshot_bytes.labels(group=group or "default").set(
                    snapshot_bytes(snapshot)
                )
            log.info(
                "published snapshot %s",
                ", ".join(f"{g or 'default'}={s.version}" for g, s in sorted(snapshots.items())),
            )
        self.published.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.create_task(self.store.wait_changed())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            first = time.monotonic()
            if first - self._last_run < self.debounce:
                # Busy: coalesce until quiet for `debounce`, at most `max_delay` in all.
                while time.monotonic() - first < self.max_delay:
                    try:
                        await asyncio.wait_for(self.store.wait_changed(), timeout=self.debounce)
                    except TimeoutError:
                        break
            await self.publish_once()
