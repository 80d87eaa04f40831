"""Envoy's stateful_session filter with cookie state: Traefik's server-level sticky cookie."""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2 as ss_v3
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2 as cookie_state_v3
from envoy.type.http.v3 import cookie_pb2 as http_cookie_v3

from translators.envoy.common import duration, pack
from translators.envoy.filters import FilterKind, register
from translators.service import StickyCookie

_COOKIE_STATE = "envoy.http.stateful_session.cookie"


def _listener() -> ss_v3.StatefulSession:
    # Disabled on the listener; every route that enables it brings its own cookie. Non-strict:
    # a cookie naming a server that is gone falls back to the load balancer, as in Traefik.
    return ss_v3.StatefulSession()


def _per_route(config: object) -> ss_v3.StatefulSessionPerRoute:
    assert isinstance(config, StickyCookie)
    cookie = http_cookie_v3.Cookie(
        name=config.name,
        path=config.path,
        attributes=[http_cookie_v3.CookieAttribute(name=k, value=v) for k, v in config.attributes],
    )
    if config.max_age > 0:
        cookie.ttl.CopyFrom(duration(config.max_age))
    return ss_v3.StatefulSessionPerRoute(
        stateful_session=ss_v3.StatefulSession(
            session_state=extension_pb2.TypedExtensionConfig(
                name=_COOKIE_STATE,
                typed_config=pack(cookie_state_v3.CookieBasedSessionState(cookie=cookie)),
            )
        )
    )


register(
    "stateful_session",
    FilterKind("envoy.filters.http.stateful_session", _listener, _per_route),
)
