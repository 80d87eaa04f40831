"""Tests of translators.rules against Traefik's own conformance vectors, plus properties."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rule_reference import Request, evaluate, request_from_vector
from translators.rules import (
    And,
    Expr,
    Matcher,
    Not,
    Or,
    RuleError,
    Syntax,
    default_priority,
    host_domains,
    parse_domains,
    parse_rule,
    routing_path,
    to_dnf,
    v2_query_pairs,
    v2_template_to_regex,
)

CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
CORPUS_FILE = CORPUS_DIR / "traefik-http-rules.json"
if not CORPUS_FILE.exists():  # pragma: no cover
    pytest.skip(f"conformance corpus not found at {CORPUS_FILE}", allow_module_level=True)
CORPUS: dict[str, Any] = json.loads(CORPUS_FILE.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = CORPUS["cases"]

REQUESTS = [
    pytest.param(case, request, id=f"{case['id']}[{case['syntax']}]#{index}")
    for case in CASES
    if not case["error"]
    for index, request in enumerate(case["requests"])
    if not request.get("go_specific")
]
GO_SPECIFIC = [r for c in CASES for r in c["requests"] if r.get("go_specific")]

PROPS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------
# Corpus


@pytest.mark.parametrize("case", CASES, ids=[f"{c['id']}[{c['syntax']}]" for c in CASES])
def test_corpus_case_parses_or_is_rejected(case: dict[str, Any]) -> None:
    if case["error"]:
        with pytest.raises(RuleError):
            parse_rule(case["rule"], case["syntax"])
    else:
        parse_rule(case["rule"], case["syntax"])


@pytest.mark.parametrize(("case", "vector"), REQUESTS)
def test_corpus_request(case: dict[str, Any], vector: dict[str, Any]) -> None:
    expr = parse_rule(case["rule"], case["syntax"])
    request = request_from_vector(vector)
    assert evaluate(expr, case["syntax"], request) is vector["match"], request


def test_corpus_counts() -> None:
    assert len(CASES) == 249
    assert sum(len(c["requests"]) for c in CASES) == 536
    assert sum(c["error"] for c in CASES) == 98
    # Skipped on purpose: they depend on Go storing a non-canonical header name in memory.
    assert len(GO_SPECIFIC) == 8
    assert all(r["headers"].keys() == {"x-forwarded-proto"} for r in GO_SPECIFIC)
    assert len(REQUESTS) == 536 - 8


@pytest.mark.parametrize("case", CORPUS["default_priority_cases"], ids=lambda c: str(c["id"]))
def test_default_priority_cases(case: dict[str, Any]) -> None:
    assert default_priority(case["rule"]) == case["priority"]


@pytest.mark.parametrize("case", CORPUS["routing_path_cases"], ids=lambda c: str(c["id"]))
def test_routing_path_cases(case: dict[str, Any]) -> None:
    vector = {"method": "GET", "url": case["url"], "host": None, "headers": {}}
    assert routing_path(request_from_vector(vector).path) == case["routing_path"]


@pytest.mark.parametrize("case", CORPUS["parse_domains_cases"], ids=lambda c: str(c["id"]))
def test_parse_domains_cases(case: dict[str, Any]) -> None:
    if case["error"]:
        with pytest.raises(RuleError):
            parse_domains(case["rule"])
        with pytest.raises(RuleError):
            parse_rule(case["rule"])
        return
    assert parse_domains(case["rule"]) == tuple(case["domains"])
    if "Host()" not in case["rule"]:  # Host() is only rejected when the route is added
        assert host_domains(parse_rule(case["rule"])) == tuple(case["domains"])


@pytest.mark.parametrize("case", CORPUS["multi_route_cases"], ids=lambda c: str(c["id"]))
def test_multi_route_cases(case: dict[str, Any]) -> None:
    precedence: list[str] = case["provider_precedence"]

    def provider_rank(provider: str | None) -> int:
        return precedence.index(provider) if provider in precedence else len(precedence)

    routes = []
    for route in case["routes"]:
        priority = route["priority"] or default_priority(route["rule"])
        assert priority == route["effective_priority"]
        expr = parse_rule(route["rule"], case["syntax"])
        routes.append((-priority, provider_rank(route["provider"]), route["name"], expr))
    routes.sort(key=lambda r: (r[0], r[1]))  # stable: insertion order on full ties
    for vector in case["requests"]:
        request = request_from_vector(vector)
        winner = next((n for _, _, n, e in routes if evaluate(e, case["syntax"], request)), None)
        assert winner == vector["expected_route"]


# --------------------------------------------------------------------------------------------
# Explicit parser behaviour


def test_rule_error_str() -> None:
    assert str(RuleError("boom")) == "boom"
    err = RuleError("boom", 7)
    assert str(err) == "column 7: boom"
    assert (err.message, err.column) == ("boom", 7)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("rule", "column", "fragment"),
    [
        ("Host(`example.com`) && Path(`/a)", 29, "not terminated"),
        ('Host("example.com) && Path(`/a`)', 6, "not terminated"),
        ("Host(`a`) || Foo(`x`)", 14, "unknown matcher"),
        ("Host(`a`) && (Path(`/`)", 24, "expected ')'"),
        ("Host(`a`) && Path(`/a`, `/b`)", 14, "argument"),
        ("Host(`a`) &&& Path(`/`)", 13, "'&'"),
        ("Host(`a`)\n&& Path(`/`)", 10, "newline"),
        ("Host(`a`\n)", 9, "newline"),
        ("Host(example.com)", 6, "string literal"),
        ("Host(`a`) Path(`/`)", 11, "'&&', '||'"),
        ("pathPrefix(`/`)", 1, "PathPrefix, pathprefix, PATHPREFIX, Pathprefix"),
        ('Path("/\\q")', 8, "escape"),
        ("Host(`a`) && !", 15, "expected a matcher"),
    ],
)
def test_error_columns(rule: str, column: int, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(rule)
    assert info.value.column == column, info.value
    assert fragment in info.value.message
    assert str(info.value).startswith(f"column {column}: ")


def test_empty_rule_has_no_column() -> None:
    for rule in ("", "  \n"):
        with pytest.raises(RuleError) as info:
            parse_rule(rule)
        assert info.value.column == 0
        assert str(info.value) == "empty rule"


@pytest.mark.parametrize("spelling", ["PathPrefix", "pathprefix", "PATHPREFIX", "Pathprefix"])
def test_matcher_spellings(spelling: str) -> None:
    assert parse_rule(f"{spelling}(`/a`)") == Matcher("PathPrefix", ("/a",), 1)


@pytest.mark.parametrize("spelling", ["pathPrefix", "PathprefiX", "PATHprefix", "path_prefix"])
def test_other_spellings_rejected(spelling: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(f"{spelling}(`/a`)")


@pytest.mark.parametrize(
    ("rule", "syntax"),
    [
        ("PathRegexp(`^/a`)", "v2"),
        ("HeaderRegexp(`X-A`, `b`)", "v2"),
        ("QueryRegexp(`q`, `b`)", "v2"),
        ("Header(`X-A`, `b`)", "v2"),
        ("Headers(`X-A`, `b`)", "v3"),
        ("HeadersRegexp(`X-A`, `b`)", "v3"),
        ("HostHeader(`a.com`)", "v3"),
    ],
)
def test_matchers_of_the_other_syntax_are_rejected(rule: str, syntax: Syntax) -> None:
    with pytest.raises(RuleError, match="does not exist"):
        parse_rule(rule, syntax)


def test_go_syntax_details() -> None:
    # Go string-literal escapes, raw strings (CR dropped), comments, trailing comma, ellipsis.
    assert parse_rule('Path("/\\x61\\u00e9\\101\\t")') == Matcher("Path", ("/aéA\t",), 1)
    assert parse_rule("Path(`/a\r\nb`)") == Matcher("Path", ("/a\nb",), 1)
    assert parse_rule("Host(`a`) /* x */ && Path(`/`) // end") == And(
        Matcher("Host", ("a",), 1), Matcher("Path", ("/",), 22)
    )
    assert parse_rule("Host(`a`,)", "v2") == Matcher("Host", ("a",), 1)
    assert parse_rule('Host(\n  "a",\n  "b",\n)', "v2") == Matcher("Host", ("a", "b"), 1)
    assert parse_rule("Host(`a`...)") == Matcher("Host", ("a",), 1)
    assert parse_rule("Host(`a`) &&\n  Path(`/`)\n") == And(
        Matcher("Host", ("a",), 1), Matcher("Path", ("/",), 16)
    )
    assert parse_rule("!!Host(`a`)") == Not(Not(Matcher("Host", ("a",), 3)))
    for bad in (
        "Host('a')",
        "Host(`a` + `b`)",
        "Host((`a`))",
        "x.Host(`a`)",
        "Host(`a`) == Host(`b`)",
        "Host(`a`);",
        "Host",
        "`a`",
        "Host(`a`) && `b`",
        "Host(`a\x00`)",
        'Host("\\xff")',
        'Path("/\\ud800")',
        "Host(`a`) /* unterminated",
        "Host(Path(`/`))",
        "Host(`a`...,`b`)",
        "Host(`a`)(`b`)",
        "()",
    ):
        with pytest.raises(RuleError):
            parse_rule(bad, "v2")


def test_precedence_and_associativity() -> None:
    a, b, c = (Matcher("Path", (p,), 0) for p in ("/a", "/b", "/c"))

    def strip(e: Expr) -> Expr:
        if isinstance(e, Matcher):
            return Matcher(e.name, e.args, 0)
        if isinstance(e, Not):
            return Not(strip(e.operand))
        return type(e)(strip(e.left), strip(e.right))

    assert strip(parse_rule("Path(`/a`) || Path(`/b`) && Path(`/c`)")) == Or(a, And(b, c))
    assert strip(parse_rule("Path(`/a`) && Path(`/b`) || Path(`/c`)")) == Or(And(a, b), c)
    assert strip(parse_rule("Path(`/a`) && Path(`/b`) && Path(`/c`)")) == And(And(a, b), c)
    assert strip(parse_rule("Path(`/a`) || (Path(`/b`) || Path(`/c`))")) == Or(a, Or(b, c))
    assert strip(parse_rule("!Path(`/a`) && Path(`/b`)")) == And(Not(a), b)
    assert strip(parse_rule("!(Path(`/a`) && Path(`/b`))")) == Not(And(a, b))


def test_nesting_limit() -> None:
    assert parse_rule("(" * 50 + "Host(`a`)" + ")" * 50) == Matcher("Host", ("a",), 51)
    with pytest.raises(RuleError, match="nested"):
        parse_rule("(" * 1000 + "Host(`a`)" + ")" * 1000)
    with pytest.raises(RuleError, match="nested"):
        parse_rule("!" * 1000 + "Host(`a`)")
    long_chain = " || ".join(f"Path(`/{i}`)" for i in range(2000))
    assert len(host_domains(parse_rule(long_chain))) == 0


def test_validation_details() -> None:
    parse_rule("Host(`*`)")
    parse_rule("ClientIP(`::ffff:10.0.0.0/104`)")
    parse_rule("ClientIP(`10.0.0.0/016`)")
    for bad in ("ClientIP(`10.0.0.0/33`)", "ClientIP(`fe80::1%eth0`)", "ClientIP(`010.0.0.1`)"):
        with pytest.raises(RuleError):
            parse_rule(bad)
    with pytest.raises(RuleError):
        parse_rule("PathRegexp(`\\C`)")  # RE2 accepts \C, Go does not
    # v2 pairs: Headers(k, v, k, v) is valid, Query pieces are re-paired after splitting on '='.
    parse_rule("Headers(`A`, `1`, `B`, `2`)", "v2")
    assert v2_query_pairs(("a", "b")) == (("a", "b"),)
    assert v2_query_pairs(("a=b", "c=d=e")) == (("a", "b"), ("c", "d=e"))
    with pytest.raises(RuleError):
        parse_rule("Query(`a={x}`, `b={x}`)", "v2")  # duplicated template variable
    with pytest.raises(RuleError):
        parse_rule("Path(`/{id:a)(b}`)", "v2")  # the variable pattern alone must compile


def test_v2_templates() -> None:
    assert v2_template_to_regex("{sub:[a-z]+}.example.com", "host") == (
        "(?i)^(?P<v0>[a-z]+)\\.example\\.com$"
    )
    assert v2_template_to_regex("/a/{id}", "path") == "^/a/(?P<v0>[^/]+)$"
    assert v2_template_to_regex("{x}.a", "host") == "(?i)^(?P<v0>[^.]+)\\.a$"
    assert v2_template_to_regex("/a-{n:[0-9]?}", "pathprefix") == "^/a-(?P<v0>[0-9]?)"
    assert v2_template_to_regex("q=", "query") == "^q=.*$"
    for template, kind in (("{a", "host"), ("a}", "host"), ("{:x}", "path"), ("/{a:}", "path")):
        with pytest.raises(RuleError):
            v2_template_to_regex(template, kind)  # type: ignore[arg-type]
    with pytest.raises(RuleError):
        v2_template_to_regex("a/{b}", "path")


def test_routing_path_details() -> None:
    assert routing_path("") == ""
    assert routing_path("/%41%2F%2f%25%3a%3A") == "/A%2F/%25:%3A"  # lower-case hex is decoded
    assert routing_path("/%C3%A9") == "/é"
    for bad in ("/%", "/%4", "/%zz"):
        with pytest.raises(ValueError):
            routing_path(bad)


def test_reference_quirks() -> None:
    def req(**kw: Any) -> Request:
        base: dict[str, Any] = {
            "method": "GET",
            "host": "example.com",
            "path": "/",
            "query": "",
            "headers": (),
            "remote_ip": "10.0.0.1",
        }
        return Request(**(base | kw))

    # v3 HostRegexp also tries the (unset, empty) CNAME-flattened host.
    assert evaluate(parse_rule("HostRegexp(`^(www)?$`)"), "v3", req(host="other.org"))
    # Host(`*.x`) replaces exactly one label; Host(`*`) matches even an empty host.
    assert evaluate(parse_rule("Host(`*.example.com`)"), "v3", req(host="a.example.com:80"))
    assert not evaluate(parse_rule("Host(`*.example.com`)"), "v3", req(host="a.b.example.com"))
    assert evaluate(parse_rule("Host(`*`)"), "v3", req(host=""))
    # IPv4-mapped client addresses match IPv4 entries.
    assert evaluate(parse_rule("ClientIP(`10.0.0.0/8`)"), "v3", req(remote_ip="::ffff:10.1.1.1"))
    # v2 Query: every pair must hold, on the first value of the key only.
    rule = parse_rule("Query(`a=1`, `b=2`)", "v2")
    assert evaluate(rule, "v2", req(query="a=1&b=2"))
    assert not evaluate(rule, "v2", req(query="a=1"))
    assert not evaluate(parse_rule("Query(`a=1`)", "v2"), "v2", req(query="a=0&a=1"))
    assert evaluate(parse_rule("Query(`a=`)", "v2"), "v2", req(query="a=anything"))


# --------------------------------------------------------------------------------------------
# DNF


def test_to_dnf_example() -> None:
    host, path = Matcher("Host", ("a",), 1), Matcher("Path", ("/x",), 16)
    method = Matcher("Method", ("GET",), 31)
    expr = parse_rule("Host(`a`) && !(Path(`/x`) || !Method(`GET`))")
    assert expr == And(host, Not(Or(path, Not(method))))
    assert to_dnf(expr) == (((False, host), (True, path), (False, method)),)
    assert to_dnf(Not(expr)) == (((True, host),), ((False, path),), ((True, method),))


def test_to_dnf_explodes() -> None:
    rule = " && ".join(f"(Path(`/{i}a`) || Path(`/{i}b`))" for i in range(10))
    expr = parse_rule(rule)
    with pytest.raises(RuleError, match="more than 64 alternatives"):
        to_dnf(expr, limit=64)
    assert len(to_dnf(parse_rule(" && ".join(rule.split(" && ")[:6])))) == 64
    huge = " && ".join(f"(Path(`/{i}a`) || Path(`/{i}b`))" for i in range(60))
    with pytest.raises(RuleError):
        to_dnf(parse_rule(huge))  # 2**60: must fail fast, not build the structure
    chain = " || ".join(f"Path(`/{i}`)" for i in range(65))
    assert len(to_dnf(parse_rule(chain), limit=65)) == 65
    with pytest.raises(RuleError):
        to_dnf(parse_rule(chain), limit=64)


# --------------------------------------------------------------------------------------------
# Properties

LEAVES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "v3": [
        ("Host", ("example.com",)),
        ("Host", ("*.example.com",)),
        ("Host", ("EXAMPLE.org",)),
        ("HostRegexp", ("^a\\.example\\.com$",)),
        ("Path", ("/a",)),
        ("PathPrefix", ("/a",)),
        ("PathRegexp", ("^/a/[0-9]+$",)),
        ("Method", ("GET",)),
        ("Method", ("post",)),
        ("Header", ("X-Env", "prod")),
        ("Header", ("x-env", 'a`"b\\')),
        ("HeaderRegexp", ("X-Env", "^pr")),
        ("Query", ("q",)),
        ("Query", ("q", "1")),
        ("QueryRegexp", ("q", "^[0-9]+$")),
        ("ClientIP", ("10.0.0.0/8",)),
        ("ClientIP", ("::1",)),
    ],
    "v2": [
        ("Host", ("example.com",)),
        ("Host", ("example.com", "a.example.com")),
        ("HostHeader", ("example.org",)),
        ("HostRegexp", ("{sub:[a-z]+}.example.com",)),
        ("Path", ("/a",)),
        ("Path", ("/a/{id:[0-9]+}",)),
        ("PathPrefix", ("/b", "/a/")),
        ("Method", ("GET", "POST")),
        ("Headers", ("X-Env", "prod")),
        ("Headers", ("X-Env", "prod", "X-Other", "x")),
        ("HeadersRegexp", ("x-env", "^pr")),
        ("Query", ("q=1",)),
        ("Query", ("q=1", "r=2")),
        ("Query", ("q", "1")),
        ("ClientIP", ("192.168.1.1", "10.0.0.0/8")),
    ],
}


def expr_trees(syntax: Syntax) -> st.SearchStrategy[Expr]:
    leaf = st.sampled_from(LEAVES[syntax]).map(lambda la: Matcher(la[0], la[1], 0))

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.one_of(
            st.builds(And, children, children),
            st.builds(Or, children, children),
            st.builds(Not, children),
        )

    return st.recursive(leaf, extend, max_leaves=8)


SYNTAXES: st.SearchStrategy[Syntax] = st.sampled_from(["v2", "v3"])

requests = st.builds(
    Request,
    method=st.sampled_from(["GET", "POST", "post"]),
    host=st.sampled_from(
        ["example.com", "a.example.com", "EXAMPLE.ORG:8080", "example.org.", "", "[::1]:80"]
    ),
    path=st.sampled_from(["", "/", "/a", "/a/", "/a/12", "/b", "/a%2Fb", "/%61"]),
    query=st.sampled_from(["", "q", "q=1", "q=1&r=2", "q=x&q=1", "r=2"]),
    headers=st.lists(
        st.sampled_from([("X-Env", "prod"), ("x-env", "dev"), ("X-Other", "x")]),
        max_size=3,
    ).map(tuple),
    remote_ip=st.sampled_from(["10.1.2.3", "192.168.1.1", "::1", "8.8.8.8", "1"]),
)


class _Writer:
    def __init__(self, data: st.DataObject) -> None:
        self.text = ""
        self.data = data

    def write(self, s: str) -> None:
        self.text += s

    def space(self, newline_ok: bool) -> None:
        choices = ["", " ", "  ", "\t", " /* c */ "]
        if newline_ok:
            choices += ["\n", " \n\t", "// c\n"]
        self.write(self.data.draw(st.sampled_from(choices)))


def quote(arg: str, data: st.DataObject) -> str:
    if "`" not in arg and data.draw(st.booleans()):
        return f"`{arg}`"
    out = []
    for c in arg:
        style = data.draw(st.sampled_from(["plain", "plain", "u", "x" if c.isascii() else "u"]))
        if c in '"\\':
            out.append("\\" + c)
        elif style == "u":
            out.append(f"\\u{ord(c):04x}")
        elif style == "x":
            out.append(f"\\x{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def render(node: Expr, need: int, w: _Writer) -> Expr:
    """Write ``node`` as rule text; returns ``node`` with the columns the text gives."""
    data = w.data
    level = 1 if isinstance(node, Or) else 2 if isinstance(node, And) else 3
    paren = level < need or data.draw(st.integers(0, 5)) == 0
    if paren:
        w.write("(")
        w.space(newline_ok=True)
    result: Expr
    if isinstance(node, Matcher):
        lower = node.name.lower()
        spelling = data.draw(
            st.sampled_from([node.name, lower, node.name.upper(), lower[:1].upper() + lower[1:]])
        )
        column = len(w.text) + 1
        w.write(spelling)
        w.space(newline_ok=False)
        w.write("(")
        for i, arg in enumerate(node.args):
            if i:
                w.write(",")
                w.space(newline_ok=True)
            w.write(quote(arg, data))
        w.write(")")
        result = Matcher(node.name, node.args, column)
    elif isinstance(node, Not):
        w.write("!")
        w.space(newline_ok=True)
        result = Not(render(node.operand, 3, w))
    else:
        op, left_need, right_need = ("||", 1, 2) if isinstance(node, Or) else ("&&", 2, 3)
        left = render(node.left, left_need, w)
        w.space(newline_ok=False)
        w.write(op)
        w.space(newline_ok=True)
        right = render(node.right, right_need, w)
        result = Or(left, right) if isinstance(node, Or) else And(left, right)
    if paren:
        w.space(newline_ok=False)
        w.write(")")
    return result


@PROPS
@given(st.data(), SYNTAXES)
def test_render_then_parse_round_trips(data: st.DataObject, syntax: Syntax) -> None:
    tree = data.draw(expr_trees(syntax))
    writer = _Writer(data)
    writer.space(newline_ok=True)
    expected = render(tree, 0, writer)
    writer.space(newline_ok=True)
    assert parse_rule(writer.text, syntax) == expected, writer.text
    assert default_priority(writer.text) == len(writer.text.encode())


def dnf_size(node: Expr, negated: bool = False) -> int:
    if isinstance(node, Matcher):
        return 1
    if isinstance(node, Not):
        return dnf_size(node.operand, not negated)
    left, right = dnf_size(node.left, negated), dnf_size(node.right, negated)
    return left * right if isinstance(node, And) != negated else left + right


@PROPS
@given(st.data(), SYNTAXES)
def test_dnf_is_equivalent(data: st.DataObject, syntax: Syntax) -> None:
    tree = data.draw(expr_trees(syntax))
    dnf = to_dnf(tree, limit=10_000)
    assert len(dnf) == dnf_size(tree)
    for request in data.draw(st.lists(requests, min_size=1, max_size=5)):
        expected = evaluate(tree, syntax, request)
        got = any(
            all(evaluate(m, syntax, request) != negated for negated, m in conjunction)
            for conjunction in dnf
        )
        assert got == expected, (tree, request)


@PROPS
@given(expr_trees("v3"), st.integers(1, 40))
def test_dnf_limit(tree: Expr, limit: int) -> None:
    size = dnf_size(tree)
    if size > limit:
        with pytest.raises(RuleError, match=f"more than {limit} alternatives"):
            to_dnf(tree, limit=limit)
    else:
        assert len(to_dnf(tree, limit=limit)) == size


@PROPS
@given(st.text())
def test_default_priority_is_utf8_length(rule: str) -> None:
    assert default_priority(rule) == len(rule.encode())


@PROPS
@given(st.text(max_size=40), SYNTAXES)
def test_parse_rule_only_raises_rule_error(rule: str, syntax: Syntax) -> None:
    with contextlib.suppress(RuleError):
        parse_rule(rule, syntax)
