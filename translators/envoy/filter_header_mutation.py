"""Envoy's header_mutation filter, removing request headers before a later filter runs.

Used by forwardAuth's ``envoy`` mode: the client's copies of the headers the auth server vouches
for are removed before the check, as Traefik deletes them, so a client cannot smuggle one to the
backend.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2 as mutation_v3
from envoy.extensions.filters.http.header_mutation.v3 import (
    header_mutation_pb2 as header_mutation_v3,
)

from translators.envoy.filters import FilterKind, register
from translators.middlewares.forward_auth import StripRequestHeaders


def _listener() -> header_mutation_v3.HeaderMutation:
    return header_mutation_v3.HeaderMutation()


def _per_route(config: object) -> header_mutation_v3.HeaderMutationPerRoute:
    assert isinstance(config, StripRequestHeaders)
    return header_mutation_v3.HeaderMutationPerRoute(
        mutations=header_mutation_v3.Mutations(
            request_mutations=[mutation_v3.HeaderMutation(remove=n.lower()) for n in config.names]
        )
    )


register(
    "strip_request_headers",
    FilterKind("envoy.filters.http.header_mutation", _listener, _per_route),
)
