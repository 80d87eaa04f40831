"""Golden files at both boundaries (Envoy Gateway style).

``tests/golden/<case>.in.yaml`` → ``<case>.ir.yaml`` (the IR and every diagnostic) and
``<case>.envoy.yaml`` (the Envoy resources as protojson). ``pytest --update-golden`` rewrites them;
CI never passes it. A golden without its input fails the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from tests.envoy_validate import validate_resources
from translators.envoy import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, build_resources
from translators.envoy.common import to_dict
from translators.envoy.secret import redact
from translators.envoy.wire import message_of
from translators.errors import Diagnostic
from translators.ir import EntryPoint, to_plain
from translators.options import Options
from translators.translate import translate_world
from translators.world import World, build_world

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))
OPTIONS = Options(
    entrypoints=(
        EntryPoint(name="web", address="0.0.0.0", port=8000),
        EntryPoint(name="websecure", address="0.0.0.0", port=8443),
    )
)


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=100, allow_unicode=True)


def _load(case: str, tmp: Path) -> tuple[ResourceStore, World, list[Diagnostic]]:
    # Only this case's file: the golden directory holds every case.
    shutil.copy(GOLDEN / f"{case}.in.yaml", tmp / f"{case}.in.yaml")
    store = ResourceStore([FileSource.name])
    source = FileSource(tmp, store)
    source.scan()
    source.publish()
    world, world_diags = build_world(store.objects())
    return store, world, world_diags


def _translate(case: str, tmp: Path) -> tuple[str, str]:
    store, world, world_diags = _load(case, tmp)
    result = translate_world(world, OPTIONS)
    diags = sorted({*store.diagnostics(), *world_diags, *result.diagnostics})
    ir_doc = {
        "ir": to_plain(result.ir),
        "diagnostics": [d.as_dict() for d in diags],
    }
    resources = build_resources(result.ir)
    envoy_doc = {
        key: [to_dict(message_of(m)) for _, m in resources.by_type[url]]
        for key, url in (
            ("clusters", CLUSTER),
            ("endpoints", ENDPOINT),
            ("listeners", LISTENER),
            ("routes", ROUTE),
        )
    }
    if resources.by_type[SECRET]:  # private keys redacted, as in /debug
        envoy_doc["secrets"] = [
            redact(to_dict(message_of(m))) for _, m in resources.by_type[SECRET]
        ]
    return _dump(ir_doc), _dump(envoy_doc)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool, tmp_path: Path) -> None:
    ir_text, envoy_text = _translate(case, tmp_path)
    for suffix, text in ((".ir.yaml", ir_text), (".envoy.yaml", envoy_text)):
        path = GOLDEN / f"{case}{suffix}"
        if update_golden:
            path.write_text(text)
            continue
        assert path.exists(), f"{path.name} missing: run pytest --update-golden"
        assert text == path.read_text(), (
            f"{path.name} differs: run pytest --update-golden and review"
        )


def test_no_orphaned_goldens() -> None:
    outputs = {p.name for p in GOLDEN.glob("*.yaml") if not p.name.endswith(".in.yaml")}
    expected = {f"{c}{s}" for c in CASES for s in (".ir.yaml", ".envoy.yaml")}
    assert outputs <= expected, f"orphaned golden files: {sorted(outputs - expected)}"
    assert len(CASES) >= 8


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_golden_config_is_accepted_by_envoy(case: str, tmp_path: Path) -> None:
    """Every golden case's Envoy resources pass ``envoy --mode validate`` as one bootstrap."""
    _, world, _ = _load(case, tmp_path)
    validate_resources(build_resources(translate_world(world, OPTIONS).ir), tmp_path / "envoy")
