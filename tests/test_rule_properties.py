"""Property test: random rule trees, random requests, the reference evaluator and a real Envoy.

Each example is a batch of random rules (v3, and v2 with its multi-argument matchers and
templates) over a small alphabet, so that random requests over a matching small alphabet land on
both sides of most rules. Every rule gets its own entry point (an Envoy listener) routing to one
backend, ``hit``; every request is sent to every entry point over a raw socket, from a loopback
source address (for ``ClientIP``). Envoy's answer (200 from ``hit``: match; 404: no match) must
agree with :func:`tests.rule_reference.evaluate` on the parsed rule.

One Envoy and one in-process xDS server serve the whole module; each example publishes a fresh
snapshot whose entry points are on fresh ports (a listener's address cannot change in place), and
waits until every new listener answers before sending anything.

Rules the translator refuses as ``Unsupported`` (e.g. a negated v2 ``Query``) are left out of the
comparison and counted; they must stay a small minority. Rules on X-Forwarded-Proto/-Host are
not generated: the entry point rewrites those headers before routing.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from controlplane.localrun import Backend, Envoy, free_ports
from controlplane.sources.files import FileSource
from controlplane.store import ResourceStore
from tests.rule_reference import Request, evaluate
from tests.support import send_raw, service_yaml
from tests.xds_support import XdsServer
from translators.envoy import build_resources
from translators.ir import EntryPoint
from translators.options import Options
from translators.rules import And, Expr, Matcher, Not, Or, Syntax, parse_rule
from translators.translate import translate_world
from translators.world import build_world

pytestmark = pytest.mark.envoy

RULES_PER_EXAMPLE = 25
REQUESTS_PER_EXAMPLE = 30
# Refused (Unsupported) rules are excluded from the comparison; at most this share of them.
MAX_UNSUPPORTED_SHARE = 0.25

# --------------------------------------------------------------------------------------------
# Rules

# (canonical matcher name, arguments)
V3_LEAVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Host", ("a.example",)),
    ("Host", ("b.example",)),
    ("Host", ("*.example",)),
    ("HostRegexp", (r"^[ab]\.example$",)),
    ("Path", ("/x",)),
    ("PathPrefix", ("/x",)),
    ("PathPrefix", ("/y",)),
    ("PathRegexp", ("^/x/[0-9]+$",)),
    ("Method", ("GET",)),
    ("Method", ("POST",)),
    ("Header", ("X-A", "1")),
    ("HeaderRegexp", ("X-A", "^[12]$")),
    ("Query", ("q", "1")),
    ("Query", ("q",)),
    ("QueryRegexp", ("q", "^[0-9]$")),
    ("ClientIP", ("127.0.0.2",)),
    ("ClientIP", ("127.0.0.0/30",)),
)

V2_LEAVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Host", ("a.example", "b.example")),
    ("Host", ("a.example",)),
    ("HostRegexp", ("{sub:[ab]}.example",)),
    ("Path", ("/x",)),
    ("PathPrefix", ("/x/{id:[0-9]+}",)),
    ("PathPrefix", ("/y",)),
    ("Method", ("GET", "POST")),
    ("Method", ("POST",)),
    ("Headers", ("X-A", "1")),
    ("HeadersRegexp", ("X-A", "^[12]$")),
    ("Query", ("q=1",)),
    ("ClientIP", ("127.0.0.2",)),
    ("ClientIP", ("127.0.0.0/30",)),
)


def _spellings(name: str) -> tuple[str, ...]:
    """The four spellings Traefik accepts for a matcher name (``PathPrefix``, ``pathprefix``,
    ``PATHPREFIX``, ``Pathprefix``)."""
    lower = name.lower()
    return (name, lower, name.upper(), lower[:1].upper() + lower[1:])


def _quote(arg: str, backtick: bool) -> str:
    if backtick:
        return f"`{arg}`"
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Node:
    """A generated rule tree: ``op`` is "leaf", "not", "and" or "or"; ``text`` a leaf's rendering;
    ``parens`` asks for redundant parentheses around the node."""

    op: str
    text: str = ""
    leaf: Matcher | None = None
    children: tuple[Node, ...] = ()
    parens: bool = False


@st.composite
def _leaf(draw: st.DrawFn, leaves: tuple[tuple[str, tuple[str, ...]], ...]) -> Node:
    name, args = draw(st.sampled_from(leaves))
    spelled = draw(st.sampled_from(_spellings(name)))
    quoted = [_quote(a, draw(st.booleans())) for a in args]
    sep = draw(st.sampled_from([", ", ","]))
    return Node(
        "leaf",
        text=f"{spelled}({sep.join(quoted)})",
        leaf=Matcher(name, args, 0),
        parens=draw(st.booleans()) and draw(st.booleans()),
    )


def _tree(leaves: tuple[tuple[str, tuple[str, ...]], ...], depth: int) -> st.SearchStrategy[Node]:
    leaf = _leaf(leaves)
    if depth == 0:
        return leaf
    sub = _tree(leaves, depth - 1)
    parens = st.sampled_from([False, False, False, True])
    return st.one_of(
        leaf,
        st.builds(lambda c, p: Node("not", children=(c,), parens=p), sub, parens),
        st.builds(lambda a, b, p: Node("and", children=(a, b), parens=p), sub, sub, parens),
        st.builds(lambda a, b, p: Node("or", children=(a, b), parens=p), sub, sub, parens),
    )


_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "leaf": 4}


def render(node: Node, spaced: bool = True) -> str:
    """Go expression text; parentheses where precedence needs them (and where asked for)."""

    def sub(child: Node, min_prec: int) -> str:
        text = render(child, spaced)
        if _PRECEDENCE[child.op] < min_prec and not child.parens:
            return f"({text})"
        return text

    if node.op == "leaf":
        text = node.text
    elif node.op == "not":
        text = "!" + sub(node.children[0], _PRECEDENCE["not"])
    else:
        op = {"and": "&&", "or": "||"}[node.op]
        op = f" {op} " if spaced else op
        prec = _PRECEDENCE[node.op]
        # The right operand of a same-precedence operator gets parentheses: a && (b && c).
        text = sub(node.children[0], prec) + op + sub(node.children[1], prec + 1)
    return f"({text})" if node.parens else text


def to_expr(node: Node) -> Expr:
    """The expression the tree stands for (as parse_rule should return it, columns aside)."""
    if node.op == "leaf":
        assert node.leaf is not None
        return node.leaf
    if node.op == "not":
        return Not(to_expr(node.children[0]))
    left, right = (to_expr(c) for c in node.children)
    return And(left, right) if node.op == "and" else Or(left, right)


@dataclass(frozen=True)
class Rule:
    text: str
    syntax: Syntax
    tree: Node

    def __repr__(self) -> str:
        return f"Rule({self.syntax} {self.text!r})"


@st.composite
def _rule(draw: st.DrawFn, syntax: Syntax, leaves: tuple[tuple[str, tuple[str, ...]], ...]) -> Rule:
    # A composite, not st.builds: Hypothesis would print how every tree was built (kilobytes).
    tree = draw(_tree(leaves, 3))
    return Rule(render(tree, spaced=draw(st.booleans())), syntax, tree)


v3_rules = _rule("v3", V3_LEAVES)
v2_rules = _rule("v2", V2_LEAVES)
rules_strategy = st.one_of(v3_rules, v3_rules, v2_rules)

# --------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Probe:
    method: str
    host: str
    path: str
    query: str | None
    x_a: str | None
    source: str

    def request(self) -> Request:
        headers = (("X-A", self.x_a),) if self.x_a is not None else ()
        return Request(
            method=self.method,
            host=self.host,
            path=self.path,
            query=self.query or "",
            headers=headers,
            remote_ip=self.source,
        )

    def raw(self) -> bytes:
        target = self.path + (f"?{self.query}" if self.query is not None else "")
        lines = [f"{self.method} {target} HTTP/1.1", f"Host: {self.host}"]
        if self.x_a is not None:
            lines.append(f"X-A: {self.x_a}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def __repr__(self) -> str:
        target = self.path + (f"?{self.query}" if self.query is not None else "")
        x_a = f" X-A: {self.x_a}" if self.x_a is not None else ""
        return f"<{self.method} {target} Host: {self.host}{x_a} from {self.source}>"


@st.composite
def _probe(draw: st.DrawFn) -> Probe:
    def pick(values: list[Any]) -> Any:
        return draw(st.sampled_from(values))

    return Probe(
        method=pick(["GET", "POST"]),
        host=pick(["a.example", "b.example", "c.example", "A.EXAMPLE", "a.example:8080"]),
        path=pick(["/", "/x", "/x/1", "/x/12", "/xy", "/y/z", "/X"]),
        query=pick([None, "q=1", "q=", "q=1&q=2", "q=2&q=1", "q", "r=1"]),
        x_a=pick([None, "1", "2", "3"]),
        source=pick([f"127.0.0.{i}" for i in range(1, 6)]),
    )


probes_strategy = _probe()

# --------------------------------------------------------------------------------------------
# The gateway


def _ingressroute(name: str, rule: Rule) -> str:
    doc = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "entryPoints": [name],
            "routes": [
                {
                    "match": rule.text,
                    "syntax": rule.syntax,
                    "services": [{"name": "hit", "port": 80}],
                }
            ],
        },
    }
    return yaml.safe_dump(doc, allow_unicode=True)


@dataclass
class Published:
    ports: list[int]
    diagnostics: dict[str, list[tuple[str, str]]]  # entry point → [(reason, message)]
    names: list[str]


class Gateway:
    """One Envoy and one xDS server; :meth:`publish` replaces every entry point."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "config"
        self.config.mkdir()
        self.backend = Backend("hit").start()
        (self.config / "services.yaml").write_text(service_yaml("hit", [self.backend]))
        self.used_ports: set[int] = set()
        self.generation = 0
        self.xds = XdsServer()
        self.envoy: Envoy | None = None
        try:
            self.publish([Rule("Path(`/`)", "v3", Node("leaf"))])
            self.envoy = Envoy(self.xds.port, workdir).start(timeout=60)
        except BaseException:
            self.stop()
            raise

    def _fresh_ports(self, n: int) -> list[int]:
        ports = [p for p in free_ports(n + len(self.used_ports)) if p not in self.used_ports][:n]
        assert len(ports) == n
        self.used_ports.update(ports)
        return ports

    def publish(self, batch: list[Rule]) -> Published:
        self.generation += 1
        names = [f"g{self.generation}r{i}" for i in range(len(batch))]
        ports = self._fresh_ports(len(batch))
        (self.config / "routes.yaml").write_text(
            "---\n".join(_ingressroute(n, r) for n, r in zip(names, batch, strict=True))
        )
        store = ResourceStore([FileSource.name])
        source = FileSource(self.config, store)
        source.scan()
        source.publish()
        world, _ = build_world(store.objects())
        entrypoints = tuple(
            EntryPoint(name=n, address="127.0.0.1", port=p)
            for n, p in zip(names, ports, strict=True)
        )
        result = translate_world(world, Options(entrypoints=entrypoints))
        diagnostics: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for d in result.diagnostics:
            diagnostics[d.source.name].append((d.reason, d.message))
        self.xds.publish(build_resources(result.ir))
        return Published(ports, diagnostics, names)

    def wait_listening(self, ports: list[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        probe = b"GET / HTTP/1.1\r\nHost: ready.invalid\r\nConnection: close\r\n\r\n"
        for port in ports:
            while True:
                try:
                    send_raw(port, probe, "127.0.0.1")
                    break
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no listener on {port} after {timeout}s") from None
                    time.sleep(0.02)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.xds.stop()
        self.backend.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("rule-properties"))
    try:
        yield gw
    finally:
        gw.stop()


# --------------------------------------------------------------------------------------------
# The property


def _outcome(matched: bool) -> str:
    return "match" if matched else "no match"


def _agrees(rule: Rule, probe: Probe, status: int, backend: str) -> bool:
    want = evaluate(parse_rule(rule.text, rule.syntax), rule.syntax, probe.request())
    got = status == 200 and backend == "hit"
    return got == want and (got or status == 404)


def _describe(rule: Rule, probe: Probe, status: int, backend: str) -> str:
    want = evaluate(parse_rule(rule.text, rule.syntax), rule.syntax, probe.request())
    got = status == 200 and backend == "hit"
    return (
        f"{rule!r} with {probe!r}: Envoy answered {status} {backend!r} ({_outcome(got)}), "
        f"the reference says {_outcome(want)}"
    )


def _size(node: Node) -> int:
    return 1 + sum(_size(c) for c in node.children)


def _simpler(node: Node) -> list[Node]:
    """Trees one step simpler: a subtree replaced by one of its operands, or parentheses off."""
    out: list[Node] = list(node.children)
    if node.parens:
        out.append(replace(node, parens=False))
    for k, child in enumerate(node.children):
        for smaller in _simpler(child):
            children = list(node.children)
            children[k] = smaller
            out.append(replace(node, children=tuple(children)))
    return out


def _minimize(gateway: Gateway, rule: Rule, probe: Probe) -> str:
    """Shrink a disagreement through Envoy: all one-step simplifications of the rule are published
    at once (one entry point each), the simplest that still disagrees is kept; then the request is
    simplified field by field. Hypothesis' own shrinking would re-run whole batches of 750
    requests hundreds of times (minutes); this takes a few publishes."""
    for _ in range(30):
        candidates = {render(t): t for t in sorted(_simpler(rule.tree), key=_size)}
        batch = [Rule(text, rule.syntax, tree) for text, tree in candidates.items()]
        if not batch:
            break
        published = gateway.publish(batch)
        gateway.wait_listening(published.ports)
        for cand, port, name in zip(batch, published.ports, published.names, strict=True):
            if published.diagnostics.get(name):
                continue
            if not _agrees(cand, probe, *send_raw(port, probe.raw(), probe.source)):
                rule = cand
                break
        else:
            break
    published = gateway.publish([rule])
    gateway.wait_listening(published.ports)
    port = published.ports[0]
    simplest = {
        "query": None,
        "x_a": None,
        "source": "127.0.0.1",
        "method": "GET",
        "host": "a.example",
        "path": "/",
    }
    changed = True
    while changed:
        changed = False
        for field, value in simplest.items():
            if getattr(probe, field) == value:
                continue
            cand = replace(probe, **{field: value})
            if not _agrees(rule, cand, *send_raw(port, cand.raw(), cand.source)):
                probe, changed = cand, True
    return _describe(rule, probe, *send_raw(port, probe.raw(), probe.source))


def _check_batch(
    gateway: Gateway, batch: list[Rule], probes: list[Probe], stats: collections.Counter[str]
) -> None:
    for rule in batch:
        expr = parse_rule(rule.text, rule.syntax)
        # The parser must read the tree that was rendered (precedence, quoting, spellings).
        for probe in probes:
            want = evaluate(to_expr(rule.tree), rule.syntax, probe.request())
            got = evaluate(expr, rule.syntax, probe.request())
            assert got == want, (
                f"parse_rule({rule.text!r}, {rule.syntax!r}) does not read the rendered tree: "
                f"{probe!r} is a {_outcome(got)} for the parse, a {_outcome(want)} for the tree"
            )

    published = gateway.publish(batch)
    gateway.wait_listening(published.ports)

    compared: list[int] = []
    for i, (rule, name) in enumerate(zip(batch, published.names, strict=True)):
        diags = published.diagnostics.get(name, [])
        errors = [(r, m) for r, m in diags if r != "Unsupported"]
        assert not errors, f"{rule!r} was refused: {errors}"
        stats["rules"] += 1
        if diags:
            stats[f"unsupported {rule.syntax}"] += 1
            continue
        compared.append(i)

    pairs = [(i, probe) for i in compared for probe in probes]

    def send(pair: tuple[int, Probe]) -> tuple[int, str]:
        i, probe = pair
        return send_raw(published.ports[i], probe.raw(), probe.source)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(send, pairs))

    mismatches: list[tuple[Rule, Probe, int, str]] = []
    for (i, probe), (status, backend) in zip(pairs, answers, strict=True):
        rule = batch[i]
        want = evaluate(parse_rule(rule.text, rule.syntax), rule.syntax, probe.request())
        stats["pairs"] += 1
        stats["matches" if want else "non-matches"] += 1
        if not _agrees(rule, probe, status, backend):
            stats["disagreements"] += 1
            mismatches.append((rule, probe, status, backend))
    if mismatches:
        minimal = _minimize(gateway, mismatches[0][0], mismatches[0][1])
        examples = "\n".join(_describe(*m) for m in mismatches[:5])
        raise AssertionError(
            f"{len(mismatches)} of {len(pairs)} (rule, request) pairs disagree.\n"
            f"Minimal: {minimal}\nAs generated:\n{examples}"
        )


