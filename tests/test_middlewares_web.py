"""Web middlewares through a real Envoy: CORS (headers), stripPrefixRegex, redirectRegex."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.cli import translate_directory
from controlplane.localrun import Backend
from tests.support import Stack, route_yaml, service_yaml
from tests.support import middleware_yaml as middleware
from translators.options import Options

pytestmark = pytest.mark.envoy


MIDDLEWARES = "---\n".join(
    [
        middleware(
            "cors",
            """  headers:
    accessControlAllowOriginList: [https://a.example]
    accessControlAllowOriginListRegex: ['^https://[a-z]+\\.sub\\.example$']
    accessControlAllowMethods: [GET, PUT]
    accessControlAllowHeaders: [X-One, X-Two]
    accessControlExposeHeaders: [X-Backend]
    accessControlMaxAge: 100
    addVaryHeader: true""",
        ),
        middleware(
            "cors-any",
            """  headers:
    accessControlAllowOriginList: ['*']
    accessControlAllowMethods: [GET]""",
        ),
        middleware(
            "cors-cred",
            """  headers:
    accessControlAllowOriginList: ['*']
    accessControlAllowCredentials: true
    accessControlAllowMethods: [GET]""",
        ),
        middleware("strip-re", "  stripPrefixRegex: {regex: ['/api/v[12]', '^/(app|web)s?']}"),
        middleware("strip-wild", "  stripPrefixRegex: {regex: ['/api/.*']}"),
        middleware("strip-bad", "  stripPrefixRegex: {regex: ['/api/(']}"),
        middleware(
            "rr-www",
            """  redirectRegex:
    regex: '^https?://www\\.rr\\.example/(.*)'
    replacement: 'https://rr.example/${1}'""",
        ),
        middleware(
            "rr-path",
            """  redirectRegex:
    regex: '^(https?)://([^/]+)/old/([a-z]+)'
    replacement: '${1}://${2}/new/$3'
    permanent: true""",
        ),
        middleware(
            "rr-fixed",
            """  redirectRegex:
    regex: '^http://fixed\\.example/.*'
    replacement: 'http://fixed.example/landing'""",
        ),
        middleware("rr-bad", "  redirectRegex: {regex: '^http://(', replacement: 'http://x/'}"),
        middleware(
            "rr-host",
            "  redirectRegex: {regex: '^(https?)://www\\.(.*)', replacement: '${1}://${2}'}",
        ),
        middleware(
            "rr-perm",
            "  redirectRegex: {regex: '^http://a/', replacement: 'http://b/', permanent: 'yes'}",
        ),
        middleware("cors-bad", "  headers: {accessControlAllowOriginListRegex: ['(unclosed']}"),
    ]
)


# Untranslatable middlewares: host prefix → (Middleware, field, reason).
BAD = {
    "stripwild": ("strip-wild", "spec.stripPrefixRegex.regex[0]", "Unsupported"),
    "stripbad": ("strip-bad", "spec.stripPrefixRegex.regex[0]", "InvalidMiddleware"),
    "rrbad": ("rr-bad", "spec.redirectRegex.regex", "InvalidMiddleware"),
    "rrhost": ("rr-host", "spec.redirectRegex.regex", "Unsupported"),
    "rrperm": ("rr-perm", "spec.redirectRegex.permanent", "InvalidMiddleware"),
    "corsbad": (
        "cors-bad",
        "spec.headers.accessControlAllowOriginListRegex[0]",
        "InvalidMiddleware",
    ),
}


ROUTES = f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: web, namespace: default}}
spec:
  routes:
{route_yaml("Host(`cors.example`)", "cors")}
{route_yaml("Host(`any.example`)", "cors-any")}
{route_yaml("Host(`cred.example`)", "cors-cred")}
{route_yaml("Host(`corsbad.example`)", "cors-bad")}
{route_yaml("Host(`strip.example`)", "strip-re")}
{route_yaml("Host(`stripwild.example`)", "strip-wild")}
{route_yaml("Host(`stripbad.example`)", "strip-bad")}
{route_yaml("Host(`www.rr.example`)", "rr-www")}
{route_yaml("Host(`rrpath.example`)", "rr-path")}
{route_yaml("Host(`fixed.example`)", "rr-fixed")}
{route_yaml("Host(`rrbad.example`)", "rr-bad")}
{route_yaml("Host(`rrhost.example`)", "rr-host")}
{route_yaml("Host(`rrperm.example`)", "rr-perm")}
  - match: Host(`plain.example`)
    services: [{{name: app, port: 80}}]
"""


@pytest.fixture
def app(backends: Callable[[str], Backend]) -> Backend:
    return backends("app")


@pytest.fixture
def stack(app: Backend, make_stack: Callable[..., Stack]) -> Stack:
    s = make_stack(
        {"svc.yaml": service_yaml("app", [app]), "mw.yaml": MIDDLEWARES, "ir.yaml": ROUTES}
    )
    s.wait_serving(lambda: s.request("/", host="plain.example")[0] == 200, "routes served")
    return s


def raw(
    stack: Stack, method: str, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    conn.request(method, path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "PUT"}


def test_preflight_answered_without_the_backend(stack: Stack, app: Backend) -> None:
    before = app.requests
    status, h = raw(stack, "OPTIONS", "cors.example", headers=preflight("https://a.example"))
    assert status == 200
    assert h["access-control-allow-origin"] == "https://a.example"
    assert h["access-control-allow-methods"] == "GET,PUT"
    assert h["access-control-allow-headers"] == "X-One,X-Two"
    assert h["access-control-max-age"] == "100"
    # An origin matched by a regex (Go's MatchString: found anywhere, anchors honoured).
    h = raw(stack, "OPTIONS", "cors.example", headers=preflight("https://x.sub.example"))[1]
    assert h["access-control-allow-origin"] == "https://x.sub.example"
    h = raw(stack, "OPTIONS", "cors.example", headers=preflight("https://x.sub.example.evil"))[1]
    assert "access-control-allow-origin" not in h
    # A disallowed origin: still answered with 200, Allow-Origin omitted.
    status, h = raw(stack, "OPTIONS", "cors.example", headers=preflight("https://evil.example"))
    assert status == 200 and "access-control-allow-origin" not in h
    assert h["access-control-allow-methods"] == "GET,PUT"
    assert app.requests == before  # no preflight reached the backend
    # An OPTIONS without Access-Control-Request-Method is not a preflight: forwarded.
    status, h = raw(stack, "OPTIONS", "cors.example", headers={"Origin": "https://a.example"})
    assert (status, h["x-backend"], app.requests) == (200, "app", before + 1)


def test_simple_requests(stack: Stack) -> None:
    status, h = raw(stack, "GET", "cors.example", headers={"Origin": "https://a.example"})
    assert status == 200 and h["x-backend"] == "app"
    assert h["access-control-allow-origin"] == "https://a.example"
    assert h["access-control-expose-headers"] == "X-Backend"
    assert h["vary"] == "Origin"
    # Disallowed: no Allow-Origin; Traefik sets the other headers whatever the origin.
    h = raw(stack, "GET", "cors.example", headers={"Origin": "https://evil.example"})[1]
    assert "access-control-allow-origin" not in h
    assert (h["access-control-expose-headers"], h["vary"]) == ("X-Backend", "Origin")
    # "*" without credentials: "*" when no Origin is sent.
    assert raw(stack, "GET", "any.example")[1]["access-control-allow-origin"] == "*"


def test_any_origin_with_credentials_echoes_the_origin(stack: Stack, app: Backend) -> None:
    before = app.requests
    status, h = raw(stack, "OPTIONS", "cred.example", headers=preflight("https://b.example"))
    assert status == 200 and app.requests == before
    assert h["access-control-allow-origin"] == "https://b.example"
    assert h["access-control-allow-credentials"] == "true"
    h = raw(stack, "GET", "cred.example", headers={"Origin": "https://b.example"})[1]
    assert h["access-control-allow-origin"] == "https://b.example"
    assert h["access-control-allow-credentials"] == "true"


def test_bad_input_drops_only_its_route(stack: Stack) -> None:
    for host in BAD:
        assert stack.request("/", host=f"{host}.example")[0] == 404, host
    assert stack.request("/", host="plain.example")[0] == 200


def test_diagnostics_name_the_middleware_and_field(tmp_path: Path) -> None:
    (tmp_path / "mw.yaml").write_text(MIDDLEWARES)
    (tmp_path / "ir.yaml").write_text(ROUTES)
    (tmp_path / "svc.yaml").write_text(service_yaml("app", []))
    _, diags = translate_directory(tmp_path, Options())
    found = {(d.source.name, d.field, d.reason) for d in diags if d.source.kind == "Middleware"}
    assert found == set(BAD.values())
    assert all("not served" in d.message for d in diags if d.source.kind == "Middleware")


def seen(stack: Stack, path: str, host: str) -> tuple[str, dict[str, str]]:
    status, _, echo = stack.request(path, host=host)
    assert status == 200, (path, host, status)
    return str(echo["path"]), {k.lower(): v for k, v in echo["headers"]}  # type: ignore[union-attr]


def test_strip_prefix_regex(stack: Stack) -> None:
    path, h = seen(stack, "/api/v2/users?x=1", "strip.example")
    assert (path, h["x-forwarded-prefix"]) == ("/users?x=1", "/api/v2")
    assert seen(stack, "/api/v1", "strip.example")[0] == "/"
    assert seen(stack, "/api/v1x", "strip.example")[0] == "/x"  # a leading slash is added
    # Go's leftmost-first: "apps" is preferred to "app" (greedy s?).
    path, h = seen(stack, "/apps/a", "strip.example")
    assert (path, h["x-forwarded-prefix"]) == ("/a", "/apps")
    path, h = seen(stack, "/webz", "strip.example")
    assert (path, h["x-forwarded-prefix"]) == ("/z", "/web")
    path, h = seen(stack, "/api/v3/a", "strip.example")  # no regex matches: untouched
    assert path == "/api/v3/a" and "x-forwarded-prefix" not in h


def location(stack: Stack, method: str, host: str, path: str) -> tuple[int, str | None]:
    status, h = raw(stack, method, host, path)
    return status, h.get("location")


def test_redirect_regex(stack: Stack) -> None:
    assert location(stack, "GET", "www.rr.example", "/a/b?q=1") == (
        302,
        "https://rr.example/a/b?q=1",
    )
    assert location(stack, "POST", "www.rr.example", "/a") == (307, "https://rr.example/a")
    # The scheme and host kept (whole groups); permanent: 301 / 308.
    assert location(stack, "GET", "rrpath.example", "/old/abc/rest?x=1") == (
        301,
        "http://rrpath.example/new/abc/rest?x=1",
    )
    assert location(stack, "PUT", "rrpath.example", "/old/abc")[0] == 308
    # No match: passed on.
    status, backend, echo = stack.request("/other/abc", host="rrpath.example")
    assert (status, backend, echo["path"]) == (200, "app", "/other/abc")
    # A fixed target: the query goes with the matched .*; the target itself passes.
    assert location(stack, "GET", "fixed.example", "/x?y=1") == (
        302,
        "http://fixed.example/landing",
    )
    status, backend, echo = stack.request("/landing", host="fixed.example")
    assert (status, backend, echo["path"]) == (200, "app", "/landing")
