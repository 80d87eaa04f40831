"""Bad input never takes anything down (DESIGN.md §6).

Every case writes a directory holding one good IngressRoute (with its Service and EndpointSlice)
and one kind of bad input, runs the real path (FileSource → ResourceStore → build_world →
translate_world → build_resources, via ``translate_directory``) and checks:
- a diagnostic with the right reason, file, object (kind/namespace/name), field path and line;
- the good route is still in the RouteConfiguration (and the bad one is not, when it must not be);
- nothing raised, and the real Envoy accepts what was produced.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import translate_directory
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from tests.envoy_validate import validate_resources
from translators.envoy import ROUTE, build_resources
from translators.envoy.wire import message_of
from translators.errors import Diagnostic
from translators.options import Options
from translators.translate import translate_world
from translators.world import build_world

REPO = Path(__file__).resolve().parents[1]

GOOD = """apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: good, namespace: default}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`good.example.com`)
    services: [{name: whoami, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: whoami, namespace: default}
spec:
  ports: [{name: http, port: 80}, {name: admin, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: whoami-1
  namespace: default
  labels: {kubernetes.io/service-name: whoami}
addressType: IPv4
endpoints: [{addresses: ["10.0.0.1"], conditions: {ready: true}}]
ports: [{name: http, port: 8080}, {name: admin, port: 9001}]
"""

# The bad file starts with this line, so its first document is at line 2.
HEADER = "# bad input below\n"


def ingressroute(
    services: str | None = "[{name: whoami, port: 80}]",
    *,
    name: str = "bad",
    match: str = "Host(`bad.example.com`)",
    entrypoints: str = "[web]",
    route_extra: str = "",
    spec_extra: str = "",
    group: str = "traefik.io",
) -> str:
    svc = "" if services is None else f"    services: {services}\n"
    return (
        f"apiVersion: {group}/v1alpha1\n"
        "kind: IngressRoute\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        f"  entryPoints: {entrypoints}\n"
        f"{spec_extra}"
        "  routes:\n"
        f'  - match: "{match}"\n'
        f"{route_extra}{svc}"
    )


def service(name: str, namespace: str = "default", *, extra: str = "", slice_: bool = True) -> str:
    out = (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  ports: [{{name: http, port: 80}}]\n{extra}"
    )
    if slice_:
        out += (
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata:\n  name: {name}-1\n  namespace: {namespace}\n"
            f"  labels: {{kubernetes.io/service-name: {name}}}\n"
            'addressType: IPv4\nendpoints: [{addresses: ["10.0.1.1"]}]\n'
            "ports: [{name: http, port: 8080}]\n"
        )
    return out


def traefikservice(name: str, body: str, namespace: str = "default") -> str:
    return (
        "apiVersion: traefik.io/v1alpha1\nkind: TraefikService\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"
    )


def docs(*parts: str) -> str:
    return HEADER + "---\n".join(parts)


TS = "[{name: ts, kind: TraefikService}]"
DNF_BOMB = " && ".join(f"(Path(`/{i}`) || Path(`/x{i}`))" for i in range(7))  # 2**7 = 128


@dataclass(frozen=True)
class Output:
    resources: dict[str, Any]
    diagnostics: list[Diagnostic]

    @property
    def served(self) -> set[str]:
        """IngressRoutes with at least one route in some RouteConfiguration ("default-good")."""
        return {
            route["name"].split("/")[0].rsplit("-", 1)[0]
            for rc in self.resources["routes"]
            for vh in rc.get("virtual_hosts", [])
            for route in vh.get("routes", [])
        }

    def find(self, reason: str) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.reason == reason]


def run(tmp_path: Path, files: dict[str, str | bytes], **options: Any) -> Output:
    config = tmp_path / "config"
    config.mkdir(parents=True)
    for name, content in {"good.yaml": GOOD, **files}.items():
        path = config / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    resources, diags = translate_directory(config, Options(**options))
    return Output(resources, diags)


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str | bytes]
    reason: str
    field: str
    kind: str = "IngressRoute"
    name: str = "bad"
    namespace: str = "default"
    file: str = "bad.yaml"
    line: int | None = 2
    severity: str = "error"
    message: str = ""  # a substring the message must contain
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    bad_served: bool | None = False  # None: no IngressRoute "bad" to look for


def bad(*parts: str) -> dict[str, str | bytes]:
    return {"bad.yaml": docs(*parts)}


R0 = "spec.routes[0]"
S0 = f"{R0}.services[0]"
MIDDLEWARE = (  # a type not translated yet: the route is not served
    "apiVersion: traefik.io/v1alpha1\nkind: Middleware\n"
    "metadata: {name: strip, namespace: default}\nspec: {plugin: {demo: {}}}\n"
)
SECURITY_MIDDLEWARE = (  # a security middleware that cannot be translated: answers 500
    "apiVersion: traefik.io/v1alpha1\nkind: Middleware\n"
    "metadata: {name: auth, namespace: default}\n"
    'spec: {forwardAuth: {address: "http://a", forwardBody: true}}\n'
)
OTHER_TS = traefikservice(
    "ts", "  weighted:\n    services: [{name: whoami, port: 80}]\n", namespace="other"
)

SLICE = service("whoami").split("---\n")[1]
LABEL = "labels: {kubernetes.io/service-name: whoami}"

CASES = [
    # -- files that do not parse ------------------------------------------------------------------
    Case(
        "yaml-syntax",
        {"bad.yaml": "apiVersion: v1\nkind: Service\nmetadata: name: x\n"},
        "InvalidYAML",
        "",
        kind="",
        name="",
        namespace="",
        line=3,
        bad_served=None,
    ),
    Case(
        "json-syntax",
        {"bad.json": '{\n  "apiVersion": "v1",\n  "kind": "Service"\n  "metadata": {}\n}\n'},
        "InvalidJSON",
        "",
        kind="",
        name="",
        namespace="",
        file="bad.json",
        line=4,
        message="delimiter",
        bad_served=None,
    ),
    Case(
        "non-utf8",
        {"bad.yaml": b"apiVersion: v1\nkind: Service\nmetadata: {name: caf\xe9}\n"},
        "InvalidYAML",
        "",
        kind="",
        name="",
        namespace="",
        line=None,
        message="utf-8",
        bad_served=None,
    ),
    # -- documents that are not objects -----------------------------------------------------------
    Case(
        "not-a-mapping",
        bad("- just\n- a list\n"),
        "InvalidObject",
        "",
        kind="",
        name="",
        namespace="",
        message="expected a mapping, found list",
        bad_served=None,
    ),
    Case(
        "missing-apiversion",
        bad(ingressroute().replace("apiVersion: traefik.io/v1alpha1\n", "")),
        "InvalidObject",
        "apiVersion",
    ),
    Case(
        "missing-kind",
        bad(ingressroute().replace("kind: IngressRoute\n", "")),
        "InvalidObject",
        "kind",
        kind="",
    ),
    Case(
        "missing-name",
        bad(ingressroute().replace("name: bad, ", "")),
        "InvalidObject",
        "metadata.name",
        name="",
    ),
    # -- wrong field types ------------------------------------------------------------------------
    Case(
        "routes-not-a-list",
        bad(ingressroute().replace("  routes:\n  - match", "  routes:\n    match")),
        "InvalidObject",
        "spec.routes",
    ),
    Case(
        "weight-a-string",
        bad(ingressroute("[{name: whoami, port: 80, weight: ten}]")),
        "InvalidObject",
        f"{S0}.weight",
    ),
    Case(
        "unknown-service-kind",
        bad(ingressroute("[{name: whoami, port: 80, kind: Foo}]")),
        "InvalidObject",
        f"{S0}.kind",
    ),
    Case(
        "empty-routes",
        bad(ingressroute().split("  routes:")[0] + "  routes: []\n"),
        "InvalidObject",
        "spec.routes",
    ),
    # -- routes that cannot be served -------------------------------------------------------------
    Case("route-without-services", bad(ingressroute(None)), "NoService", f"{R0}.services"),
    Case(
        "route-kind-foo",
        bad(ingressroute(route_extra="    kind: Foo\n")),
        "InvalidRoute",
        f"{R0}.kind",
    ),
    Case(
        "rule-unbalanced-backtick",
        bad(ingressroute(match="Host(`bad.example.com)")),
        "InvalidRule",
        f"{R0}.match",
        message="column 6",
    ),
    Case(
        "rule-unknown-matcher",
        bad(ingressroute(match="Host(`bad.example.com`) && Bar(`x`)")),
        "InvalidRule",
        f"{R0}.match",
        message="column 28: unknown matcher 'Bar'",
    ),
    Case(
        "rule-dnf-over-limit",
        bad(ingressroute(match=DNF_BOMB)),
        "InvalidRule",
        f"{R0}.match",
        message="more than 64 alternatives",
    ),
    Case(
        "unknown-entrypoint",
        bad(ingressroute(entrypoints="[nope]")),
        "EntryPointNotFound",
        "spec.entryPoints[0]",
    ),
    Case(
        "one-unknown-entrypoint-of-two",
        bad(ingressroute(entrypoints="[nope, web]")),
        "EntryPointNotFound",
        "spec.entryPoints[0]",
        bad_served=True,
    ),
    Case(
        "ingressroute-tls",
        bad(ingressroute(spec_extra="  tls: {secretName: cert}\n")),
        "SecretNotFound",
        "spec.tls.secretName",
    ),
    # -- broken references ------------------------------------------------------------------------
    Case(
        "service-not-found",
        bad(ingressroute("[{name: missing, port: 80}]")),
        "ServiceNotFound",
        f"{S0}.name",
    ),
    Case(
        "port-number-not-found",
        bad(ingressroute("[{name: whoami, port: 81}]")),
        "PortNotFound",
        f"{S0}.port",
    ),
    Case(
        "port-name-not-found",
        bad(ingressroute("[{name: whoami, port: grpc}]")),
        "PortNotFound",
        f"{S0}.port",
    ),
    Case(
        "service-without-endpoints",
        bad(ingressroute("[{name: empty, port: 80}]"), service("empty", slice_=False)),
        "EmptyService",
        f"{S0}.name",
    ),
    Case(
        "cross-namespace-service",
        bad(
            ingressroute("[{name: whoami, namespace: other, port: 80}]"), service("whoami", "other")
        ),
        "CrossNamespaceRefused",
        f"{S0}.namespace",
    ),
    Case(
        "cross-namespace-traefikservice",
        bad(ingressroute("[{name: ts, namespace: other, kind: TraefikService}]"), OTHER_TS),
        "CrossNamespaceRefused",
        f"{S0}.namespace",
    ),
    Case(
        "traefikservice-not-found",
        bad(ingressroute(TS)),
        "ServiceNotFound",
        f"{S0}.name",
    ),
    Case(
        "traefikservice-cycle",
        bad(
            traefikservice("b", "  weighted:\n    services: [{name: ts, kind: TraefikService}]\n"),
            traefikservice("ts", "  weighted:\n    services: [{name: b, kind: TraefikService}]\n"),
            ingressroute(TS),
        ),
        "CyclicReference",
        "spec.weighted.services[0].name",
        kind="TraefikService",
        name="b",
        message="default/ts → default/b → default/ts",
    ),
    Case(
        "traefikservice-failover-without-service",
        bad(traefikservice("ts", "  failover: {}\n"), ingressroute(TS)),
        "InvalidObject",
        "spec.failover.service",
        kind="TraefikService",
        name="ts",
    ),
    Case(
        "traefikservice-mirroring-without-name",
        bad(traefikservice("ts", "  mirroring: {}\n"), ingressroute(TS)),
        "InvalidObject",
        "spec.mirroring.name",
        kind="TraefikService",
        name="ts",
    ),
    Case(
        "traefikservice-mirroring-percent-over-100",
        bad(
            traefikservice(
                "ts",
                "  mirroring:\n    name: whoami\n    port: 80\n"
                "    mirrors: [{name: whoami, port: 80, percent: 101}]\n",
            ),
            ingressroute(TS),
        ),
        "InvalidService",
        "spec.mirroring.mirrors[0].percent",
        kind="TraefikService",
        name="ts",
    ),
    Case(
        "invalid-scheme",
        bad(ingressroute("[{name: whoami, port: 80, scheme: ftp}]")),
        "InvalidScheme",
        f"{S0}.scheme",
    ),
    Case(
        "externalname-service",
        bad(
            ingressroute("[{name: ext, port: 80}]"),
            service("ext", extra="  type: ExternalName\n  externalName: example.com\n"),
        ),
        "ExternalNameRefused",
        f"{S0}.name",
    ),
    Case(
        "externalname-service-allowed",
        bad(
            ingressroute("[{name: ext, port: 80}]"),
            service("ext", extra="  type: ExternalName\n  externalName: example.com\n"),
        ),
        "Unsupported",
        f"{S0}.name",
        options={"allow_external_name_services": True},
    ),
    Case(
        "middleware-not-found",
        bad(ingressroute(route_extra="    middlewares: [{name: strip}]\n")),
        "MiddlewareNotFound",
        f"{R0}.middlewares[0].name",
    ),
    Case(
        "middleware-not-translated",
        bad(ingressroute(route_extra="    middlewares: [{name: strip}]\n"), MIDDLEWARE),
        "Unsupported",
        "spec.plugin",
        kind="Middleware",
        name="strip",
        line=12,
        message="not served",
    ),
    Case(
        "security-middleware-fails-closed",
        bad(ingressroute(route_extra="    middlewares: [{name: auth}]\n"), SECURITY_MIDDLEWARE),
        "Unsupported",
        "spec.forwardAuth.maxBodySize",
        kind="Middleware",
        name="auth",
        line=12,
        message="answers 500",
        bad_served=True,
    ),
    Case(
        "service-level-middlewares",
        bad(ingressroute("[{name: whoami, port: 80, middlewares: [{name: strip}]}]"), MIDDLEWARE),
        "Unsupported",
        f"{S0}.middlewares",
    ),
    Case(
        "healthcheck-on-clusterip",
        bad(ingressroute("[{name: whoami, port: 80, healthCheck: {path: /health}}]")),
        "InvalidService",
        f"{S0}.healthCheck",
    ),
    # -- objects the world reports ----------------------------------------------------------------
    Case(
        "endpointslice-without-service-label",
        bad(SLICE.replace("whoami-1", "whoami-nolabel").replace(f"  {LABEL}\n", "")),
        "InvalidObject",
        "metadata.labels",
        kind="EndpointSlice",
        name="whoami-nolabel",
        severity="warning",
        bad_served=None,
    ),
    Case(
        "endpointslice-fqdn",
        bad(SLICE.replace("whoami-1", "whoami-fqdn").replace("IPv4", "FQDN")),
        "Unsupported",
        "addressType",
        kind="EndpointSlice",
        name="whoami-fqdn",
        severity="warning",
        bad_served=None,
    ),
    Case(
        "duplicate-object",
        {"zz-dup.yaml": docs(service("whoami", slice_=False))},
        "DuplicateObject",
        "metadata.name",
        kind="Service",
        name="whoami",
        file="zz-dup.yaml",
        message="good.yaml",
        bad_served=None,
    ),
    Case(
        "shadowed-by-traefik-io",
        bad(ingressroute("[{name: missing, port: 80}]", name="good", group="traefik.containo.us")),
        "Shadowed",
        "metadata.name",
        name="good",
        severity="warning",
        bad_served=None,
    ),
    Case(
        "unknown-traefik-kind",
        bad("apiVersion: traefik.io/v1alpha1\nkind: IngressRouteFoo\nmetadata: {name: x}\n"),
        "UnknownKind",
        "kind",
        kind="IngressRouteFoo",
        name="x",
        severity="warning",
        bad_served=None,
    ),
    Case(
        "known-untranslated-kind",
        bad("apiVersion: traefik.io/v1alpha1\nkind: TLSStore\nmetadata: {name: x}\nspec: {}\n"),
        "Unsupported",
        "kind",
        kind="TLSStore",
        name="x",
        severity="warning",
        bad_served=None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_reported_and_the_rest_keeps_working(case: Case, tmp_path: Path) -> None:
    out = run(tmp_path, case.files, **case.options)
    found = out.find(case.reason)
    assert found, f"no {case.reason} diagnostic; got:\n" + "\n".join(map(str, out.diagnostics))
    d = found[0]
    assert len(found) == 1, "\n".join(map(str, found))
    assert d.severity == case.severity, str(d)
    assert d.source.file == case.file, str(d)
    assert (d.source.kind, d.source.name) == (case.kind, case.name), str(d)
    if case.kind:
        assert d.source.namespace == case.namespace, str(d)
    assert d.field == case.field, str(d)
    if case.line is not None:
        assert d.source.line == case.line, str(d)
    assert case.message.lower() in d.message.lower(), str(d)
    # The good route is untouched, and nothing else went wrong because of the bad input.
    assert "default-good" in out.served
    if case.bad_served is not None:
        assert ("default-bad" in out.served) is case.bad_served, out.served
    if case.reason != "Shadowed":
        assert not out.find("ServiceNotFound") or case.reason == "ServiceNotFound"
    validate_resources(out.resources, tmp_path)


def test_port_a_list_names_the_field(tmp_path: Path) -> None:
    out = run(tmp_path, bad(ingressroute("[{name: whoami, port: [80]}]")))
    found = out.find("InvalidObject")
    assert [(d.source.file, d.source.name, d.field) for d in found] == [
        ("bad.yaml", "bad", f"{S0}.port")
    ]
    assert "default-good" in out.served


def test_empty_entrypoints_mean_all_entrypoints(tmp_path: Path) -> None:
    out = run(tmp_path, bad(ingressroute(entrypoints="[]")))
    assert out.served == {"default-good", "default-bad"}


@pytest.mark.parametrize(
    ("files", "kind", "name", "field"),
    [
        pytest.param(
            bad(SLICE.replace("whoami-1", "whoami-2").replace("10.0.1.1", "not-an-ip")),
            "EndpointSlice",
            "whoami-2",
            "endpoints[0].addresses[0]",
            id="endpoint-address-not-an-ip",
        ),
        pytest.param(
            bad(ingressroute(match="PathRegexp(`^/([a-z0-9]{1,64}/){1,10}$`)")),
            "IngressRoute",
            "bad",
            f"{R0}.match",
            id="regex-over-envoy-program-size",
        ),
        pytest.param(
            bad(ingressroute(match='Header(\\"X-A\\\\nB\\", `v`)')),
            "IngressRoute",
            "bad",
            f"{R0}.match",
            id="header-name-with-newline",
        ),
    ],
)
def test_input_envoy_would_reject_is_refused_before_envoy(
    files: dict[str, str | bytes], kind: str, name: str, field: str, tmp_path: Path
) -> None:
    out = run(tmp_path, files)
    validate_resources(out.resources, tmp_path)
    assert "default-good" in out.served
    assert "default-bad" not in out.served
    assert [
        d for d in out.diagnostics if (d.source.kind, d.source.name, d.field) == (kind, name, field)
    ], "\n".join(map(str, out.diagnostics))


@pytest.mark.parametrize(
    ("files", "options"),
    [
        pytest.param(
            bad(ingressroute("[{name: empty, port: 80}]"), service("empty", slice_=False)),
            {"allow_empty_services": True},
            id="empty-service-allowed",
        ),
        pytest.param(
            bad(
                ingressroute("[{name: whoami, namespace: other, port: 80}]"),
                service("whoami", "other"),
            ),
            {"allow_cross_namespace": True},
            id="cross-namespace-service-allowed",
        ),
        pytest.param(
            bad(
                ingressroute("[{name: ts, namespace: other, kind: TraefikService}]"),
                OTHER_TS,
                service("whoami", "other"),
            ),
            {"allow_cross_namespace": True},
            id="cross-namespace-traefikservice-allowed",
        ),
    ],
)
def test_refusals_lift_with_their_option(
    files: dict[str, str | bytes], options: dict[str, Any], tmp_path: Path
) -> None:
    refused = run(tmp_path / "off", files)
    assert refused.served == {"default-good"}
    allowed = run(tmp_path / "on", files, **options)
    assert allowed.served == {"default-good", "default-bad"}
    assert [d for d in allowed.diagnostics if d.severity == "error"] == []
    validate_resources(allowed.resources, tmp_path / "on")


def test_shadowed_object_loses_to_traefik_io(tmp_path: Path) -> None:
    # The traefik.containo.us copy sorts first by file name and points at a missing Service:
    # if it won, the good route would be dropped with ServiceNotFound.
    files: dict[str, str | bytes] = {
        "a-old.yaml": ingressroute(
            "[{name: missing, port: 80}]", name="good", group="traefik.containo.us"
        )
    }
    out = run(tmp_path, files)
    [shadowed] = out.find("Shadowed")
    assert shadowed.source.file == "a-old.yaml"
    assert shadowed.source.api_version == "traefik.containo.us/v1alpha1"
    assert out.find("ServiceNotFound") == []
    assert out.served == {"default-good"}


# -- FileSource: the last good objects keep serving ----------------------------------------------


def _source(directory: Path) -> tuple[FileSource, ResourceStore]:
    store = ResourceStore([FileSource.name])
    return FileSource(directory, store), store


def _scan(source: FileSource) -> None:
    source.scan()
    source.publish()


def _served(store: ResourceStore) -> set[str]:
    world, _ = build_world(store.objects())
    result = translate_world(world, Options())
    resources = build_resources(result.ir)
    return {
        r.name.split("/")[0].rsplit("-", 1)[0]
        for _, rc in resources.by_type[ROUTE]
        for vh in message_of(rc).virtual_hosts
        for r in vh.routes
    }


def test_broken_file_keeps_its_last_good_objects(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    source, store = _source(tmp_path)
    _scan(source)
    before = store.objects()
    assert len(before) == 3
    assert store.diagnostics() == []

    path.write_text(GOOD + "---\napiVersion: v1\nmetadata: name: x\n")
    _scan(source)
    assert store.objects() == before
    [d] = store.diagnostics()
    assert (d.reason, d.source.file, d.source.line) == (
        "InvalidYAML",
        "good.yaml",
        GOOD.count("\n") + 3,
    )
    assert "last good objects (3) keep serving" in d.message
    assert _served(store) == {"default-good"}

    path.unlink()
    _scan(source)
    assert store.objects() == []
    assert store.diagnostics() == []
    assert _served(store) == set()


def test_object_that_stops_validating_keeps_its_last_good_version(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    app = tmp_path / "app.yaml"
    app.write_text(ingressroute())
    source, store = _source(tmp_path)
    _scan(source)
    assert _served(store) == {"default-good", "default-bad"}

    app.write_text(ingressroute().replace("[web]", "{web: 1}"))
    _scan(source)
    [d] = store.diagnostics()
    assert (d.reason, d.source.file, d.source.name, d.field) == (
        "InvalidObject",
        "app.yaml",
        "bad",
        "spec.entryPoints",
    )
    assert "the last good version keeps serving" in d.message
    assert _served(store) == {"default-good", "default-bad"}

    # A new object that never validated has no last good version.
    app.write_text(ingressroute(name="other").replace("[web]", "{}"))
    _scan(source)
    assert _served(store) == {"default-good"}
    assert "last good" not in store.diagnostics()[0].message


def test_symlink_loop_reads_each_file_once(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "good.yaml").write_text(GOOD)
    (config / "loop").symlink_to(config, target_is_directory=True)
    (config / "loop2").symlink_to(config, target_is_directory=True)  # was exponential
    _, diags = translate_directory(config, Options())
    assert [str(d) for d in diags] == []


# -- switchman translate: exit codes -------------------------------------------------------------


def _translate_cli(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", "translate", str(directory)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "good.yaml").write_text(GOOD)
    proc = _translate_cli(clean)
    assert proc.returncode == 0, proc.stderr
    assert "default-good" in proc.stdout

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "good.yaml").write_text(GOOD)
    (broken / "bad.yaml").write_text(docs(ingressroute("[{name: whoami, port: 81}]")))
    proc = _translate_cli(broken)
    assert proc.returncode == 1, proc.stderr
    assert "default-good" in proc.stdout
    line = next(ln for ln in proc.stderr.splitlines() if "[PortNotFound]" in ln)
    assert line.startswith("error: bad.yaml:2, IngressRoute default/bad:")
    assert f"{S0}.port:" in line

    proc = _translate_cli(tmp_path / "missing")
    assert proc.returncode == 2
    assert "not a directory" in proc.stderr
