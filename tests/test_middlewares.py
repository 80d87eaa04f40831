"""Middlewares through a real Envoy: what the client gets and what the backend sees."""

from __future__ import annotations

import base64
import hashlib
import http.client
from collections.abc import Callable

import pytest

from controlplane.localrun import Backend
from tests.support import Stack, route_yaml, service_yaml
from tests.support import middleware_yaml as middleware

pytestmark = pytest.mark.envoy


MIDDLEWARES = "---\n".join(
    [
        middleware("strip", "  stripPrefix: {prefixes: [/api, /v1]}"),
        middleware("add", "  addPrefix: {prefix: /v2}"),
        middleware("replace", "  replacePath: {path: /fixed}"),
        middleware("regex", "  replacePathRegex: {regex: '^/foo/(.*)', replacement: '/bar/$1'}"),
        middleware(
            "hdrs",
            """  headers:
    customRequestHeaders: {X-Added: "yes", X-Drop: ""}
    customResponseHeaders: {X-Resp: "a%b", X-Backend: ""}
    frameDeny: true
    contentTypeNosniff: true""",
        ),
        middleware("https", "  redirectScheme: {scheme: https}"),
        middleware(
            "https-perm", "  redirectScheme: {scheme: https, permanent: true, port: '8443'}"
        ),
        middleware("both", "  chain: {middlewares: [{name: strip}, {name: add}]}"),
        middleware("digest", "  digestAuth: {secret: users}"),
        middleware("basic", "  basicAuth: {secret: basic-users}"),
        middleware("htpasswd", "  basicAuth: {secret: htpasswd-users, removeHeader: true}"),
        middleware("bcrypt", "  basicAuth: {secret: bcrypt-users}"),
        middleware("nosecret", "  basicAuth: {secret: missing}"),
    ]
)

ALICE = base64.b64encode(b"alice").decode()
PASSWORD = base64.b64encode(b"s3cret").decode()
# bob's password is s3cret too, as an htpasswd {SHA} line
HTPASSWD = base64.b64encode(
    b"bob:{SHA}" + base64.b64encode(hashlib.sha1(b"s3cret").digest())
).decode()
SECRETS = (
    "apiVersion: v1\nkind: Secret\nmetadata: {name: basic-users, namespace: default}\n"
    "type: kubernetes.io/basic-auth\n"
    f"data: {{username: {ALICE}, password: {PASSWORD}}}\n"
    "---\n"
    "apiVersion: v1\nkind: Secret\nmetadata: {name: htpasswd-users, namespace: default}\n"
    f"data: {{users: {HTPASSWD}}}\n"
    "---\n"
    "apiVersion: v1\nkind: Secret\nmetadata: {name: bcrypt-users, namespace: default}\n"
    'stringData: {users: "carol:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC"}\n'
)


ROUTES = f"""apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: mw, namespace: default}}
spec:
  routes:
{route_yaml("Host(`strip.example`)", "strip")}
{route_yaml("Host(`add.example`)", "add")}
{route_yaml("Host(`replace.example`)", "replace")}
{route_yaml("Host(`regex.example`)", "regex")}
{route_yaml("Host(`hdrs.example`)", "hdrs")}
{route_yaml("Host(`redirect.example`)", "https")}
{route_yaml("Host(`perm.example`)", "https-perm")}
{route_yaml("Host(`chain.example`)", "both")}
{route_yaml("Host(`order.example`)", "add", "strip")}
{route_yaml("Host(`digest.example`)", "digest")}
{route_yaml("Host(`basic.example`)", "basic")}
{route_yaml("Host(`twice.example`)", "basic", "htpasswd")}
{route_yaml("Host(`htpasswd.example`)", "htpasswd")}
{route_yaml("Host(`bcrypt.example`)", "bcrypt")}
{route_yaml("Host(`nosecret.example`)", "nosecret")}
"""


@pytest.fixture
def stack(backends: Callable[[str], Backend], make_stack: Callable[..., Stack]) -> Stack:
    app = backends("app")
    s = make_stack(
        {
            "svc.yaml": service_yaml("app", [app]),
            "mw.yaml": MIDDLEWARES,
            "ir.yaml": ROUTES,
            "secrets.yaml": SECRETS,
        }
    )
    s.wait_serving(lambda: s.request("/", host="add.example")[0] == 200, "routes served")
    return s


def seen(stack: Stack, path: str, host: str, **kw: object) -> tuple[str, dict[str, str]]:
    status, _, echo = stack.request(path, host=host, **kw)  # type: ignore[arg-type]
    assert status == 200, (path, host, status)
    headers = {k.lower(): v for k, v in echo["headers"]}  # type: ignore[union-attr]
    return str(echo["path"]), headers


