"""encodedCharacters through the real control plane and a real Envoy.

Traefik (pkg/middlewares/encodedcharacters) answers 400, empty body, to a request whose escaped
path holds a denied escape or a ``%`` with fewer than two characters after it; all seven escapes
are denied unless their ``allow*`` flag is set; the query is never looked at.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

import pytest
import re2
import yaml

from controlplane.cli import translate_directory
from controlplane.localrun import Backend
from tests.envoy_validate import validate_resources
from tests.support import Stack, middleware_yaml, route_yaml, service_yaml
from translators.middlewares.encoded import CHARACTERS, denied_path_regex
from translators.options import Options

pytestmark = pytest.mark.envoy

GOLDEN = Path(__file__).parent / "golden"

# Each allow flag, the escapes it lets through, and a host whose route sets only that flag.
FLAGS = {
    "allowEncodedSlash": ("%2F", "%2f"),
    "allowEncodedBackSlash": ("%5C", "%5c"),
    "allowEncodedNullCharacter": ("%00",),
    "allowEncodedSemicolon": ("%3B", "%3b"),
    "allowEncodedPercent": ("%25",),
    "allowEncodedQuestionMark": ("%3F", "%3f"),
    "allowEncodedHash": ("%23",),
}
ALL_ESCAPES = [e for escapes in FLAGS.values() for e in escapes]
SHA_USERS = "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="  # password: password


def _host(flag: str) -> str:
    return f"{flag.lower()}.example"


def files(app: Backend) -> dict[str, str]:
    mws = {
        "deny-all": "  encodedCharacters: {}",
        **{f"only-{flag.lower()}": f"  encodedCharacters: {{{flag}: true}}" for flag in FLAGS},
        "allow-all": "  encodedCharacters: {" + ", ".join(f"{flag}: true" for flag in FLAGS) + "}",
        "replace-fixed": "  replacePath: {path: /fixed}",
        "replace-bad": "  replacePath: {path: /fixed%3Bx}",
        "strip-api": "  stripPrefix: {prefixes: [/api]}",
        "basic": "  basicAuth: {secret: users}",
        # Bad input: the route answers 500 (a protection that cannot be built is never skipped).
        "typo": "  encodedCharacters: {allowEncodedSlashes: true}",
        "not-bool": "  encodedCharacters: {allowEncodedSlash: 'yes'}",
        "regex-path": "  replacePathRegex: {regex: ^/r/(.*), replacement: /$1}",
    }
    routes = [
        route_yaml("Host(`deny.example`)", "deny-all"),
        *(route_yaml(f"Host(`{_host(f)}`)", f"only-{f.lower()}") for f in FLAGS),
        route_yaml("Host(`allow-all.example`)", "allow-all"),
        route_yaml("Host(`replaced.example`)", "replace-fixed", "deny-all"),
        route_yaml("Host(`replaced-bad.example`)", "replace-bad", "deny-all"),
        route_yaml("Host(`stripped.example`)", "strip-api", "deny-all"),
        route_yaml("Host(`first.example`)", "deny-all", "basic"),
        route_yaml("Host(`second.example`)", "basic", "deny-all"),
        route_yaml("Host(`typo.example`)", "typo"),
        route_yaml("Host(`not-bool.example`)", "not-bool"),
        route_yaml("Host(`after-regex.example`)", "regex-path", "deny-all"),
        route_yaml("Host(`plain.example`)"),
    ]
    return {
        "svc.yaml": service_yaml("app", [app]),
        "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: default}\n"
        f"stringData: {{users: '{SHA_USERS}'}}\n",
        "mw.yaml": "---\n".join(middleware_yaml(n, s) for n, s in mws.items()),
        "ir.yaml": "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
        "metadata: {name: enc, namespace: default}\nspec:\n  routes:\n" + "\n".join(routes) + "\n",
    }


@pytest.fixture
def app(backends: Callable[[str], Backend]) -> Backend:
    return backends("app")


@pytest.fixture
def stack(app: Backend, make_stack: Callable[..., Stack]) -> Stack:
    s = make_stack(files(app))
    s.wait_serving(lambda: s.request("/", host="deny.example")[0] == 200, "encodedCharacters")
    return s


def raw(stack: Stack, host: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_each_character_rejected_by_default(stack: Stack, app: Backend) -> None:
    before = app.requests
    for escape in ALL_ESCAPES:
        for path in (f"/a{escape}b", f"/{escape}", f"/x/y{escape}?q=1"):
            assert raw(stack, "deny.example", path) == (400, b""), path
    assert app.requests == before  # the backend never saw one
    status, backend, echo = stack.request("/a/b%41c", host="deny.example")
    assert (status, backend, echo["path"]) == (200, "app", "/a/bAc")  # unreserved: decoded


def test_each_flag_allows_only_its_character(stack: Stack) -> None:
    for flag, allowed in FLAGS.items():
        host = _host(flag)
        for escape in allowed:
            status, backend, echo = stack.request(f"/a{escape}b", host=host)
            if flag == "allowEncodedNullCharacter":
                # Documented deviation: Envoy's path normalisation refuses %00 before routing.
                assert (status, backend) == (400, ""), host
                continue
            assert (status, backend, echo["path"]) == (200, "app", f"/a{escape}b"), host
        for escape in ALL_ESCAPES:
            if escape not in allowed:
                assert raw(stack, host, f"/a{escape}b")[0] == 400, (host, escape)
    for escape in ALL_ESCAPES:
        if escape != "%00":
            assert stack.request(f"/{escape}", host="allow-all.example")[:2] == (200, "app")


def test_query_string_not_affected(stack: Stack) -> None:
    query = "?" + "&".join(f"k{i}={e}" for i, e in enumerate(ALL_ESCAPES)) + "&t=%"
    status, backend, echo = stack.request(f"/p{query}", host="deny.example")
    assert (status, backend, echo["path"]) == (200, "app", f"/p{query}")


def test_percent_without_two_characters(stack: Stack) -> None:
    # Traefik's scan: a '%' with fewer than two characters left in the path is a 400.
    for path in ("/a%", "/a%4", "/a%?x=1", "/a%4?x=1"):
        assert raw(stack, "deny.example", path)[0] == 400, path
    # Escapes outside the denied set pass as received (Go would already have refused %zz).
    assert stack.request("/a%zz", host="deny.example")[:2] == (200, "app")
    assert stack.request("/a%", host="allow-all.example")[:2] == (200, "app")


def test_checked_on_the_path_as_rewritten(stack: Stack) -> None:
    # replacePath first: Traefik checks the replaced path, not the one received.
    status, backend, echo = stack.request("/a%2Fb", host="replaced.example")
    assert (status, backend, echo["path"]) == (200, "app", "/fixed")
    assert raw(stack, "replaced-bad.example", "/clean")[0] == 400
    # stripPrefix first: what is left after the prefix is checked.
    status, backend, echo = stack.request("/api/ok", host="stripped.example")
    assert (status, echo["path"]) == (200, "/ok")
    assert raw(stack, "stripped.example", "/api/a%2Fb")[0] == 400
    assert raw(stack, "stripped.example", "/other%3Bx")[0] == 400


def test_answered_before_later_middlewares(stack: Stack) -> None:
    # Listed before basicAuth: the 400 comes first, as in Traefik; listed after: 401 first.
    assert raw(stack, "first.example", "/a%2Fb")[0] == 400
    assert raw(stack, "second.example", "/a%2Fb")[0] == 401
    assert raw(stack, "first.example", "/ok")[0] == 401
    good = {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}
    assert stack.request("/a%2Fb", host="second.example", headers=good)[0] == 400
    assert stack.request("/ok", host="second.example", headers=good)[:2] == (200, "app")


def test_routes_without_the_middleware_untouched(stack: Stack) -> None:
    for escape in ALL_ESCAPES:
        if escape != "%00":
            assert stack.request(f"/a{escape}b", host="plain.example")[:2] == (200, "app")


def test_literal_backslash_is_a_slash_in_envoy(stack: Stack) -> None:
    # Documented deviation: Envoy's normaliser turns a literal '\' into '/' before routing, so
    # the route sees no encoded backslash (Traefik escapes it to %5C and answers 400).
    status, backend, echo = stack.request("/a\\b", host="deny.example")
    assert (status, backend, echo["path"]) == (200, "app", "/a/b")


def test_bad_input_fails_closed(stack: Stack, app: Backend) -> None:
    before = app.requests
    for host in ("typo", "not-bool", "after-regex"):
        assert raw(stack, f"{host}.example", "/ok")[0] == 500, host
    assert app.requests == before


def test_diagnostics(tmp_path: Path, app: Backend) -> None:
    for name, text in files(app).items():
        (tmp_path / name).write_text(text)
    _, diags = translate_directory(tmp_path, Options())
    found = {
        (d.source.name, d.field, d.reason, d.severity)
        for d in diags
        if d.source.kind == "Middleware" and "ncoded" in d.field
    }
    assert found == {
        ("typo", "spec.encodedCharacters.allowEncodedSlashes", "InvalidMiddleware", "error"),
        ("not-bool", "spec.encodedCharacters.allowEncodedSlash", "InvalidMiddleware", "error"),
        ("deny-all", "spec.encodedCharacters", "Unsupported", "error"),
        (
            "only-allowencodednullcharacter",
            "spec.encodedCharacters.allowEncodedNullCharacter",
            "Unsupported",
            "warning",
        ),
        (
            "allow-all",
            "spec.encodedCharacters.allowEncodedNullCharacter",
            "Unsupported",
            "warning",
        ),
    }
    after_regex = [d for d in diags if d.source.name == "deny-all" and d.reason == "Unsupported"]
    assert "replacePathRegex" in after_regex[0].message


def test_golden_configuration_passes_envoy_validate(tmp_path: Path) -> None:
    """The golden case's Envoy resources, as Envoy itself judges them."""
    doc = yaml.safe_load((GOLDEN / "middleware_encoded_characters.envoy.yaml").read_text())
    validate_resources(doc, tmp_path)


