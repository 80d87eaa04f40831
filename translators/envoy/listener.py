"""Listener (LDS) for one entry point: an HTTP connection manager fed by RDS over ADS."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2 as accesslog_v3
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2 as mutation_v3
from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.core.v3 import extension_pb2 as extension_v3
from envoy.config.core.v3 import substitution_format_string_pb2 as fmt_v3
from envoy.config.listener.v3 import listener_components_pb2 as listener_components_v3
from envoy.config.listener.v3 import listener_pb2 as lds_v3
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2 as cel_v3
from envoy.extensions.filters.http.router.v3 import router_pb2 as router_v3
from envoy.extensions.filters.listener.tls_inspector.v3 import (
    tls_inspector_pb2 as tls_inspector_v3,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_v3,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2 as early_v3,
)
from google.protobuf import wrappers_pb2

from translators.envoy.common import ads_source, pack
from translators.envoy.filters import listener_filters
from translators.envoy.secret import build_tls_context
from translators.ir import CLIENT_IP_HEADER, ERROR_PAGE_HEADER, Listener, LocalReply
from translators.scopes import SCOPE_HEADER, scope_key

# Set before route selection, as Traefik's entry point does before its router runs: the TCP
# peer for ClientIP rules, and X-Forwarded-Host (Traefik trusts no forwarded headers by default,
# so a client's value never reaches a Header rule).
_EARLY_HEADERS = (
    (CLIENT_IP_HEADER, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-forwarded-host", "%REQ(:AUTHORITY)%"),
)
_CLIENT_CERT_HEADERS = ("x-forwarded-tls-client-cert", "x-forwarded-tls-client-cert-info")


def _early_mutation(scope: str | None) -> extension_v3.TypedExtensionConfig:
    """``scope``: the route configuration of a scoped listener, the scope key's prefix."""
    overwrite = base_v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    headers: tuple[tuple[str, str], ...] = _EARLY_HEADERS
    if scope is not None:
        headers += ((SCOPE_HEADER, scope_key(scope, "%REQ(:AUTHORITY)%")),)
    return extension_v3.TypedExtensionConfig(
        name="envoy.http.early_header_mutation.header_mutation",
        typed_config=pack(
            early_v3.HeaderMutation(
                mutations=[
                    # Only the errors middleware's redirect may pick an error-page route (Envoy
                    # does not run these mutations again for the redirected request).
                    mutation_v3.HeaderMutation(remove=ERROR_PAGE_HEADER),
                    # Traefik's entry point drops a client's copies of the headers
                    # passTLSClientCert writes (forwarded headers are not trusted by default).
                    *(mutation_v3.HeaderMutation(remove=name) for name in _CLIENT_CERT_HEADERS),
                    *(
                        mutation_v3.HeaderMutation(
                            append=base_v3.HeaderValueOption(
                                header=base_v3.HeaderValue(key=key, value=value),
                                append_action=overwrite,
                            )
                        )
                        for key, value in headers
                    ),
                ]
            )
        ),
    )


def _cluster_reply(reply: LocalReply) -> hcm_v3.ResponseMapper:
    """A mapper for one answer of some clusters (circuitBreaker, inFlightReq): the response
    flag, and the upstream cluster (set before the host is picked) by a CEL filter."""
    names = ", ".join(
        "'" + n.replace("\\", "\\\\").replace("'", "\\'") + "'" for n in reply.clusters
    )
    return hcm_v3.ResponseMapper(
        filter=accesslog_v3.AccessLogFilter(
            and_filter=accesslog_v3.AndFilter(
                filters=[
                    accesslog_v3.AccessLogFilter(
                        response_flag_filter=accesslog_v3.ResponseFlagFilter(flags=[reply.flag])
                    ),
                    accesslog_v3.AccessLogFilter(
                        extension_filter=accesslog_v3.ExtensionFilter(
                            name="envoy.access_loggers.extension_filters.cel",
                            typed_config=pack(
                                cel_v3.ExpressionFilter(expression=f"xds.cluster_name in [{names}]")
                            ),
                        )
                    ),
                ]
            )
        ),
        status_code=wrappers_pb2.UInt32Value(value=reply.status),
        body=base_v3.DataSource(inline_string=reply.body),
    )


