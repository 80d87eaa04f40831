"""Traefik's own rule test vectors, through the translator and a real Envoy.

Every case of ``traefik-http-rules.json`` gets its own entry point (an Envoy listener) holding
only that case's rule, routed to one backend. Each request of the case is sent over a real socket:
Traefik's "match" must come back as 200 from that backend, "no match" as a 404 (a 400 from Envoy's
HTTP codec also means "not routed"; it is counted and printed). Cases that must fail have to
produce a diagnostic and serve nothing.

What cannot be reproduced over a real socket is skipped with its reason printed:
- ``go_specific`` requests (header-map details of Go's test harness);
- client addresses that are not IPs, or IPv6 peers other than ``::1``. IPv4 peers are moved into
  127.0.0.0/8 by replacing the first octet with 127, in the request and in the rule alike: CIDR
  membership is preserved for prefixes of /8 and longer, which is all the corpus uses.
- Provider-precedence ties: Switchman has one provider (ties go by router name).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.localrun import Backend, Envoy, free_ports
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from tests.rule_reference import evaluate, request_from_vector
from tests.support import SHARED, send_raw, service_yaml
from tests.xds_support import XdsServer
from translators.envoy import build_resources
from translators.ir import EntryPoint
from translators.options import Options
from translators.rules import parse_rule
from translators.translate import translate_world
from translators.world import build_world

CORPUS = SHARED / "conformance" / "traefik-http-rules.json"
# (case id, url) → why Switchman differs; each is a row in docs/compatibility.md.
KNOWN_DEVIATIONS = {
    (
        "TestEmptyHost/HostRegexp with absolute-form URL with empty host with non-matching host "
        "header",
        "http://@/",
    ): "Envoy's HTTP/1 codec answers 400 to an absolute-form target with an empty authority",
    (
        "TestEmptyHost/Host with absolute-form URL with empty host with non-matching host header",
        "http://@/",
    ): "Envoy's HTTP/1 codec answers 400 to an absolute-form target with an empty authority",
}
pytestmark = pytest.mark.envoy


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CORPUS.read_text())
    return data


_IPV4 = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:/(\d{1,2}))?\b")


class Ipv4Mapper:
    """Moves a case's IPv4 addresses into 127.0.0.0/8, keeping CIDR membership.

    When every address of the case has the same first octet, that octet becomes 127 (exact for
    prefixes of /8 and longer). Otherwise addresses shift right by one octet
    (a.b.c.d → 127.a.b.c, /p → /p+8), exact for prefixes up to /24.
    """

    def __init__(self, texts: list[str]) -> None:
        firsts = {m.group(1) for t in texts for m in _IPV4.finditer(t)}
        self.shift = len(firsts) > 1

    def __call__(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            a, b, c, d, prefix = m.groups()
            if not self.shift:
                return f"127.{b}.{c}.{d}" + (f"/{prefix}" if prefix else "")
            if prefix is None:
                return f"127.{a}.{b}.{c}"
            return f"127.{a}.{b}.{c}/{min(32, int(prefix) + 8)}"

        return _IPV4.sub(sub, text)


def _source_ip(remote: str | None, mapper: Ipv4Mapper) -> tuple[str | None, str]:
    """(source address on loopback, or None and why it cannot be reproduced)."""
    if remote is None:
        return "127.0.0.1", ""
    host = remote
    m = re.fullmatch(r"\[?([^\]]+)\]?:(\d+)", remote)
    if m and ("." in m.group(1) or remote.startswith("[")):
        host = m.group(1)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None, f"client address {remote!r} is not an IP: no socket can have it"
    if ip.version == 6:
        if ip == ipaddress.ip_address("::1"):
            return None, "IPv6 loopback peers need an IPv6 listener (the gateway listens on IPv4)"
        return None, f"IPv6 peer {ip} cannot be reproduced on loopback"
    return mapper(str(ip)), ""


@dataclass
class Probe:
    case_id: str
    syntax: str
    port: int
    request: dict[str, Any]
    source: str
    expected: bool
    adjusted: bool = False


_ENTRYPOINT_REWRITTEN = ("x-forwarded-proto", "x-forwarded-host")


def _expected(case: dict[str, Any], req: dict[str, Any]) -> tuple[bool, bool]:
    """(expected match, adjusted?). Traefik's entry point, with its default
    ``forwardedHeaders.insecure: false``, replaces a client's X-Forwarded-Proto and
    X-Forwarded-Host before the router runs, and so does Switchman. The matcher vectors feed
    those headers to the router directly; for them the expectation is recomputed, with the
    reference evaluator, on the request as the router really sees it."""
    if not any(name.lower() in _ENTRYPOINT_REWRITTEN for name in req["headers"]):
        return bool(req["match"]), False
    request = request_from_vector(req)
    headers = tuple(h for h in request.headers if h[0].lower() not in _ENTRYPOINT_REWRITTEN)
    headers += (("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", request.host))
    seen = replace(request, headers=headers)
    expr = parse_rule(case["rule"], case["syntax"])
    return evaluate(expr, case["syntax"], seen), True


def _raw_request(req: dict[str, Any]) -> bytes:
    if "raw_request" in req:
        raw = str(req["raw_request"])
        head, _, body = raw.partition("\r\n\r\n")
        return (head + "\r\nConnection: close\r\n\r\n" + body).encode()
    url = str(req["url"])
    # Go's tests build requests from absolute URLs; on the wire a client sends the origin form
    # with the authority in Host (Envoy answers 403 to an absolute https:// target in cleartext).
    target, authority = url, req["host"] or "example.com"
    if "://" in url:
        rest = url.split("://", 1)[1]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:cut], rest[cut:]
        if not target.startswith("/"):
            target = "/" + target  # an absolute URL without a path: clients send "/"
    lines = [f"{req['method']} {target} HTTP/1.1", f"Host: {authority}"]
    for name, values in req["headers"].items():
        for value in values:
            lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _ingressroute(name: str, routes: list[dict[str, Any]]) -> str:
    doc = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"entryPoints": [name], "routes": routes},
    }
    return yaml.safe_dump(doc, allow_unicode=True)


@dataclass
class World:
    probes: list[Probe]
    skipped: list[tuple[str, str]]
    diagnostics: dict[str, list[str]]
    served: set[str]
    cases: list[dict[str, Any]]
    multi: list[tuple[dict[str, Any], int]]


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = _load()
    tmp = tmp_path_factory.mktemp("conformance")
    config = tmp / "config"
    config.mkdir()
    backend_names = {"hit"} | {r["name"] for m in data["multi_route_cases"] for r in m["routes"]}
    backends = {name: Backend(name).start() for name in sorted(backend_names)}
    (config / "services.yaml").write_text(
        "---\n".join(service_yaml(f"b-{n}", [b]) for n, b in backends.items())
    )
    ports = iter(free_ports(len(data["cases"]) + len(data["multi_route_cases"])))
    entrypoints: list[EntryPoint] = []
    probes: list[Probe] = []
    skipped: list[tuple[str, str]] = []
    docs: list[str] = []
    for i, case in enumerate(data["cases"]):
        ep = f"c{i}"
        port = next(ports)
        entrypoints.append(EntryPoint(name=ep, address="127.0.0.1", port=port))
        rule = case["rule"]
        mapper = Ipv4Mapper([rule, *(str(r["remote_addr"]) for r in case["requests"])])
        if "ClientIP" in rule:
            rule = mapper(rule)
        route = {
            "match": rule,
            "syntax": case["syntax"],
            "services": [{"name": "b-hit", "port": 80}],
        }
        docs.append(_ingressroute(ep, [route]))
        for req in case["requests"]:
            if req.get("go_specific"):
                skipped.append((case["id"], "go_specific: " + req.get("note", "")[:80]))
                continue
            source, why = _source_ip(req["remote_addr"], mapper)
            if source is None:
                skipped.append((case["id"], why))
                continue
            expected, adjusted = _expected(case, req)
            probes.append(Probe(case["id"], case["syntax"], port, req, source, expected, adjusted))
    multi: list[tuple[dict[str, Any], int]] = []
    for j, mcase in enumerate(data["multi_route_cases"]):
        providers = {r["provider"] for r in mcase["routes"]}
        if providers != {None}:
            skipped.append((mcase["id"], "provider precedence: Switchman has one provider"))
            continue
        ep = f"m{j}"
        port = next(ports)
        entrypoints.append(EntryPoint(name=ep, address="127.0.0.1", port=port))
        routes = [
            {
                "match": r["rule"],
                **({"priority": r["priority"]} if r["priority"] is not None else {}),
                "services": [{"name": f"b-{r['name']}", "port": 80}],
            }
            for r in mcase["routes"]
        ]
        docs.append(_ingressroute(ep, routes))
        multi.append((mcase, port))
    (config / "routes.yaml").write_text("---\n".join(docs))

    store = ResourceStore([FileSource.name])
    source = FileSource(config, store)
    source.scan()
    source.publish()
    world, _ = build_world(store.objects())
    result = translate_world(world, Options(entrypoints=tuple(entrypoints)))
    diagnostics: dict[str, list[str]] = collections.defaultdict(list)
    for d in result.diagnostics:
        diagnostics[d.source.name].append(f"{d.reason}: {d.message}")
    served = {r.entrypoint for r in result.ir.routes}

    xds = XdsServer()
    xds.publish(build_resources(result.ir))
    envoy = Envoy(xds.port, tmp).start(timeout=60)
    try:
        yield World(probes, skipped, diagnostics, served, data["cases"], multi)
    finally:
        envoy.stop()
        xds.stop()
        for b in backends.values():
            b.stop()


def test_rejected_rules_get_a_diagnostic_and_serve_nothing(conformance: World) -> None:
    failures = []
    count = collections.Counter[str]()
    for i, case in enumerate(conformance.cases):
        if not case["error"]:
            continue
        ep = f"c{i}"
        ok = ep not in conformance.served and any(
            "InvalidRule" in d for d in conformance.diagnostics.get(ep, [])
        )
        count[f"{case['syntax']} {'ok' if ok else 'FAIL'}"] += 1
        if not ok:
            failures.append(f"{case['id']}: {case['rule']!r} served={ep in conformance.served}")
    print(f"\nmust-fail rules: {dict(sorted(count.items()))}")
    assert not failures, "\n".join(failures)


def test_single_rule_cases_through_envoy(conformance: World) -> None:
    results: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    codec_rejected: list[str] = []
    for p in conformance.probes:
        expected = p.expected
        status, backend = send_raw(p.port, _raw_request(p.request), p.source)
        matched = status == 200 and backend == "hit"
        if (p.case_id, p.request["url"]) in KNOWN_DEVIATIONS:
            results[f"{p.syntax} known deviation"] += 1
            continue
        if matched == expected and (matched or status == 404):
            note = " (X-Forwarded-* as the entry point sets them)" if p.adjusted else ""
            results[f"{p.syntax} pass{note}"] += 1
        elif not expected and status == 400:
            results[f"{p.syntax} pass (400 from Envoy's codec)"] += 1
            codec_rejected.append(f"{p.case_id}: {p.request['method']} {p.request['url']}")
        else:
            results[f"{p.syntax} FAIL"] += 1
            failures.append(
                f"{p.case_id}: {p.request['method']} {p.request['url']} host={p.request['host']} "
                f"headers={p.request['headers']} from {p.source} → {status} {backend!r}, "
                f"want {'match' if expected else 'no match'}"
            )
    print(f"\nsingle-rule requests: {dict(sorted(results.items()))}")
    print(f"skipped: {len(conformance.skipped)}")
    for case_id, why in conformance.skipped:
        print(f"  skip {case_id}: {why}")
    for line in codec_rejected:
        print(f"  400 (not routed, as expected) {line}")
    assert not failures, f"{len(failures)} deviations:\n" + "\n".join(failures)


def test_multi_route_priorities_through_envoy(conformance: World) -> None:
    failures = []
    for mcase, port in conformance.multi:
        for req in mcase["requests"]:
            status, backend = send_raw(port, _raw_request(req), "127.0.0.1")
            if (status, backend) != (200, req["expected_route"]):
                failures.append(
                    f"{mcase['id']}: got {status} {backend}, want {req['expected_route']}"
                )
    print(f"\nmulti-route cases: {len(conformance.multi)} run")
    assert not failures, "\n".join(failures)


def test_routing_path_cases_through_the_translator(tmp_path: Path) -> None:
    # Path(`<routing path>`) must match the URL whose routing path it is (see test_routing_paths
    # through Envoy in test_single_rule_cases for the corpus's own encoded-path vectors).
    from translators import rules

    for case in _load()["routing_path_cases"]:
        path = case["url"].split("//", 1)[1].split("/", 1)[1]
        assert rules.routing_path("/" + path) == case["routing_path"], case["id"]
