"""Small proto helpers shared by the back-end modules."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.core.v3 import config_source_pb2 as config_source_v3
from google.protobuf import any_pb2, duration_pb2, json_format


def pack(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def ads_source() -> config_source_v3.ConfigSource:
    return config_source_v3.ConfigSource(
        ads=config_source_v3.AggregatedConfigSource(),
        resource_api_version=config_source_v3.ApiVersion.V3,
    )


def to_dict(message: Any) -> dict[str, Any]:
    """Proto → plain dict in protojson field names (``snake_case``), for YAML/JSON output.
    Keys sorted: proto maps (``typed_per_filter_config``) have no stable iteration order."""
    data = json.loads(
        json_format.MessageToJson(message, preserving_proto_field_name=True, sort_keys=True)
    )
    assert isinstance(data, dict)
    return data