def _local_reply(replies: tuple[LocalReply, ...] = ()) -> hcm_v3.LocalReplyConfig:
    """Traefik's status codes and bodies where Envoy's differ."""

    def mapper(flag: str, status: int, body: str) -> hcm_v3.ResponseMapper:
        return hcm_v3.ResponseMapper(
            filter=accesslog_v3.AccessLogFilter(
                response_flag_filter=accesslog_v3.ResponseFlagFilter(flags=[flag])
            ),
            status_code=wrappers_pb2.UInt32Value(value=status),
            body=base_v3.DataSource(inline_string=body),
        )

    return hcm_v3.LocalReplyConfig(
        mappers=[
            # No route: Traefik answers 404 with Go's "404 page not found".
            mapper("NR", 404, "404 page not found\n"),
            # Connection failure to the backend: Traefik 502, Envoy 503.
            mapper("UF", 502, "Bad Gateway"),
            *(_cluster_reply(r) for r in replies),
        ],
        body_format=fmt_v3.SubstitutionFormatString(
            text_format_source=base_v3.DataSource(inline_string="%LOCAL_REPLY_BODY%")
        ),
    )


def build_listener(listener: Listener) -> lds_v3.Listener:
    plain = _http_chain(listener, listener.route_config)
    out = lds_v3.Listener(
        name=listener.name,
        address=address_v3.Address(
            socket_address=address_v3.SocketAddress(
                address=listener.address, port_value=listener.port
            )
        ),
        filter_chains=[plain],
    )
    if listener.tls_chains:
        # TLS and plaintext on one port, as a Traefik entry point: the TLS inspector tells a
        # ClientHello (and its SNI) from plaintext; TLS routes are only in the TLS chains' route
        # configurations, plaintext routes only in the plaintext one.
        out.listener_filters.append(
            listener_components_v3.ListenerFilter(
                name="envoy.filters.listener.tls_inspector",
                typed_config=pack(tls_inspector_v3.TlsInspector()),
            )
        )
        plain.filter_chain_match.transport_protocol = "raw_buffer"
        for chain in listener.tls_chains:
            fc = _http_chain(listener, chain.route_config)
            fc.filter_chain_match.transport_protocol = "tls"
            fc.filter_chain_match.server_names.extend(chain.server_names)
            fc.transport_socket.CopyFrom(
                base_v3.TransportSocket(
                    name="envoy.transport_sockets.tls", typed_config=pack(build_tls_context(chain))
                )
            )
            out.filter_chains.append(fc)
    return out


def _http_chain(listener: Listener, route_config: str) -> listener_components_v3.FilterChain:
    hcm = hcm_v3.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_v3.HttpConnectionManager.CodecType.AUTO,
        http_filters=[
            *listener_filters(dict(listener.filter_slots)),
            hcm_v3.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_v3.Router())
            ),
        ],
        # The client address is the TCP peer, as in Traefik without trusted forwarded headers.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        local_reply_config=_local_reply(listener.local_replies),
        early_header_mutation_extensions=[
            _early_mutation(route_config if listener.scoped else None)
        ],
        # Traefik (since v3.3.6) cleans ``.``/``..`` segments and repeated slashes before
        # routing; escaped slashes stay as they are (reserved characters are not decoded).
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
        path_with_escaped_slashes_action=hcm_v3.HttpConnectionManager.PathWithEscapedSlashesAction.KEEP_UNCHANGED,
    )
    if listener.scoped:
        hcm.scoped_routes.CopyFrom(_scoped_routes(route_config))
    else:
        hcm.rds.CopyFrom(hcm_v3.Rds(config_source=ads_source(), route_config_name=route_config))
    return listener_components_v3.FilterChain(
        filters=[
            listener_components_v3.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm)
            )
        ]
    )


def _scoped_routes(route_config: str) -> hcm_v3.ScopedRoutes:
    """Scoped RDS (translators/scopes.py): the key is the early-set scope header up to its first
    ``:`` (``<route config>|<host>``, the port left out); the scopes (SRDS) and each one's
    RouteConfiguration (RDS) come over ADS."""
    builder = hcm_v3.ScopedRoutes.ScopeKeyBuilder
    return hcm_v3.ScopedRoutes(
        name=route_config,
        scope_key_builder=builder(
            fragments=[
                builder.FragmentBuilder(
                    header_value_extractor=builder.FragmentBuilder.HeaderValueExtractor(
                        name=SCOPE_HEADER, element_separator=":", index=0
                    )
                )
            ]
        ),
        rds_config_source=ads_source(),
        scoped_rds=hcm_v3.ScopedRds(scoped_rds_config_source=ads_source()),
    )
