"""basicAuth/digestAuth checked by Switchman's own authorization service (controlplane/authz.py).

Through the real control plane process and a real Envoy: users Envoy's basic_auth filter cannot
check (bcrypt, apr1) and digestAuth go over ext_authz to the control plane, which fails closed.
Plus unit tests of the hash checks and the Digest nonces.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import secrets
from collections.abc import Callable

import bcrypt
import pytest

from controlplane.authz import DigestNonces, parse_basic, parse_digest, verify_password
from controlplane.localrun import Backend
from tests.support import Stack, service_yaml
from tests.support import middleware_yaml as middleware
from translators.middlewares.auth import hash_scheme

pytestmark = pytest.mark.envoy

# carol (bcrypt, as $2y$ like htpasswd -B), dave (apr1), bob ({SHA}).
CAROL = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
DAVE = "$apr1$r31.....$dgWiH2syS1n3X3ab6nQPl0"  # openssl passwd -apr1, password "apr1"
BOB_SHA = "{SHA}" + base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
HA1 = hashlib.md5(b"erin:traefik:s3cret").hexdigest()
HA1_OTHER = hashlib.md5(b"frank:other:s3cret").hexdigest()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


MIXED_LINES = "\n".join([f"carol:{CAROL}", f"dave:{DAVE}", f"bob:{BOB_SHA}"])
DIGEST_LINES = "\n".join([f"erin:traefik:{HA1}", f"frank:other:{HA1_OTHER}"])


MIDDLEWARES = "---\n".join(
    [
        middleware("mixed", "  basicAuth: {secret: mixed-users, realm: shop}"),
        middleware(
            "strip",
            "  basicAuth: {secret: mixed-users, removeHeader: true, headerField: X-User}",
        ),
        middleware("k8s", "  basicAuth: {secret: k8s-users}"),
        middleware("digest", "  digestAuth: {secret: digest-users, headerField: X-User}"),
    ]
)
SECRETS = "---\n".join(
    [
        "apiVersion: v1\nkind: Secret\nmetadata: {name: mixed-users, namespace: default}\n"
        f"data: {{users: {b64(MIXED_LINES)}}}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k8s-users, namespace: default}\n"
        "type: kubernetes.io/basic-auth\n"
        f"data: {{username: {b64('alice')}, password: {b64('s3cret')}}}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: digest-users, namespace: default}\n"
        f"data: {{users: {b64(DIGEST_LINES)}}}\n",
    ]
)


def route(host: str, mw: str) -> str:
    return (
        f"  - match: Host(`{host}`)\n    middlewares: [{{name: {mw}}}]\n"
        "    services: [{name: app, port: 80}]"
    )


ROUTES = (
    "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\n"
    "metadata: {name: auth, namespace: default}\nspec:\n  routes:\n"
    + "\n".join(
        [
            route("mixed.example", "mixed"),
            route("strip.example", "strip"),
            route("k8s.example", "k8s"),
            route("digest.example", "digest"),
        ]
    )
    + "\n"
)


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
    s.wait_serving(
        lambda: s.request("/", host="mixed.example", headers=basic("bob", "s3cret"))[0] == 200,
        "auth routes served",
    )
    return s


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": f"Basic {b64(f'{user}:{password}')}"}


def raw(
    stack: Stack, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=10)
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def sent_headers(echo: dict[str, object]) -> dict[str, str]:
    return {k.lower(): v for k, v in echo["headers"]}  # type: ignore[attr-defined]


def test_basic_auth_bcrypt_apr1_and_sha_on_one_middleware(stack: Stack) -> None:
    for user, password in (("carol", "s3cret"), ("dave", "apr1"), ("bob", "s3cret")):
        status, backend, echo = stack.request(
            "/", host="mixed.example", headers=basic(user, password)
        )
        assert (status, backend) == (200, "app"), user
        assert "authorization" in sent_headers(echo)  # forwarded: no removeHeader
    for user, password in (("carol", "wrong"), ("dave", "s3cret"), ("nobody", "s3cret")):
        status, headers, _ = raw(stack, "mixed.example", headers=basic(user, password))
        assert status == 401, user
        assert headers["www-authenticate"] == 'Basic realm="shop"'
    status, headers, _ = raw(stack, "mixed.example")  # no credentials at all
    assert (status, headers["www-authenticate"]) == (401, 'Basic realm="shop"')
    status, headers, _ = raw(stack, "mixed.example", headers={"Authorization": "Basic !!!"})
    assert status == 401


def test_remove_header_and_header_field(stack: Stack) -> None:
    status, _, echo = stack.request(
        "/", host="strip.example", headers={**basic("carol", "s3cret"), "X-User": "forged"}
    )
    assert status == 200
    sent = sent_headers(echo)
    assert "authorization" not in sent
    assert sent["x-user"] == "carol"  # set by the service, the client's value replaced
    status, headers, _ = raw(stack, "strip.example", headers=basic("carol", "nope"))
    assert (status, headers["www-authenticate"]) == (401, 'Basic realm="traefik"')


def test_kubernetes_basic_auth_secret_stays_on_envoys_filter(stack: Stack) -> None:
    config = stack.controlplane.admin_json("/debug/config")
    text = str(config)
    assert "ExtAuthzPerRoute" in text and "BasicAuthPerRoute" in text
    assert stack.request("/", host="k8s.example", headers=basic("alice", "s3cret"))[0] == 200
    assert stack.request("/", host="k8s.example", headers=basic("alice", "x"))[0] == 401


def _challenge(stack: Stack, path: str = "/") -> dict[str, str]:
    status, headers, _ = raw(stack, "digest.example", path)
    assert status == 401
    value = headers["www-authenticate"]
    assert value.startswith("Digest ")
    params = parse_digest(value)
    assert params is not None
    assert params["realm"] == "traefik" and params["qop"] == "auth"
    assert params["algorithm"] == "MD5" and params["nonce"] and params["opaque"]
    return params


def digest_header(
    c: dict[str, str], user: str, password: str, uri: str, nc: int = 1, method: str = "GET"
) -> str:
    ha1 = hashlib.md5(f"{user}:{c['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce = secrets.token_hex(8)
    ncv = f"{nc:08x}"
    resp = hashlib.md5(f"{ha1}:{c['nonce']}:{ncv}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{c["realm"]}", nonce="{c["nonce"]}", uri="{uri}", '
        f'algorithm=MD5, response="{resp}", opaque="{c["opaque"]}", qop=auth, nc={ncv}, '
        f'cnonce="{cnonce}"'
    )


def test_digest_auth_challenge_response(stack: Stack) -> None:
    c = _challenge(stack)
    uri = "/a?b=1"
    ok = {"Authorization": digest_header(c, "erin", "s3cret", uri), "X-User": "forged"}
    status, backend, echo = stack.request(uri, host="digest.example", headers=ok)
    assert (status, backend) == (200, "app")
    assert sent_headers(echo)["x-user"] == "erin"
    # the same header again: nc did not grow, a replay
    assert raw(stack, "digest.example", uri, {"Authorization": ok["Authorization"]})[0] == 401
    # the next nc on the same nonce is fine
    nxt = {"Authorization": digest_header(c, "erin", "s3cret", uri, nc=2)}
    assert stack.request(uri, host="digest.example", headers=nxt)[0] == 200
    # wrong password, wrong uri, a user of another realm, a forged nonce
    bad = {"Authorization": digest_header(c, "erin", "wrong", uri, nc=3)}
    status, headers, _ = raw(stack, "digest.example", uri, bad)
    assert status == 401 and headers["www-authenticate"].startswith('Digest realm="traefik"')
    other = {"Authorization": digest_header(c, "erin", "s3cret", "/elsewhere", nc=4)}
    assert raw(stack, "digest.example", uri, other)[0] == 401
    frank = {"Authorization": digest_header({**c, "realm": "other"}, "frank", "s3cret", uri)}
    assert raw(stack, "digest.example", uri, frank)[0] == 401
    forged = {**c, "nonce": "0" * 64}
    assert (
        raw(
            stack,
            "digest.example",
            uri,
            {"Authorization": digest_header(forged, "erin", "s3cret", uri)},
        )[0]
        == 401
    )
    # Basic credentials are no Digest
    assert raw(stack, "digest.example", uri, basic("erin", "s3cret"))[0] == 401


def test_control_plane_down_fails_closed(stack: Stack) -> None:
    assert stack.request("/", host="mixed.example", headers=basic("carol", "s3cret"))[0] == 200
    stack.controlplane.kill()
    for _ in range(3):
        status, backend, _ = stack.request(
            "/", host="mixed.example", headers=basic("carol", "s3cret")
        )
        assert (status, backend) == (500, ""), status
    status, backend, _ = stack.request("/", host="digest.example")
    assert (status, backend) == (500, "")
    # Envoy's own filter needs no control plane
    assert stack.request("/", host="k8s.example", headers=basic("alice", "s3cret"))[0] == 200


# --- units -----------------------------------------------------------------------------------


def test_verify_password_schemes() -> None:
    for prefix in ("$2a$", "$2b$", "$2y$"):
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
        hashed = prefix + hashed[4:]
        assert hash_scheme(hashed) == "bcrypt"
        assert verify_password(hashed, "pw") and not verify_password(hashed, "px")
    assert verify_password(DAVE, "apr1") and not verify_password(DAVE, "s3cret")
    md5 = "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"  # openssl passwd -1 -salt saltsalt password
    assert hash_scheme(md5) == "md5"
    assert verify_password(md5, "password") and not verify_password(md5, "Password")
    assert verify_password(BOB_SHA, "s3cret") and not verify_password(BOB_SHA, "s3cret ")
    # malformed hashes, over-long bcrypt passwords and unknown schemes never match
    assert not verify_password("$2y$05$short", "pw")
    assert not verify_password("$apr1$x", "pw")
    assert not verify_password(CAROL, "x" * 100)
    assert hash_scheme("plain") is None and not verify_password("plain", "plain")


def test_parse_headers() -> None:
    assert parse_basic("Basic " + b64("u:p:q")) == ("u", "p:q")
    assert parse_basic("basic " + b64("nocolon")) is None
    assert parse_basic("Bearer x") is None
    p = parse_digest('Digest username="a\\"b", nc=00000001, qop=auth, uri="/x,y"')
    assert p == {"username": 'a"b', "nc": "00000001", "qop": "auth", "uri": "/x,y"}
    assert parse_digest('Digest a="1", a="2"') is None
    assert parse_digest("Basic abc") is None


def test_digest_nonces_sign_expire_and_track_nc() -> None:
    now = [1_000_000.0]
    nonces = DigestNonces(key=b"k" * 32, lifetime=300, clock=lambda: now[0])
    nonce = nonces.issue()
    assert re.fullmatch(r"[0-9a-f]{64}", nonce)
    assert nonces.check(nonce) == "ok"
    assert nonces.check(nonce[:-1] + ("0" if nonce[-1] != "0" else "1")) == "bad"
    assert DigestNonces(key=b"x" * 32, clock=lambda: now[0]).check(nonce) == "bad"
    assert nonces.use(nonce, 1) and nonces.use(nonce, 3)
    assert not nonces.use(nonce, 3) and not nonces.use(nonce, 2)
    now[0] += 301
    assert nonces.check(nonce) == "stale"


def test_service_fails_closed_on_an_unknown_key_and_follows_the_latest_translation() -> None:
    import asyncio

    from envoy.service.auth.v3 import external_auth_pb2 as auth_v3

    from controlplane.authz import AuthorizationService
    from translators.errors import SourceRef
    from translators.ir import IR, FilterUse, Forward, Match, Route
    from translators.middlewares.auth import AuthServiceConfig

    config = AuthServiceConfig(
        key="default/mw", scheme="basic", realm="r", users=(("bob", BOB_SHA),), remove_header=True
    )
    route = Route(
        name="r",
        router="r",
        entrypoint="web",
        match=Match(),
        action=Forward(backends=()),
        priority=1,
        source=SourceRef(),
        filters=(FilterUse(kind="ext_authz", config=config),),
    )
    current: list[IR | None] = [None]
    service = AuthorizationService(lambda: current[0])

    def check(key: str, authorization: str) -> auth_v3.CheckResponse:
        req = auth_v3.CheckRequest()
        req.attributes.context_extensions["switchman.auth"] = key
        req.attributes.request.http.headers["authorization"] = authorization
        return asyncio.run(service.Check(req, None))  # type: ignore[arg-type]

    assert check("default/mw", "").denied_response.status.code == 500  # nothing published yet
    current[0] = IR(routes=(route,))
    ok = check("default/mw", basic("bob", "s3cret")["Authorization"])
    assert ok.status.code == 0 and list(ok.ok_response.headers_to_remove) == ["authorization"]
    denied = check("default/mw", basic("bob", "x")["Authorization"])
    assert denied.denied_response.status.code == 401
    assert [(h.header.key, h.header.value) for h in denied.denied_response.headers] == [
        ("WWW-Authenticate", 'Basic realm="r"')
    ]
    assert check("default/other", "").denied_response.status.code == 500
    current[0] = IR()  # the middleware is gone from the latest translation
    assert check("default/mw", basic("bob", "s3cret")["Authorization"]).status.code != 0
