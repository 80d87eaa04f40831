"""Envoy's custom_response filter for the errors middleware (translators/middlewares/errors.py).

A route with an errors middleware carries a matcher on the response status: each group of caught
statuses answered alike maps to a RedirectPolicy that re-runs the request as a GET against the
middleware's internal route (host ``ERROR_PAGE_HOST``, picked by ``ERROR_PAGE_HEADER``; the caught
status travels in ``STATUS_HEADER`` when the page's path depends on it). Envoy 1.40 gives the page
the caught status unless the policy sets ``status_code`` (statusRewrites). The internal route
turns the filter on with an empty matcher: the redirected answer is then finished by the policy
that redirected it.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.route.v3 import route_components_pb2 as route_v3
from envoy.extensions.filters.http.custom_response.v3 import (
    custom_response_pb2 as custom_response_v3,
)
from envoy.extensions.http.custom_response.redirect_policy.v3 import (
    redirect_policy_pb2 as redirect_policy_v3,
)
from envoy.type.matcher.v3 import status_code_input_pb2
from google.protobuf import wrappers_pb2
from xds.core.v3 import extension_pb2 as xds_extension_v3
from xds.type.matcher.v3 import matcher_pb2 as xds_matcher_v3
from xds.type.matcher.v3 import regex_pb2 as xds_regex_v3
from xds.type.matcher.v3 import string_pb2 as xds_string_v3

from translators.envoy.common import pack
from translators.envoy.filters import FilterKind, register
from translators.ir import ERROR_PAGE_HEADER
from translators.middlewares.errors import (
    ERROR_PAGE_HOST,
    STATUS_HEADER,
    ErrorPages,
    ErrorPolicy,
    status_regex,
)

_OVERWRITE = base_v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_FieldMatcher = xds_matcher_v3.Matcher.MatcherList.FieldMatcher
_Predicate = xds_matcher_v3.Matcher.MatcherList.Predicate


def _listener() -> custom_response_v3.CustomResponse:
    return custom_response_v3.CustomResponse()


def _header(key: str, value: str) -> base_v3.HeaderValueOption:
    return base_v3.HeaderValueOption(
        header=base_v3.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def _policy(config: ErrorPages, policy: ErrorPolicy) -> redirect_policy_v3.RedirectPolicy:
    headers = [_header(ERROR_PAGE_HEADER, config.key)]
    if config.by_status:
        headers.append(_header(STATUS_HEADER, "%RESPONSE_CODE%"))
    out = redirect_policy_v3.RedirectPolicy(
        # The internal route sets the page's path; the request's own query is not sent.
        redirect_action=route_v3.RedirectAction(
            host_redirect=ERROR_PAGE_HOST, path_redirect="/", strip_query=True
        ),
        request_headers_to_add=headers,
    )
    if policy.status is not None:
        out.status_code.CopyFrom(wrappers_pb2.UInt32Value(value=policy.status))
    return out


def _matcher(
    config: ErrorPages, policy: ErrorPolicy
) -> xds_matcher_v3.Matcher.MatcherList.FieldMatcher:
    status = xds_extension_v3.TypedExtensionConfig(
        name="status",
        typed_config=pack(status_code_input_pb2.HttpResponseStatusCodeMatchInput()),
    )
    predicate = _Predicate(
        single_predicate=_Predicate.SinglePredicate(
            input=status,
            value_match=xds_string_v3.StringMatcher(
                safe_regex=xds_regex_v3.RegexMatcher(
                    google_re2=xds_regex_v3.RegexMatcher.GoogleRE2(),
                    regex=status_regex(policy.codes),
                )
            ),
        )
    )
    action = xds_extension_v3.TypedExtensionConfig(
        name=f"errors/{config.key}/{policy.status or 'caught'}",
        typed_config=pack(_policy(config, policy)),
    )
    return _FieldMatcher(
        predicate=predicate, on_match=xds_matcher_v3.Matcher.OnMatch(action=action)
    )


def _per_route(config: object) -> custom_response_v3.CustomResponse:
    assert isinstance(config, ErrorPages)
    if not config.policies:
        return custom_response_v3.CustomResponse()
    return custom_response_v3.CustomResponse(
        custom_response_matcher=xds_matcher_v3.Matcher(
            matcher_list=xds_matcher_v3.Matcher.MatcherList(
                matchers=[_matcher(config, p) for p in config.policies]
            )
        )
    )


register("custom_response", FilterKind("envoy.filters.http.custom_response", _listener, _per_route))
