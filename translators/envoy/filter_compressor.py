"""Envoy's compressor filter for the compress middleware: one instance per encoding.

A compressor instance holds one library, so gzip, br and zstd are three kinds, each disabled in
the listener and turned on by the routes whose ``encodings`` name it. With several enabled, Envoy
picks the encoding the client weighs highest; on a tie zstd wins (``choose_first``), then br,
then gzip (Traefik's default order). The minimum size and the content types live in the
listener's instance: Traefik's default 1024 bytes and a broad allow-list (Envoy's content types
are an allow-list; Traefik compresses every type it does not exclude).
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2 as compressor_v3
from google.protobuf import wrappers_pb2

from translators.envoy.common import pack
from translators.envoy.filters import FilterKind, register
from translators.middlewares.traffic import COMPRESSIBLE, MIN_BODY_BYTES, CompressConfig

_LIBRARIES = {
    "gzip": ("envoy.compression.gzip.compressor", gzip_pb2.Gzip),
    "br": ("envoy.compression.brotli.compressor", brotli_pb2.Brotli),
    "zstd": ("envoy.compression.zstd.compressor", zstd_pb2.Zstd),
}


def _listener(encoding: str) -> compressor_v3.Compressor:
    name, library = _LIBRARIES[encoding]
    return compressor_v3.Compressor(
        compressor_library=extension_pb2.TypedExtensionConfig(
            name=name, typed_config=pack(library())
        ),
        response_direction_config=compressor_v3.Compressor.ResponseDirectionConfig(
            common_config=compressor_v3.Compressor.CommonDirectionConfig(
                min_content_length=wrappers_pb2.UInt32Value(value=MIN_BODY_BYTES),
                content_type=list(COMPRESSIBLE),
            ),
        ),
        choose_first=encoding == "zstd",
    )


def _per_route(config: object) -> compressor_v3.CompressorPerRoute:
    assert isinstance(config, CompressConfig)
    # Enabling the instance is all a route does; the settings are the listener's.
    return compressor_v3.CompressorPerRoute(overrides=compressor_v3.CompressorOverrides())


def _listener_for(encoding: str) -> Callable[[], compressor_v3.Compressor]:
    return lambda: _listener(encoding)


for _kind, _encoding in (
    ("compressor", "gzip"),
    ("compressor_br", "br"),
    ("compressor_zstd", "zstd"),
):
    register(
        _kind,
        FilterKind("envoy.filters.http.compressor", _listener_for(_encoding), _per_route),
    )
