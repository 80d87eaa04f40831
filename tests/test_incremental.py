"""Incremental translation equals a full translation, on random edit sequences.

The object pool is every golden input (middlewares, TraefikServices, broken references, both API
groups, EndpointSlices…) plus generated IngressRoutes; the sequences edit real files that a real
FileSource reads, so unchanged files keep their objects exactly as the running server does. After
every step the incremental result (world diagnostics, IR, diagnostics, and the Envoy resources'
bytes) must equal a translation from scratch of the same objects.
"""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.translate import objects_for
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from controlplane.xds.cache import make_snapshot
from translators.envoy import BackendCache, build_resources
from translators.incremental import IncrementalTranslator
from translators.ir import EntryPoint
from translators.options import Options
from translators.translate import translate_world
from translators.world import build_world

GOLDEN = Path(__file__).parent / "golden"
OPTIONS = Options(
    entrypoints=(
        EntryPoint(name="web", address="0.0.0.0", port=8000),
        EntryPoint(name="websecure", address="0.0.0.0", port=8443),
    )
)
FILES = ("a.yaml", "b.yaml", "c.yaml", "d/e.yaml")


def _pool() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(GOLDEN.glob("*.in.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    for i in range(40):
        docs.extend(objects_for(i))
    return docs


POOL = _pool()


def _routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec")
    routes = spec.get("routes") if isinstance(spec, dict) else None
    return [r for r in routes if isinstance(r, dict)] if isinstance(routes, list) else []


def _mutate(doc: dict[str, Any], rng: random.Random) -> None:
    """One plausible edit of one document (some of them make it invalid, on purpose)."""
    kind = doc.get("kind")
    meta = doc.setdefault("metadata", {})
    choice = rng.randrange(8)
    if choice == 0:
        meta["name"] = rng.choice(["svc1", "svc2", "whoami", "api", f"n{rng.randrange(5)}"])
    elif choice == 1 and kind in ("IngressRoute", "Middleware", "TraefikService"):
        doc["apiVersion"] = rng.choice(["traefik.io/v1alpha1", "traefik.containo.us/v1alpha1"])
    elif choice == 2 and kind == "EndpointSlice":
        for ep in doc.get("endpoints") or []:
            ep.setdefault("conditions", {})["serving"] = rng.random() < 0.7
            ep["addresses"] = [f"10.0.{rng.randrange(3)}.{rng.randrange(1, 4)}"]
    elif choice == 3 and kind == "EndpointSlice":
        doc.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/service-name"] = (
            rng.choice(["svc1", "svc2", "whoami", "api"])
        )
    elif choice == 4 and _routes(doc):
        route = rng.choice(_routes(doc))
        for svc in route.get("services") or []:
            if isinstance(svc, dict):
                svc["weight"] = rng.randrange(0, 4)
                svc["port"] = rng.choice([80, "http", 8080, 81])
    elif choice == 5 and _routes(doc):
        route = rng.choice(_routes(doc))
        host = rng.choice(["a.example.com", "b.example.com", "whoami.example.com"])
        route["match"] = rng.choice(
            [f"Host(`{host}`)", f"Host(`{host}`) && PathPrefix(`/x`)", "PathPrefix(`/`)"]
        )
    elif choice == 6 and _routes(doc):
        route = rng.choice(_routes(doc))
        names = [
            d["metadata"]["name"]
            for d in POOL
            if d.get("kind") == "Middleware" and isinstance(d.get("metadata"), dict)
        ]
        if names and rng.random() < 0.6:
            route["middlewares"] = [{"name": rng.choice(names)}]
        else:
            route.pop("middlewares", None)
    elif kind == "Service":
        for port in (doc.get("spec") or {}).get("ports") or []:
            port["port"] = rng.choice([80, 8080, 81])
    else:
        meta["namespace"] = rng.choice(["default", "team0", "apps"])


def _step(files: dict[str, list[dict[str, Any]]], rng: random.Random) -> None:
    name = rng.choice(FILES)
    docs = files[name]
    op = rng.randrange(6)
    if op == 0 and docs:
        docs.pop(rng.randrange(len(docs)))
    elif op == 1 or not docs:
        docs.append(copy.deepcopy(rng.choice(POOL)))
    elif op == 2:
        other = files[rng.choice(FILES)]
        if other:
            docs.append(other.pop(rng.randrange(len(other))))  # moved between files
    elif op == 3:
        files[name] = []
    else:
        for _ in range(rng.randrange(1, 3)):
            _mutate(rng.choice(docs), rng)


def _write(root: Path, files: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump_all(docs, sort_keys=False) if docs else ""
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


@pytest.mark.parametrize("seed", range(24))
def test_incremental_equals_full_on_random_edits(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    files: dict[str, list[dict[str, Any]]] = {
        name: [copy.deepcopy(rng.choice(POOL)) for _ in range(rng.randrange(8, 20))]
        for name in FILES
    }
    _check_steps(tmp_path, seed, OPTIONS, files, _step)


def _step_hosts(files: dict[str, list[dict[str, Any]]], rng: random.Random) -> None:
    """Edits that move routes between hosts, add and remove hosts, and now and then add a
    host-less route (the entry point leaves scoped routing) or move one between files."""
    docs = [d for f in files.values() for d in f if d.get("kind") == "IngressRoute"]
    if rng.random() < 0.1 and docs:
        src, dst = rng.sample(FILES, 2)
        if files[src]:
            files[dst].append(files[src].pop(rng.randrange(len(files[src]))))
        return
    route = rng.choice(_routes(rng.choice(docs))) if docs else None
    if route is None:
        return
    k, j = rng.randrange(12), rng.randrange(12)
    route["match"] = rng.choices(
        [
            f"Host(`h{k}.example.com`)",
            f"Host(`h{k}.example.com`) && PathPrefix(`/x{j}`)",
            f"Host(`h{k}.example.com`) || Host(`h{j}.example.com`)",
            f"PathPrefix(`/x{j}`)",
        ],
        weights=[4, 4, 2, 1],
    )[0]
    if rng.random() < 0.3:
        for svc in route.get("services") or []:
            svc["weight"] = rng.randrange(1, 4)


@pytest.mark.parametrize("seed", range(8))
def test_incremental_equals_full_with_route_scopes(tmp_path: Path, seed: int) -> None:
    """Route scopes (one table per host): the per-host tables and their splicing against a
    full build, on IngressRoutes that are all served and move between hosts."""
    rng = random.Random(seed)
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in FILES}
    for i in range(40):
        files[rng.choice(FILES)].extend(objects_for(i))
    for doc in (d for f in files.values() for d in f if d.get("kind") == "IngressRoute"):
        for route in _routes(doc):
            route["match"] = f"Host(`h{rng.randrange(12)}.example.com`)"
    options = replace(OPTIONS, route_scopes="host")
    scoped = _check_steps(tmp_path, seed, options, files, _step_hosts)
    assert 0 < scoped < 25, scoped  # both layouts were exercised


def _check_steps(
    tmp_path: Path,
    seed: int,
    options: Options,
    files: dict[str, list[dict[str, Any]]],
    edit: Any,
) -> int:
    """25 steps of ``edit``; after each, incremental and full translation must agree. Returns
    in how many steps the web entry point was scoped."""
    rng = random.Random(seed)
    scoped = 0
    store = ResourceStore([FileSource.name])
    source = FileSource(tmp_path, store)
    incremental = IncrementalTranslator(options)
    backend = BackendCache()
    snapshot = None
    recomputed: list[int] = []
    for step in range(25):
        _write(tmp_path, files)
        source.scan()
        source.publish()
        _, wdiags_i, got = incremental.update(store.chunks())
        world_f, wdiags_f = build_world(store.objects())
        want = translate_world(world_f, options)
        assert wdiags_i == wdiags_f, f"seed {seed} step {step}: world diagnostics differ"
        assert got.diagnostics == want.diagnostics, f"seed {seed} step {step}: diagnostics"
        assert got.ir == want.ir, f"seed {seed} step {step}: IR differs"
        res_i = build_resources(got.ir, backend)
        res_f = build_resources(want.ir)
        for type_url, entries in res_i.by_type.items():
            names = [n for n, _ in entries]
            assert names == sorted(names) == [n for n, _ in res_f.by_type[type_url]], type_url
        snapshot = make_snapshot(res_i, snapshot)
        fresh = make_snapshot(res_f)
        for type_url, ts in fresh.types.items():
            mine = snapshot.types[type_url].resources
            assert {n: p.version for n, p in mine.items()} == {
                n: p.version for n, p in ts.resources.items()
            }, f"seed {seed} step {step}: {type_url} differs"
            assert snapshot.types[type_url].version == ts.version
            assert snapshot.types[type_url].size == ts.size
        recomputed.append(incremental.last_recomputed)
        scoped += any(lst.scoped for lst in got.ir.listeners if lst.name == "web")
        edit(files, rng)
    # The point of it: most steps translate a few IngressRoutes, not all of them.
    assert min(recomputed[1:]) < len(incremental._results) or not incremental._results
    return scoped


def test_one_edit_recomputes_only_its_readers(tmp_path: Path) -> None:
    docs = [d for i in range(30) for d in objects_for(i)]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs[:45], sort_keys=False))
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump_all(docs[45:], sort_keys=False))
    store = ResourceStore([FileSource.name])
    source = FileSource(tmp_path, store)
    source.scan()
    source.publish()
    inc = IncrementalTranslator(OPTIONS)
    inc.update(store.chunks())
    assert inc.last_recomputed == 30
    # Edit one EndpointSlice (svc20's, in rest.yaml): only svc20's IngressRoute is translated.
    for d in docs[45:]:
        if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == "svc20-abcde":
            d["endpoints"][0]["addresses"] = ["10.9.9.9"]
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump_all(docs[45:], sort_keys=False))
    source.scan()
    source.publish()
    # Every object of the re-read file is new, but only changed content counts as a change.
    _, _, result = inc.update(store.chunks())
    assert inc.last_recomputed == 1
    [cluster] = [c for c in result.ir.clusters if c.service.endswith("/svc20")]
    assert "10.9.9.9" in {e.address for e in cluster.endpoints}


