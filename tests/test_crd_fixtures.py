"""Traefik's own CRD provider fixtures: each translates without an exception, and Envoy accepts it.

Every ``*.yml`` of ``../shared/conformance/traefik-crd-fixtures/`` is loaded with that folder's
``services.yml`` (as Traefik's tests do), translated with the default options plus every entry
point the fixtures name, and the result is checked by the real Envoy (``envoy --mode validate``,
see ``tests/envoy_validate.py``). Some fixtures are deliberately invalid: they must produce
diagnostics, never an exception or a configuration Envoy would reject.

Translation runs once per fixture in the main thread; the Envoy validations run two at a time.
``pytest -s`` prints one summary line per fixture.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli import translate_directory
from tests.envoy_validate import validate_resources
from translators.errors import Diagnostic
from translators.ir import EntryPoint
from translators.options import Options

pytestmark = pytest.mark.envoy

FIXTURES_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "traefik-crd-fixtures"
)
if not FIXTURES_DIR.is_dir():  # pragma: no cover
    pytest.skip(f"Traefik CRD fixtures not found at {FIXTURES_DIR}", allow_module_level=True)
SERVICES = FIXTURES_DIR / "services.yml"
FIXTURES = sorted(p.name for p in FIXTURES_DIR.glob("*.yml"))

# The defaults (web, websecure) plus every other entry point the fixtures name.
OPTIONS = Options(
    entrypoints=(
        EntryPoint(name="web", address="0.0.0.0", port=8000),
        EntryPoint(name="websecure", address="0.0.0.0", port=8443),
        EntryPoint(name="foo", address="0.0.0.0", port=8001),
        EntryPoint(name="bar", address="0.0.0.0", port=8002),
    )
)


@dataclass
class Outcome:
    resources: dict[str, Any] | None = None
    diagnostics: list[Diagnostic] | None = None
    translate_error: BaseException | None = None
    validation: Future[None] | None = None

    def summary(self, name: str) -> str:
        if self.resources is None or self.diagnostics is None:
            return f"{name}: translation raised {self.translate_error!r}"
        routes = sum(
            len(vh.get("routes", []))
            for rc in self.resources["routes"]
            for vh in rc.get("virtual_hosts", [])
        )
        by_severity = collections.Counter(d.severity for d in self.diagnostics)
        return (
            f"{name}: {routes} routes, {len(self.resources['clusters'])} clusters, "
            f"diagnostics: {by_severity['error']} errors, {by_severity['warning']} warnings"
        )


def _translate(name: str, workdir: Path) -> Outcome:
    config = workdir / "config"
    config.mkdir(parents=True)
    for src in {FIXTURES_DIR / name, SERVICES}:
        (config / src.name).write_bytes(src.read_bytes())
    try:
        resources, diags = translate_directory(config, OPTIONS)
    except Exception as exc:  # reported by the fixture's own test
        return Outcome(translate_error=exc)
    return Outcome(resources=resources, diagnostics=diags)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    out: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name in FIXTURES:
            workdir = tmp_path_factory.mktemp(name.removesuffix(".yml"))
            outcome = _translate(name, workdir)
            if outcome.resources is not None:
                outcome.validation = pool.submit(validate_resources, outcome.resources, workdir)
            out[name] = outcome
        yield out


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_translates_and_envoy_accepts_it(name: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[name]
    print(outcome.summary(name))
    if outcome.translate_error is not None:
        raise outcome.translate_error
    assert outcome.validation is not None
    outcome.validation.result()  # raises EnvoyValidationError with Envoy's output
    assert outcome.diagnostics is not None
    assert not [d for d in outcome.diagnostics if d.reason == "EntryPointNotFound"]


def test_every_entry_point_the_fixtures_use_is_defined() -> None:
    used: set[str] = set()
    for path in FIXTURES_DIR.glob("*.yml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            spec = doc.get("spec") if isinstance(doc, dict) else None
            if isinstance(spec, dict) and isinstance(spec.get("entryPoints"), list):
                used.update(spec["entryPoints"])
    assert used, "no entry points found: has the fixture layout changed?"
    assert used <= {ep.name for ep in OPTIONS.entrypoints}
