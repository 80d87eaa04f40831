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

import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import replace

import re2

from translators import regex as rx
from translators import rules
from translators.ir import CLIENT_IP_HEADER, HeaderMatch, Match, PathMatch, QueryMatch
from translators.rules import Matcher, RuleError, Syntax

_PORT = r"(?::[0-9]+)?"
_QUERY_TAIL = r"(?:\?.*)?"


class UnsupportedMatcher(RuleError):
    """A matcher that parses but that this version cannot translate faithfully."""


def _unanchored(pattern: str) -> str:
    return f"(?s:.*)(?:{pattern})(?s:.*)"


def _host_regex(host: str, wildcard: bool = True) -> str:
    """A full-match regex on ``:authority`` for Traefik's ``Host(host)``."""
    host = host.strip().lower().rstrip(".")
    if ":" in host:  # an IPv6 literal: Host(`::1`) matches ``[::1]`` and ``[::1]:8080``
        literal = re2.escape(host)
        return f"(?i)(?:\\[{literal}\\]{_PORT}|{literal})"
    if wildcard and host.startswith("*."):
        return f"(?i)[^.:]+\\.{re2.escape(host[2:])}\\.?{_PORT}"
    return f"(?i){re2.escape(host)}\\.?{_PORT}"


def _path_header(path: PathMatch, column: int = 0) -> HeaderMatch:
    """A path condition as a ``:path`` header condition, which also sees the query."""
    if path.search is not None:
        # An unanchored search on the path: it must neither run into nor end in the query.
        try:
            start, body, end = rx.split_anchors(path.search)
        except rx.RegexRewriteError as exc:
            raise UnsupportedMatcher(f"PathRegexp: {exc}", column) from exc
        head = "" if start else "[^?]*"
        tail = "" if end else "[^?]*"
        return HeaderMatch(name=":path", kind="regex", value=f"{head}(?:{body}){tail}{_QUERY_TAIL}")
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


_TOKEN = re2.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
ALWAYS = "always"
NEVER_MATCH = "never"
Conditions = tuple[PathMatch | None, list[HeaderMatch], list[QueryMatch]]


def _header_name(name: str, column: int) -> str:
    if not _TOKEN.fullmatch(name):
        raise RuleError(f"{name!r} is not a valid HTTP header name", column)
    return name.lower()


def _path_regex(text: str) -> str:
    return "".join(rx.path_literal(c) for c in text)


def _query_literal(c: str) -> str:
    """One character of a decoded query key or value, as it can appear in the raw query."""
    if c == " ":
        return r"(?:\+|%20)"
    if c in "&=#+;":
        return rx.pct_alternatives(c)
    return f"(?:{re2.escape(c)}|{rx.pct_alternatives(c)})"


def _query_param(key: str, value_regex: str | None) -> HeaderMatch:
    """A ``:path`` condition: some ``key=value`` pair of the query matches (any of them, as
    Traefik's v3 ``Query`` checks every value; Envoy's own query matcher sees only the first)."""
    k = "".join(_query_literal(c) for c in key)
    pair = f"{k}(?:=)?" if value_regex is None else f"{k}={value_regex}"
    return HeaderMatch(name=":path", kind="regex", value=f"[^?]*\\?(?:[^&]*&)*?{pair}(?:&.*)?")


def _client_ip(arg: str, column: int) -> HeaderMatch:
    net = ipaddress.ip_network(arg, strict=False) if "/" in arg else ipaddress.ip_network(arg)
    if net.num_addresses == 1:
        return HeaderMatch(name=CLIENT_IP_HEADER, kind="exact", value=str(net.network_address))
    if net.version == 6:
        raise UnsupportedMatcher(
            f"ClientIP with an IPv6 range ({arg}) is not translated yet", column
        )
    return HeaderMatch(name=CLIENT_IP_HEADER, kind="regex", value=ipv4_network_regex(net))


def ipv4_network_regex(net: ipaddress.IPv4Network) -> str:
    """A regex matching the dotted-quad text of exactly the addresses of ``net``."""
    octets = str(net.network_address).split(".")
    fixed, rest = divmod(net.prefixlen, 8)
    parts = [re2.escape(o) for o in octets[:fixed]]
    if fixed < 4:
        lo = int(octets[fixed])
        hi = lo + (1 << (8 - rest)) - 1
        parts.append("(?:" + "|".join(str(v) for v in range(lo, hi + 1)) + ")")
        parts.extend(["(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"] * (3 - fixed))
    return r"\.".join(parts)