def test_scan_with_the_watchers_paths_reads_only_those_and_walks_when_it_must(
    tmp_path: Path,
) -> None:
    docs = [d for i in range(6) for d in objects_for(i)]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump_all(docs[:9], sort_keys=False))
    b.write_text(yaml.safe_dump_all(docs[9:], sort_keys=False))
    store = ResourceStore([FileSource.name])
    source = FileSource(tmp_path, store)
    source.scan()
    before = dict(source.files)
    # An edit to a known file: only that file is read again.
    a.write_text(yaml.safe_dump_all(docs[:6], sort_keys=False))
    assert source.scan(frozenset({a}))
    assert source.files[b] is before[b] and source.files[a] is not before[a]
    assert len(source.files[a].objects) == 6
    # A new file the watcher names: the walk runs and finds it (and a file it did not name).
    c, d = tmp_path / "sub" / "c.yaml", tmp_path / "d.yaml"
    c.parent.mkdir()
    c.write_text(yaml.safe_dump_all(docs[:3], sort_keys=False))
    d.write_text(yaml.safe_dump_all(docs[3:6], sort_keys=False))
    assert source.scan(frozenset({c}))
    assert {c, d} <= set(source.files)
    # A deleted known file; a hidden temporary file the source never reads.
    b.unlink()
    hidden = tmp_path / ".b.yaml.tmp"
    hidden.write_text("not: [yaml")
    assert source.scan(frozenset({b, hidden}))
    assert b not in source.files and hidden not in source.files
    # A change inside a hidden directory (a ConfigMap's ..data swap): the full walk runs.
    data = tmp_path / "..data"
    data.mkdir()
    e = tmp_path / "e.yaml"
    e.write_text(yaml.safe_dump_all(docs[6:9], sort_keys=False))
    assert source.scan(frozenset({data / "x"}))
    assert e in source.files