def test_strip_prefix(stack: Stack) -> None:
    path, h = seen(stack, "/api/users?x=1", "strip.example")
    assert (path, h["x-forwarded-prefix"]) == ("/users?x=1", "/api")
    assert seen(stack, "/apix", "strip.example")[0] == "/x"  # plain string prefix, slash added
    assert seen(stack, "/api", "strip.example")[0] == "/"
    path, h = seen(stack, "/v1/a", "strip.example")  # the second prefix
    assert (path, h["x-forwarded-prefix"]) == ("/a", "/v1")
    path, h = seen(stack, "/other", "strip.example")  # no prefix: untouched, no header
    assert path == "/other" and "x-forwarded-prefix" not in h


def test_add_prefix_and_chains_in_order(stack: Stack) -> None:
    assert seen(stack, "/x", "add.example")[0] == "/v2/x"
    # chain [strip, add]: /api/x → /x → /v2/x
    path, h = seen(stack, "/api/x", "chain.example")
    assert (path, h["x-forwarded-prefix"]) == ("/v2/x", "/api")
    # [add, strip]: /api/x → /v2/api/x, which starts with neither /api nor /v1: unchanged
    path, h = seen(stack, "/api/x", "order.example")
    assert path == "/v2/api/x" and "x-forwarded-prefix" not in h


def test_replace_path_and_regex(stack: Stack) -> None:
    path, h = seen(stack, "/anything/here?q=1", "replace.example")
    assert (path, h["x-replaced-path"]) == ("/fixed?q=1", "/anything/here")
    path, h = seen(stack, "/foo/a/b", "regex.example")
    assert (path, h["x-replaced-path"]) == ("/bar/a/b", "/foo/a/b")
    path, h = seen(stack, "/nomatch", "regex.example")  # no match: untouched, no header
    assert path == "/nomatch" and "x-replaced-path" not in h


def test_headers(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    conn.request("GET", "/", headers={"Host": "hdrs.example", "X-Drop": "client", "X-Added": "c"})
    resp = conn.getresponse()
    import json

    echo = json.loads(resp.read())
    conn.close()
    sent = {k.lower(): v for k, v in echo["headers"]}
    assert sent["x-added"] == "yes"  # set replaces the client's value
    assert "x-drop" not in sent  # an empty value deletes
    assert resp.getheader("X-Resp") == "a%b"  # literal, not an Envoy formatter
    assert resp.getheader("X-Backend") is None  # the backend's header deleted
    assert resp.getheader("X-Frame-Options") == "DENY"
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


def _raw(stack: Stack, method: str, host: str, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    conn.request(method, path, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.getheader("Location")


def test_redirect_scheme_statuses_follow_traefik(stack: Stack) -> None:
    assert _raw(stack, "GET", "redirect.example:8000", "/a?b=1") == (
        302,
        "https://redirect.example/a?b=1",
    )
    assert _raw(stack, "POST", "redirect.example", "/a")[0] == 307
    assert _raw(stack, "GET", "perm.example", "/a") == (301, "https://perm.example:8443/a")
    assert _raw(stack, "PUT", "perm.example", "/a")[0] == 308


def test_untranslated_security_middleware_fails_closed(stack: Stack) -> None:
    status, backend, _ = stack.request("/", host="digest.example")
    assert (status, backend) == (500, "")


def _auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=5)
    conn.request("GET", "/", headers={"Host": "basic.example"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 401
    assert (resp.getheader("WWW-Authenticate") or "").startswith("Basic")
    assert stack.request("/", host="basic.example", headers=_auth("alice", "wrong"))[0] == 401
    status, backend, echo = stack.request(
        "/", host="basic.example", headers=_auth("alice", "s3cret")
    )
    assert (status, backend) == (200, "app")
    sent = {k.lower() for k, _ in echo["headers"]}  # type: ignore[union-attr]
    assert "authorization" in sent  # forwarded unless removeHeader
    status, _, echo = stack.request("/", host="htpasswd.example", headers=_auth("bob", "s3cret"))
    assert status == 200
    sent = {k.lower() for k, _ in echo["headers"]}  # type: ignore[union-attr]
    assert "authorization" not in sent  # removeHeader: true
    # bcrypt users are checked by Switchman's authorization service (tests/test_auth_service.py).
    assert stack.request("/", host="bcrypt.example", headers=_auth("carol", "x"))[0] == 401
    # A missing Secret: the route fails closed, never forwards.
    assert stack.request("/", host="nosecret.example")[0] == 500


def test_a_filter_kind_used_twice_on_one_route_takes_two_instances(stack: Stack) -> None:
    # basic (alice) then htpasswd (bob): no user is in both lists, so nobody gets through,
    # and each check answers 401 on its own.
    assert stack.request("/", host="twice.example", headers=_auth("alice", "s3cret"))[0] == 401
    assert stack.request("/", host="twice.example", headers=_auth("bob", "s3cret"))[0] == 401
    listeners = stack.controlplane.admin_json("/debug/config")["resources"]["Listener"]["items"]
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert "envoy.filters.http.basic_auth/basic_auth/1" in names