def test_regex_is_traefiks_scan() -> None:
    """The one regex against Traefik's loop, on every short path over a small alphabet: equal
    wherever Go's URL parser accepts the path, and never letting through what the loop refuses
    (Go itself answers 400 to a malformed escape before any middleware runs)."""

    def traefik(escaped: str, denied: set[str]) -> bool:
        i = 0
        while i < len(escaped):
            if escaped[i] == "%":
                if i + 2 >= len(escaped):
                    return True
                if escaped[i : i + 3].upper() in denied:
                    return True
                i += 2
            i += 1
        return False

    def go_parses(escaped: str) -> bool:
        return all(
            len(escaped) > i + 2
            and all(c in "0123456789abcdefABCDEF" for c in escaped[i + 1 : i + 3])
            for i, c in enumerate(escaped)
            if c == "%"
        )

    alphabet = ["%", "2", "F", "f", "5", "c", "3", "b", "0", "/", "?", "a"]
    for allowed in ((), ("allowEncodedSlash",), ("allowEncodedPercent", "allowEncodedHash")):
        escapes = [e for name, e in CHARACTERS if name not in allowed]
        denied = {"%" + e.replace("[", "").replace("]", "")[:2].upper() for e in escapes}
        pattern = re2.compile(denied_path_regex(escapes))
        paths = [""]
        for _ in range(4):
            paths = [p + c for p in paths for c in alphabet]
            for path in paths:
                full = "/" + path
                escaped = full.split("?", 1)[0]
                ours = pattern.fullmatch(full) is not None
                if go_parses(escaped):
                    assert ours == traefik(escaped, denied), (allowed, full)
                elif traefik(escaped, denied):
                    assert ours, (allowed, full)