def _host_regexp_v3(pattern: str, column: int) -> str | None:
    """Traefik searches the lower-cased host without port or trailing dot; Envoy sees the raw
    authority. None when the pattern also matches the empty string: Traefik tries it against
    the (empty) flattened CNAME too, so such a pattern matches every request."""
    if re2.search(pattern, ""):
        return None
    try:
        start, body, end = rx.split_anchors(pattern)
        body = rx.lowercase_view(body)
    except rx.RegexRewriteError as exc:
        raise UnsupportedMatcher(f"HostRegexp: {exc}", column) from exc
    head = "" if start else "[^:]*"
    tail = "" if end else "[^:]*"
    return f"{head}(?:{body}){tail}\\.?{_PORT}"


def _leaf(matcher: Matcher, syntax: Syntax) -> Conditions | str:
    """One positive matcher → (path condition, header conditions, query conditions), or
    ALWAYS / NEVER_MATCH for matchers whose outcome does not depend on the request."""
    name, args, col = matcher.name, matcher.args, matcher.column
    if name in ("Host", "HostHeader"):
        if args[0] == "*" and syntax == "v3":
            return ALWAYS
        wildcard = syntax == "v3"
        regex = _host_regex(args[0], wildcard)
        return None, [HeaderMatch(name=":authority", kind="regex", value=regex)], []
    if name == "HostRegexp":
        if syntax == "v2":
            regex = _strip_anchors(rules.v2_template_to_regex(args[0], "host"))
            value = f"(?i)(?:{regex}){_PORT}"
        else:
            v3 = _host_regexp_v3(args[0], col)
            if v3 is None:
                return ALWAYS
            value = v3
        return None, [HeaderMatch(name=":authority", kind="regex", value=value)], []
    if name in ("Path", "PathPrefix"):
        prefix = name == "PathPrefix"
        if syntax == "v2" and "{" in args[0]:
            regex = rules.v2_template_to_regex(args[0], "pathprefix" if prefix else "path")
            regex = rx.percent_view(_strip_anchors(regex))
            return PathMatch(kind="regex", value=f"(?:{regex})(?s:.*)" if prefix else regex), [], []
        if rx.needs_path_regex(args[0]):
            regex = _path_regex(args[0])
            return PathMatch(kind="regex", value=f"{regex}(?s:.*)" if prefix else regex), [], []
        return PathMatch(kind="prefix" if prefix else "exact", value=args[0]), [], []
    if name == "PathRegexp":
        search = rx.percent_view(args[0])
        return PathMatch(kind="regex", value=_unanchored(search), search=search), [], []
    if name == "Method":
        return None, [HeaderMatch(name=":method", kind="exact", value=args[0].upper())], []
    if name in ("Header", "Headers", "HeaderRegexp", "HeadersRegexp"):
        header = _header_name(args[0], col)
        if header == "host":
            return NEVER_MATCH  # Go keeps Host out of the header map: Traefik never matches it
        if name in ("Header", "Headers"):
            return None, [HeaderMatch(name=header, kind="exact", value=args[1])], []
        return None, [HeaderMatch(name=header, kind="regex", value=_unanchored(args[1]))], []
    if name == "Query":
        if syntax == "v2":
            key, _, value = args[0].partition("=")
            if "{" in args[0]:
                raise UnsupportedMatcher("v2 Query templates are not translated yet", col)
            # v2 reads the first value of the key (as Envoy does); an empty value matches any.
            if not value:
                return None, [], [QueryMatch(name=key, kind="present")]
            return None, [], [QueryMatch(name=key, kind="exact", value=value)]
        wanted = None if len(args) == 1 else "".join(_query_literal(c) for c in args[1])
        return None, [_query_param(args[0], wanted)], []
    if name == "QueryRegexp":
        if len(args) == 1:
            return None, [_query_param(args[0], None)], []
        try:
            start, body, end = rx.split_anchors(args[1])
        except rx.RegexRewriteError as exc:
            raise UnsupportedMatcher(f"QueryRegexp: {exc}", col) from exc
        value = f"{'' if start else '[^&]*'}(?:{body}){'' if end else '[^&]*'}"
        return None, [_query_param(args[0], value)], []
    if name == "ClientIP":
        return None, [_client_ip(args[0], col)], []
    raise UnsupportedMatcher(f"{name} is not translated to Envoy", col)


