"""crds/: up to date with the models, structural, and accepting Traefik's own fixtures.

The API server is not available here, so "structural" is checked offline as far as the rules can
be read off the YAML; the round trip validates every IngressRoute, TraefikService and Middleware in
Traefik's CRD fixtures against the generated ``spec`` schema with a small validator below (the
``jsonschema`` package is not a dependency, and a structural schema needs only a few keywords).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.crdgen import KINDS, VERSION, generate
from translators.models import load_object
from translators.models.traefik import TRAEFIK_GROUPS

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
FIXTURES = ROOT.parent / "shared" / "conformance" / "traefik-crd-fixtures"
REGENERATE = "run python -m controlplane.crdgen"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return generate()


@pytest.fixture(scope="module")
def crds(generated: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) → CRD, from the committed files."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name in generated:
        docs = [d for d in yaml.safe_load_all((CRDS / name).read_text()) if d is not None]
        assert len(docs) == 1, f"{name}: one CRD per file"
        doc = docs[0]
        out[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc
    return out


# -- up to date --------------------------------------------------------------------------------


def test_committed_crds_are_up_to_date(generated: dict[str, str]) -> None:
    committed = {p.name for p in CRDS.glob("*.yaml")}
    missing = sorted(set(generated) - committed)
    extra = sorted(committed - set(generated))
    assert not missing, f"crds/ lacks {missing}: {REGENERATE}"
    assert not extra, f"crds/ has files the generator does not make {extra}: {REGENERATE}"
    stale = sorted(n for n, text in generated.items() if (CRDS / n).read_text() != text)
    assert not stale, f"crds/ is stale ({', '.join(stale)}): {REGENERATE}"


def test_one_crd_per_group_and_kind(crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(crds) == {(g, k.kind) for g in TRAEFIK_GROUPS for k in KINDS}


# -- structural --------------------------------------------------------------------------------


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _schema_nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (not every dict: ``properties`` maps names to nodes)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _schema_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schema_nodes(schema["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("group", TRAEFIK_GROUPS)
@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_crd_is_structural(
    crds: dict[tuple[str, str], dict[str, Any]], group: str, kind: str
) -> None:
    crd = crds[(group, kind)]
    info = next(k for k in KINDS if k.kind == kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{info.plural}.{group}"
    spec = crd["spec"]
    assert spec["group"] == group
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    versions = spec["versions"]
    assert [v["name"] for v in versions] == [VERSION]
    assert versions[0]["served"] is True
    assert versions[0]["storage"] is True

    for path, node in _walk(crd):
        if isinstance(node, dict):
            assert "$ref" not in node and "$defs" not in node, f"{path}: not inlined"
            for key in ("anyOf", "oneOf", "allOf"):
                for branch in node.get(key, []):
                    assert branch.get("type") != "null", f"{path}.{key}: null branch"
            assert "title" not in node and "default" not in node, f"{path}: title/default"
            assert "nullable" not in node

    root = versions[0]["schema"]["openAPIV3Schema"]
    assert root["type"] == "object"
    assert set(root["properties"]) == {"spec"}, "apiVersion, kind and metadata are implicit"
    assert root["properties"]["spec"].get("x-kubernetes-preserve-unknown-fields") is True
    for path, node in _schema_nodes(root, "openAPIV3Schema"):
        if node.get("x-kubernetes-int-or-string") is True:
            assert "type" not in node, f"{path}: int-or-string has no type"
            continue
        assert isinstance(node.get("type"), str), f"{path}: every node needs a type"
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        if "enum" in node:
            assert node["type"] == "string" and all(isinstance(v, str) for v in node["enum"])
        if node["type"] == "object" and "properties" in node:
            assert set(node.get("required", [])) <= set(node["properties"]), path


def test_both_groups_share_one_schema(crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    for info in KINDS:
        a, b = (crds[(g, info.kind)]["spec"]["versions"][0]["schema"] for g in TRAEFIK_GROUPS)
        assert a["openAPIV3Schema"]["properties"] == b["openAPIV3Schema"]["properties"]


# -- round trip: Traefik's fixtures validate against the generated schemas ----------------------


def validate(value: Any, schema: dict[str, Any], path: str = "spec") -> list[str]:
    """The errors of ``value`` against a structural schema: types, required, enum, lengths.

    ``null`` counts as absent (the API server prunes nulls of non-nullable fields).
    """
    if value is None:
        return []
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not an integer or a string"]
    type_ = schema["type"]
    checks: dict[str, Any] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    if not checks[type_](value):
        return [f"{path}: {value!r} is not of type {type_}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if type_ == "string" and len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if type_ == "array":
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if type_ == "object":
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if value.get(name) is None:
                errors.append(f"{path}.{name}: required")
        for key, sub in value.items():
            if key in props:
                errors += validate(sub, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(sub, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field (would be pruned)")
    return errors


def _fixture_documents() -> list[tuple[str, dict[str, Any]]]:
    kinds = {k.kind for k in KINDS}
    out = []
    for path in sorted(FIXTURES.glob("*.yml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not isinstance(doc, dict) or doc.get("kind") not in kinds:
                continue
            group = str(doc.get("apiVersion", "")).partition("/")[0]
            if group in TRAEFIK_GROUPS:
                out.append((f"{path.name}#{i}", doc))
    return out


FIXTURE_DOCS = _fixture_documents() if FIXTURES.is_dir() else []


def _spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert isinstance(schema, dict)
    return schema


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no conformance corpus at {FIXTURES}")
def test_fixtures_cover_every_kind() -> None:
    assert {doc["kind"] for _, doc in FIXTURE_DOCS} == {k.kind for k in KINDS}


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no conformance corpus at {FIXTURES}")
@pytest.mark.parametrize(("name", "doc"), FIXTURE_DOCS, ids=[n for n, _ in FIXTURE_DOCS])
def test_traefik_fixture_validates(
    crds: dict[tuple[str, str], dict[str, Any]], name: str, doc: dict[str, Any]
) -> None:
    group = doc["apiVersion"].partition("/")[0]
    crd = crds[(group, doc["kind"])]
    errors = validate(doc.get("spec"), _spec_schema(crd))
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    if "spec" in root.get("required", []) and doc.get("spec") is None:
        errors.append("spec: required")
    assert not errors, f"{name}: {errors}"
    # The schema is never stricter than the model: what the API server stores, Switchman reads.
    obj, _, diags = load_object(doc, file=name, line=1)
    assert obj is not None, f"{name}: schema accepts what the model rejects: {diags}"


def test_validator_rejects_what_the_schema_forbids(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The round trip above means something: the validator does reject bad specs."""
    schema = _spec_schema(crds[("traefik.io", "IngressRoute")])
    good = {"routes": [{"match": "Host(`a`)", "services": [{"name": "s", "port": "http"}]}]}
    assert validate(good, schema) == []
    assert validate({**good, "futureField": {"x": 1}}, schema) == []
    assert validate({"routes": []}, schema)
    assert validate({"routes": [{"services": []}]}, schema)
    assert validate({"routes": [{"match": "m", "services": [{"name": "s", "port": 1.5}]}]}, schema)
    assert validate({"routes": [{"match": "m", "syntax": "v1"}]}, schema)
    assert validate({"routes": [{"match": "m", "priority": "high"}]}, schema)
    assert validate({"entryPoints": "web", **good}, schema)
