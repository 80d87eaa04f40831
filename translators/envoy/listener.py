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
from envoy.extensions.filters.http.router.v3 import router_pb2 as router_v3
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_v3,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    header_mutation_pb2 as early_v3,
)
from google.protobuf import wrappers_pb2

from translators.envoy.common import ads_source, pack
from translators.envoy.filters import listener_filters
from translators.ir import CLIENT_IP_HEADER, Listener

# Set before route selection, as Traefik's entry point does before its router runs: the TCP
# peer for ClientIP rules, and X-Forwarded-Host (Traefik trusts no forwarded headers by default,
# so a client's value never reaches a Header rule).
_EARLY_HEADERS = (
    (CLIENT_IP_HEADER, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-forwarded-host", "%REQ(:AUTHORITY)%"),
)


def _early_mutation() -> extension_v3.TypedExtensionConfig:
    overwrite = base_v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    return extension_v3.TypedExtensionConfig(
        name="envoy.http.early_header_mutation.header_mutation",
        typed_config=pack(
            early_v3.HeaderMutation(
                mutations=[
                    mutation_v3.HeaderMutation(
                        append=base_v3.HeaderValueOption(
                            header=base_v3.HeaderValue(key=key, value=value),
                            append_action=overwrite,
                        )
                    )
                    for key, value in _EARLY_HEADERS
                ]
            )
        ),
    )


def _local_reply() -> hcm_v3.LocalReplyConfig:
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
        ],
        body_format=fmt_v3.SubstitutionFormatString(
            text_format_source=base_v3.DataSource(inline_string="%LOCAL_REPLY_BODY%")
        ),
    )


def build_listener(listener: Listener) -> lds_v3.Listener:
    hcm = hcm_v3.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_v3.HttpConnectionManager.CodecType.AUTO,
        rds=hcm_v3.Rds(config_source=ads_source(), route_config_name=listener.route_config),
        http_filters=[
            *listener_filters(dict(listener.filter_slots)),
            hcm_v3.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_v3.Router())
            ),
        ],
        # The client address is the TCP peer, as in Traefik without trusted forwarded headers.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        local_reply_config=_local_reply(),
        early_header_mutation_extensions=[_early_mutation()],
        # Traefik (since v3.3.6) cleans ``.``/``..`` segments and repeated slashes before
        # routing; escaped slashes stay as they are (reserved characters are not decoded).
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
        path_with_escaped_slashes_action=hcm_v3.HttpConnectionManager.PathWithEscapedSlashesAction.KEEP_UNCHANGED,
    )
    return lds_v3.Listener(
        name=listener.name,
        address=address_v3.Address(
            socket_address=address_v3.SocketAddress(
                address=listener.address, port_value=listener.port
            )
        ),
        filter_chains=[
            listener_components_v3.FilterChain(
                filters=[
                    listener_components_v3.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm)
                    )
                ]
            )
        ],
    )
