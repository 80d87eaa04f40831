"""Traefik rules → Envoy-expressible matches.

An Envoy ``RouteMatch`` is a conjunction: one path condition plus header and query conditions.
A rule is brought to disjunctive normal form (``rules.to_dnf``) and every disjunct becomes one
Envoy route with the same action, in place, so the first-match order is kept. Negations become
``invert_match`` header conditions (``:path``, ``:method`` and ``:authority`` are headers to
Envoy too).

Semantics reproduced here (see reference/traefik.md §3):
- Host is case-insensitive, ignores the port and a trailing dot on either side; ``*`` matches
  everything and ``*.domain`` exactly one label. The request's Host is never rewritten (Traefik
  passes it on as received), so the port is tolerated by the regex, not stripped by Envoy.
- v3 regex matchers are unanchored (Go ``regexp.MatchString``); Envoy's ``safe_regex`` is a full
  match, so they are wrapped in ``.*(?:…).*``.
- Envoy's ``path`` conditions see the path without the query; ``:path`` header conditions see the
  query too, so a path condition moved into a header gets an optional ``?…`` tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import re2

from translators import rules
from translators.ir import HeaderMatch, Match, PathMatch, QueryMatch
from translators.rules import Matcher, RuleError, Syntax

_PORT = r"(?::[0-9]+)?"
_QUERY_TAIL = r"(?:\?.*)?"


class UnsupportedMatcher(RuleError):
    """A matcher that parses but that this version cannot translate faithfully."""


def _unanchored(pattern: str) -> str:
    return f"(?s:.*)(?:{pattern})(?s:.*)"


def _host_regex(host: str) -> str:
    """A full-match regex on ``:authority`` for Traefik's ``Host(host)``."""
    host = host.strip().lower().rstrip(".")
    if ":" in host:  # an IPv6 literal: Host(`::1`) matches ``[::1]`` and ``[::1]:8080``
        literal = re2.escape(host)
        return f"(?i)(?:\\[{literal}\\]{_PORT}|{literal})"
    if host.startswith("*."):
        return f"(?i)[^.:]+\\.{re2.escape(host[2:])}\\.?{_PORT}"
    return f"(?i){re2.escape(host)}\\.?{_PORT}"


def _host_regexp_v3(pattern: str) -> str:
    # The canonical host (lower-cased, no port, no trailing dot) is what Traefik searches; the
    # authority may carry a port, which the unanchored search must not see.
    return f"(?:[^:]*(?:{pattern})[^:]*|\\[[^\\]]*(?:{pattern})[^\\]]*\\]){_PORT}"


def _path_header(path: PathMatch) -> HeaderMatch:
    if path.kind == "exact":
        return HeaderMatch(name=":path", kind="regex", value=re2.escape(path.value) + _QUERY_TAIL)
    if path.kind == "prefix":
        return HeaderMatch(name=":path", kind="prefix", value=path.value)
    return HeaderMatch(name=":path", kind="regex", value=f"(?:{path.value}){_QUERY_TAIL}")


def _expand_multi(expr: rules.Expr, syntax: Syntax) -> rules.Expr:
    """v2 multi-argument matchers (``Host(a, b)``) mean "any of": make that explicit."""
    if isinstance(expr, rules.And):
        return rules.And(_expand_multi(expr.left, syntax), _expand_multi(expr.right, syntax))
    if isinstance(expr, rules.Or):
        return rules.Or(_expand_multi(expr.left, syntax), _expand_multi(expr.right, syntax))
    if isinstance(expr, rules.Not):
        return rules.Not(_expand_multi(expr.operand, syntax))
    m = expr
    any_of = {"Host", "HostHeader", "HostRegexp", "Path", "PathPrefix", "Method", "ClientIP"}
    if syntax == "v2" and m.name in any_of and len(m.args) > 1:
        out: rules.Expr = replace(m, args=(m.args[0],))
        for arg in m.args[1:]:
            out = rules.Or(out, replace(m, args=(arg,)))
        return out
    if syntax == "v2" and m.name == "Query":
        # Pieces are re-paired (``Query(`a`, `b`)`` is ``a=b``) and every pair must hold.
        pairs = rules.v2_query_pairs(m.args, m.column)
        return _all_of([replace(m, args=(f"{k}={v}",)) for k, v in pairs])
    if syntax == "v2" and m.name in ("Headers", "HeadersRegexp") and len(m.args) > 2:
        pieces = [replace(m, args=m.args[i : i + 2]) for i in range(0, len(m.args), 2)]
        return _all_of(pieces)
    return m


def _all_of(items: list[Matcher]) -> rules.Expr:
    out: rules.Expr = items[0]
    for item in items[1:]:
        out = rules.And(out, item)
    return out