def test_random_rules_agree_with_the_reference_through_envoy(gateway: Gateway) -> None:
    stats: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @given(
        st.lists(rules_strategy, min_size=RULES_PER_EXAMPLE, max_size=RULES_PER_EXAMPLE),
        st.lists(probes_strategy, min_size=REQUESTS_PER_EXAMPLE, max_size=REQUESTS_PER_EXAMPLE),
    )
    @settings(
        max_examples=6,
        deadline=None,
        database=None,
        # No Phase.shrink: every shrink step would be a whole batch through Envoy (minutes);
        # a disagreement is minimized through Envoy by _minimize instead.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def prop(batch: list[Rule], probes: list[Probe]) -> None:
        _check_batch(gateway, batch, probes, stats)

    try:
        prop()
    finally:
        unsupported = stats["unsupported v3"] + stats["unsupported v2"]
        print(
            f"\nrule properties: {stats['rules']} rules, {unsupported} refused as Unsupported "
            f"(v3 {stats['unsupported v3']}, v2 {stats['unsupported v2']}); "
            f"{stats['pairs']} (rule, request) pairs compared: {stats['matches']} matches, "
            f"{stats['non-matches']} non-matches, {stats['disagreements']} disagreements; "
            f"{time.monotonic() - started:.1f}s"
        )
    assert unsupported <= MAX_UNSUPPORTED_SHARE * stats["rules"], (
        f"{unsupported} of {stats['rules']} rules were refused as Unsupported"
    )
    # Both outcomes must be well represented, or agreement says little.
    assert min(stats["matches"], stats["non-matches"]) >= 0.15 * stats["pairs"], stats
