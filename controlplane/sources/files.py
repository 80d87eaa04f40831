"""FileSource: a directory (recursive) of multi-document YAML or JSON files, watched.

- Every ``*.yaml``, ``*.yml`` and ``*.json`` below the directory is read; hidden files and
  directories (``.git``, the ``..data`` of a ConfigMap mount) are not walked, but symlinks to
  them are followed, so a ConfigMap volume works.
- A file that stops parsing keeps its last good objects serving; the error names the file and
  line. An object that stops validating keeps its last good version the same way.
- Deleting a file removes its objects.
- ``kind: List`` documents are expanded.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from controlplane.store import ResourceStore
from translators.errors import Diagnostic, SourceRef
from translators.models import Resource, load_object

log = logging.getLogger("switchman.sources.files")

_SUFFIXES = (".yaml", ".yml", ".json")
_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Identity = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


@dataclass(slots=True)
class FileState:
    signature: tuple[int, int, int]
    objects: dict[Identity, tuple[Resource, SourceRef]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Each document's text → its first line and what loading it gave: an edit to one document
    # of a large file parses and validates that document only.
    documents: dict[str, tuple[int, list[Loaded]]] = field(default_factory=dict)
    # The objects as one tuple, made once per read: an unchanged file hands the same tuple on.
    chunk: tuple[tuple[Resource, SourceRef], ...] = ()


@dataclass(frozen=True, slots=True)
class Loaded:
    """One document as loaded: its identity, and the object and ref, or why not."""

    identity: Identity | None
    pair: tuple[Resource, SourceRef] | None
    diagnostics: tuple[Diagnostic, ...]


# A line that starts a new document: YAML forbids "---" at the start of a line inside any
# scalar (spec 1.2, c-forbidden), so these lines split the text into documents.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r]|$)", re.MULTILINE)
# Directives bind to the document after them, and "..." ends one early: keep such a stream whole.
_WHOLE = re.compile(r"^(?:%|\.\.\.(?=[ \t\r]|$))", re.MULTILINE)


def split_documents(text: str) -> list[tuple[int, str]]:
    """(first line, text) per document of a YAML stream, each parseable on its own."""
    if _WHOLE.search(text):
        return [(1, text)]
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    out: list[tuple[int, str]] = []
    line = 1
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        out.append((line, text[begin:end]))
        line += text.count("\n", begin, end)
    return out


def _identity(doc: object) -> Identity | None:
    if not isinstance(doc, dict):
        return None
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return (
        str(doc.get("apiVersion", "")),
        str(doc.get("kind", "")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name", "")),
    )


def parse_documents(text: str, display: str) -> list[tuple[int, object]]:
    """(line, document) pairs. Raises ``DocumentError`` with the line of the problem."""
    if display.endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(exc.lineno, exc.msg) from exc
        return _expand_lists([(1, doc)])
    loader = _Loader(text)
    docs: list[tuple[int, object]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            docs.append((node.start_mark.line + 1, loader.construct_document(node)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise DocumentError(line, problem) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(0, str(exc)) from exc
    finally:
        loader.dispose()
    return _expand_lists([(line, d) for line, d in docs if d is not None])


def _expand_lists(docs: list[tuple[int, object]]) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    for line, doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            out.extend((line, item) for item in doc["items"])
        else:
            out.append((line, doc))
    return out


def _load(doc: object, display: str, line: int) -> Loaded:
    obj, ref, diags = load_object(doc, file=display, line=line)
    identity = _identity(doc)
    pair = (obj, ref) if obj is not None else None
    return Loaded(identity=identity, pair=pair, diagnostics=tuple(diags))


def _moved(items: list[Loaded], delta: int) -> list[Loaded] | None:
    """The same documents ``delta`` lines further down (the same objects, new refs); None when
    a diagnostic would have to be rewritten (it is then simply loaded again)."""
    if delta == 0:
        return items
    if any(item.diagnostics or item.pair is None for item in items):
        return None
    return [
        Loaded(
            identity=item.identity,
            pair=(item.pair[0], replace(item.pair[1], line=item.pair[1].line + delta)),
            diagnostics=(),
        )
        for item in items
        if item.pair is not None
    ]


class DocumentError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class FileSource:
    name = "files"

    def __init__(self, directory: Path, store: ResourceStore, *, debounce_ms: int = 20) -> None:
        self.directory = directory.absolute()  # the watcher reports absolute paths
        self.store = store
        self.debounce_ms = debounce_ms
        self.files: dict[Path, FileState] = {}

    # -- reading ----------------------------------------------------------------------------------

    def _walk(self) -> Iterator[Path]:
        seen: set[tuple[int, int]] = set()  # directories by (device, inode): symlink loops
        for root, dirs, files in os.walk(self.directory, followlinks=True):
            try:
                st = os.stat(root)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if not f.startswith(".") and f.endswith(_SUFFIXES):
                    yield Path(root) / f

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.directory))
        except ValueError:
            return str(path)

    def _load_file(self, path: Path, signature: tuple[int, int, int]) -> None:
        display = self._display(path)
        previous = self.files.get(path)
        state = FileState(signature=signature)
        try:
            text = path.read_text(encoding="utf-8")
            loaded = self._load_text(text, display, previous, state)
        except (OSError, UnicodeDecodeError) as exc:
            loaded, err = None, DocumentError(0, f"cannot read: {exc}")
        except DocumentError as exc:
            loaded, err = None, exc
        if loaded is None:
            kept = previous.objects if previous else {}
            suffix = f"; its last good objects ({len(kept)}) keep serving" if kept else ""
            state.objects = dict(kept)
            state.documents = previous.documents if previous else {}
            state.diagnostics = [
                Diagnostic(
                    source=SourceRef(file=display, line=err.line),
                    field="",
                    reason="InvalidYAML" if not display.endswith(".json") else "InvalidJSON",
                    message=f"{err.message}{suffix}",
                )
            ]
            log.error("%s:%d: %s%s", display, err.line, err.message, suffix)
            state.chunk = tuple(state.objects.values())
            self.files[path] = state
            return
        for item in loaded:
            identity, diags = item.identity, list(item.diagnostics)
            if item.pair is not None and identity is not None:
                state.objects[identity] = item.pair
            elif diags and identity is not None and previous and identity in previous.objects:
                state.objects[identity] = previous.objects[identity]
                diags = [
                    Diagnostic(
                        source=d.source,
                        field=d.field,
                        reason=d.reason,
                        message=f"{d.message}; the last good version keeps serving",
                        severity=d.severity,
                    )
                    for d in diags
                ]
            state.diagnostics.extend(diags)
        state.chunk = tuple(state.objects.values())
        self.files[path] = state

    def _load_text(
        self, text: str, display: str, previous: FileState | None, state: FileState
    ) -> list[Loaded]:
        """Every document of the file, loaded; documents whose text and place did not change
        are taken from the previous read (the same objects, so nothing downstream re-runs)."""
        if display.endswith(".json"):
            return [_load(doc, display, line) for line, doc in parse_documents(text, display)]
        known = previous.documents if previous else {}
        parts = split_documents(text)
        out: list[Loaded] = []
        if 2 * sum(part not in known for _, part in parts) > len(parts) > 1:
            # Mostly new (a first read): one parser for the whole file is cheaper than one per
            # document; each document is then filed under the part whose lines hold it.
            firsts = [first for first, _ in parts]
            grouped: list[list[Loaded]] = [[] for _ in parts]
            for line, doc in parse_documents(text, display):
                grouped[bisect.bisect_right(firsts, line) - 1].append(_load(doc, display, line))
            for (first, part), loaded in zip(parts, grouped, strict=True):
                state.documents[part] = (first, loaded)
                out.extend(loaded)
            return out
        for first, part in parts:
            hit = known.get(part)
            items = _moved(hit[1], first - hit[0]) if hit is not None else None
            if items is None:
                try:
                    docs = parse_documents(part, display)
                except DocumentError as exc:
                    line = exc.line + first - 1 if exc.line else 0
                    raise DocumentError(line, exc.message) from None
                items = [_load(doc, display, line + first - 1) for line, doc in docs]
            state.documents[part] = (first, items)
            out.extend(items)
        return out

    def scan(self, touched: frozenset[Path] = frozenset()) -> bool:
        """Bring the file table up to date with the directory. True if anything changed.

        ``touched`` are paths the watcher reported: re-read even if their stat looks unchanged
        (two same-size writes within one timestamp tick).
        """
        if touched and self._known_files_only(touched):
            return self._rescan(p for p in touched if p.name.endswith(_SUFFIXES))
        seen: set[Path] = set()
        changed = False
        for path in self._walk():
            try:
                st = path.stat()
            except OSError:
                continue
            seen.add(path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            current = self.files.get(path)
            if current is None or current.signature != signature or path in touched:
                self._load_file(path, signature)
                changed = True
        for path in set(self.files) - seen:
            del self.files[path]
            changed = True
        return changed

    def _known_files_only(self, touched: frozenset[Path]) -> bool:
        """True when the watcher's paths are files already read (edited or deleted) or files
        this source never reads: then the walk can be skipped. A new file, a directory, or a
        hidden path (a ConfigMap's ``..data`` swap) needs the full walk."""
        for path in touched:
            if not path.is_relative_to(self.directory):
                return False
            if any(part.startswith(".") for part in path.relative_to(self.directory).parts[:-1]):
                return False
            if path.name.startswith("."):
                continue  # an editor's or our benchmark's temporary file
            if path.name.endswith(_SUFFIXES):
                if path not in self.files:
                    return False
            elif path.is_dir():
                return False
        return True

    def _rescan(self, paths: Iterable[Path]) -> bool:
        changed = False
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                if self.files.pop(path, None) is not None:
                    changed = True
                continue
            self._load_file(path, (st.st_ino, st.st_mtime_ns, st.st_size))
            changed = True
        return changed

    def publish(self) -> None:
        chunks = [self.files[p].chunk for p in sorted(self.files)]
        diags = [d for p in sorted(self.files) for d in self.files[p].diagnostics]
        if not self.directory.is_dir():
            diags.append(
                Diagnostic(
                    source=SourceRef(file=str(self.directory)),
                    field="",
                    reason="ConfigDirMissing",
                    message="the configuration directory does not exist",
                )
            )
        self.store.replace_chunks(self.name, chunks, diags)

    # -- watching ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Initial full sync, then apply changes until ``stop`` is set."""
        self.scan()
        self.publish()
        async for changes in watchfiles.awatch(
            self.directory,
            stop_event=stop,
            debounce=self.debounce_ms,
            step=2,  # ms between looks for more changes: the watch adds about this much latency
            recursive=True,
            watch_filter=None,
            force_polling=os.environ.get("SWITCHMAN_FORCE_POLLING") == "1",
            poll_delay_ms=100,
        ):
            if self.scan(frozenset(Path(p) for _, p in changes)):
                self.publish()