def _strip_anchors(regex: str) -> str:
    """v2 template regexes are ``^…$``; Envoy's safe_regex is a full match already."""
    if regex.startswith("(?i)"):
        regex = regex[4:]
    regex = regex.removeprefix("^")
    if regex.endswith("$") and not regex.endswith("\\$"):
        regex = regex[:-1]
    return regex


def _leaf(
    matcher: Matcher, syntax: Syntax
) -> tuple[PathMatch | None, list[HeaderMatch], list[QueryMatch]]:
    """One positive matcher → (path condition, header conditions, query conditions)."""
    name, args = matcher.name, matcher.args
    if name in ("Host", "HostHeader"):
        if args[0] == "*":
            return None, [], []
        return None, [HeaderMatch(name=":authority", kind="regex", value=_host_regex(args[0]))], []
    if name == "HostRegexp":
        if syntax == "v2":
            regex = _strip_anchors(rules.v2_template_to_regex(args[0], "host"))
            value = f"(?i)(?:{regex}){_PORT}"
        else:
            value = _host_regexp_v3(args[0])
        return None, [HeaderMatch(name=":authority", kind="regex", value=value)], []
    if name == "Path":
        if syntax == "v2" and "{" in args[0]:
            regex = _strip_anchors(rules.v2_template_to_regex(args[0], "path"))
            return PathMatch(kind="regex", value=regex), [], []
        return PathMatch(kind="exact", value=args[0]), [], []
    if name == "PathPrefix":
        if syntax == "v2" and "{" in args[0]:
            regex = _strip_anchors(rules.v2_template_to_regex(args[0], "pathprefix"))
            return PathMatch(kind="regex", value=f"(?:{regex})(?s:.*)"), [], []
        return PathMatch(kind="prefix", value=args[0]), [], []
    if name == "PathRegexp":
        return PathMatch(kind="regex", value=_unanchored(args[0])), [], []
    if name == "Method":
        return None, [HeaderMatch(name=":method", kind="exact", value=args[0].upper())], []
    if name in ("Header", "Headers"):
        return None, [HeaderMatch(name=args[0].lower(), kind="exact", value=args[1])], []
    if name in ("HeaderRegexp", "HeadersRegexp"):
        return (
            None,
            [HeaderMatch(name=args[0].lower(), kind="regex", value=_unanchored(args[1]))],
            [],
        )
    if name == "Query":
        if syntax == "v2":
            key, _, value = args[0].partition("=")
            if "{" in args[0]:
                raise UnsupportedMatcher(
                    "v2 Query templates are not translated yet", matcher.column
                )
            # v2 reads the first value of the key; an empty value matches any value.
            if not value:
                return None, [], [QueryMatch(name=key, kind="present")]
            return None, [], [QueryMatch(name=key, kind="exact", value=value)]
        return (
            None,
            [],
            [QueryMatch(name=args[0], kind="exact", value=args[1] if len(args) > 1 else "")],
        )
    if name == "QueryRegexp":
        pattern = _unanchored(args[1]) if len(args) > 1 else ""
        return None, [], [QueryMatch(name=args[0], kind="regex", value=pattern)]
    raise UnsupportedMatcher(f"{name} is not translated to Envoy yet", matcher.column)


def _conjunction(conj: Sequence[tuple[bool, Matcher]], syntax: Syntax) -> Match | None:
    """An AND of (negated, matcher) leaves → one Match, or None if it can never match."""
    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query: list[QueryMatch] = []
    for negated, matcher in conj:
        if not negated and matcher.name in ("Host", "HostHeader") and matcher.args[0] == "*":
            continue
        if negated and matcher.name in ("Host", "HostHeader") and matcher.args[0] == "*":
            return None  # !Host(`*`) matches nothing
        p, hs, qs = _leaf(matcher, syntax)
        if negated:
            if qs:
                raise UnsupportedMatcher(
                    f"a negated {matcher.name} cannot be expressed by an Envoy route match yet",
                    matcher.column,
                )
            conds = [_path_header(p)] if p is not None else []
            conds.extend(hs)
            if len(conds) != 1:
                raise UnsupportedMatcher(f"cannot negate {matcher.name}", matcher.column)
            headers.append(replace(conds[0], invert=True))
            continue
        if p is not None:
            if path is None:
                path = p
            else:
                headers.append(_path_header(p))
        headers.extend(hs)
        query.extend(qs)
    return Match(
        path=path if path is not None else PathMatch(kind="prefix", value=""),
        headers=tuple(headers),
        query=tuple(query),
    )


def rule_to_matches(expr: rules.Expr, syntax: Syntax, limit: int = 64) -> tuple[Match, ...]:
    """Every disjunct of the rule as a Match, in rule order. Raises RuleError."""
    dnf = rules.to_dnf(_expand_multi(expr, syntax), limit=limit)
    out: list[Match] = []
    for conj in dnf:
        m = _conjunction(conj, syntax)
        if m is not None and m not in out:
            out.append(m)
    return tuple(out)