def _conjunction(
    conj: Sequence[tuple[bool, Matcher]], syntax: Syntax, max_program_size: int
) -> list[Match]:
    """An AND of (negated, matcher) leaves → the Envoy matches that together express it
    (none if it can never match; several when a negated header needs "absent or no line
    matches", which one Envoy route cannot say)."""
    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query: list[QueryMatch] = []
    exact_host: str | None = None
    host_header = -1
    # Negated headers a request may lack: each is (absent) OR (present, no line matches).
    optional: list[HeaderMatch] = []
    for negated, matcher in conj:
        host = _plain_host(matcher, syntax) if not negated else None
        if host is not None:
            if exact_host is not None and host != exact_host:
                return []  # Host(a) && Host(b): no request has two hosts
            exact_host = host
        leaf = _leaf(matcher, syntax)
        if host is not None and host_header < 0 and not isinstance(leaf, str):
            _, hs, _ = leaf
            if len(hs) == 1 and hs[0].name == ":authority" and not hs[0].invert:
                host_header = len(headers)
        if isinstance(leaf, str):
            if (leaf == ALWAYS) == negated:
                return []  # this conjunct is false for every request
            continue
        p, hs, qs = leaf
        if negated:
            if qs:
                raise UnsupportedMatcher(
                    f"a negated v2 {matcher.name} cannot be expressed by an Envoy route match",
                    matcher.column,
                )
            cond = _path_header(p, matcher.column) if p is not None else hs[0]
            if cond.name.startswith(":") or cond.name == CLIENT_IP_HEADER:
                headers.append(replace(cond, invert=True))  # always present
            else:
                optional.append(cond)
            continue
        if p is not None:
            if path is None:
                path = p
            else:
                headers.append(_path_header(p, matcher.column))
        headers.extend(hs)
        query.extend(qs)
    for cond in [*headers, *optional]:
        _check_size(cond.value if cond.kind == "regex" else "", max_program_size)
    if path is not None and path.kind == "regex":
        _check_size(path.value, max_program_size)
    out = []
    for choice in itertools.product(*((True, False) for _ in optional)):
        extra = [
            HeaderMatch(name=c.name, kind="present", invert=True)
            if absent
            else replace(c, invert=True)
            for c, absent in zip(optional, choice, strict=True)
        ]
        out.append(
            Match(
                path=path if path is not None else PathMatch(kind="prefix", value=""),
                headers=(*headers, *extra),
                query=tuple(query),
                exact_host=exact_host,
                host_header=host_header,
            )
        )
    return out


def _check_size(regex: str, limit: int) -> None:
    if regex and (size := rx.over_program_size(regex, limit)) is not None:
        raise UnsupportedMatcher(
            f"the regex Envoy needs is too large (RE2 program size {size} > {limit}, "
            "re2.max_program_size.error_level in the bootstrap)"
        )


_PLAIN_HOST = re2.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")


def _plain_host(matcher: Matcher, syntax: Syntax) -> str | None:
    """The host a positive Host() pins, if it is a plain DNS name (no wildcard, no IPv6)."""
    if matcher.name not in ("Host", "HostHeader") or len(matcher.args) != 1:
        return None
    host = matcher.args[0].strip().lower().rstrip(".")
    if not _PLAIN_HOST.fullmatch(host) or (syntax == "v3" and host.startswith("*")):
        return None
    return host


def rule_to_matches(
    expr: rules.Expr, syntax: Syntax, limit: int = 64, max_program_size: int = 1000
) -> tuple[Match, ...]:
    """Every disjunct of the rule as a Match, in rule order. Raises RuleError."""
    dnf = rules.to_dnf(_expand_multi(expr, syntax), limit=limit)
    out: list[Match] = []
    for conj in dnf:
        for m in _conjunction(conj, syntax, max_program_size):
            if m not in out:
                out.append(m)
    return tuple(out)
