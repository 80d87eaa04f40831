"""addPrefix, stripPrefix, replacePath, replacePathRegex: composed into one Envoy rewrite.

Envoy rewrites the path once, in the router, after every filter; Traefik's middlewares change it
one after the other. The changes compose as long as each one's effect on the *original* path can
be written down statically (``PathState``): literal prefixes stripped and added, a literal
replacement, or one regex replacement applied to the original path. Compositions that would need
the output of a regex as the input of another are refused with a diagnostic.

Headers: stripPrefix sets ``X-Forwarded-Prefix`` to the prefix it removed; replacePath and
replacePathRegex set ``X-Replaced-Path`` to the path they replaced. Envoy evaluates route
request headers before its rewrite, so ``%PATH(WQ)%`` there is the path as received.
"""

from __future__ import annotations

import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_p  # type: ignore[import-not-found]
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import re2

from translators.ir import ORIGINAL_PATH, HeaderMatch
from translators.middlewares.base import Context, MiddlewareError, PathState, Plan, Unsupported


def _str(spec: Mapping[str, Any], key: str, field: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise MiddlewareError(f"{field}.{key}", f"{key} must be a non-empty string")
    return value


def add_prefix(spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str) -> list[Plan]:
    prefix = _str(spec, "prefix", field)
    if not prefix.startswith("/"):
        raise MiddlewareError(f"{field}.prefix", "prefix must start with '/'")
    out = []
    for plan in plans:
        st = plan.path
        if st.replaced is not None:
            st = replace(st, replaced=prefix + st.replaced if st.pattern is None else None)
            if st.replaced is None:
                raise Unsupported(field, "addPrefix after replacePathRegex is not translated yet")
        else:
            st = replace(st, added=prefix + st.added)
        out.append(replace(plan, path=st))
    return out


def strip_prefix(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    prefixes = spec.get("prefixes")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise MiddlewareError(f"{field}.prefixes", "prefixes must be a list of strings")
    out: list[Plan] = []
    for plan in plans:
        out.extend(_strip_variants(plan, [p for p in prefixes if p], field))
    return out


def _ensure_slash(path: str) -> str:
    return path if not path or path.startswith("/") else "/" + path


def _strip_variants(plan: Plan, prefixes: list[str], field: str) -> list[Plan]:
    """The first prefix the current path starts with is removed. Which one depends on the
    request, so each prefix becomes a variant of the route, selected by a condition on the
    original path; a path matching none is left alone (the last variant)."""
    st = plan.path
    if st.replaced is not None or (st.stripped and st.added):
        raise Unsupported(field, "stripPrefix after this path middleware is not translated")
    out: list[Plan] = []
    excluded: list[HeaderMatch] = []
    for prefix in prefixes:
        header = ("X-Forwarded-Prefix", prefix)
        if st.added and st.added.startswith(prefix):
            # The prefix lies inside what addPrefix added: it always matches.
            new = replace(st, added=_ensure_slash(st.added[len(prefix) :]))
            out.append(replace(plan, conditions=(*plan.conditions, *excluded), path=new))
            out[-1] = out[-1].set_request(*header)
            return out
        if st.added and not prefix.startswith(st.added):
            continue  # the current path can never start with this prefix
        if st.stripped:
            raise Unsupported(field, "two stripPrefix middlewares in a row are not translated")
        original = prefix[len(st.added) :]
        cond = HeaderMatch(name=":path", kind="prefix", value=original)
        variant = replace(
            plan,
            conditions=(*plan.conditions, *excluded, cond),
            path=PathState(stripped=original),
        ).set_request(*header)
        out.append(variant)
        excluded.append(replace(cond, invert=True))
    out.append(replace(plan, conditions=(*plan.conditions, *excluded)))
    return out


# stripPrefixRegex regexes are translated when they match one of a few literal strings.
MAX_REGEX_LITERALS = 32


class _NotFinite(Exception):
    pass


def _expand(items: Any) -> list[str]:
    """The strings a regex (parsed by Python's sre parser) matches at the start of a path, in Go's
    leftmost-first priority order; raises _NotFinite for anything but literals, small classes,
    alternations, groups and bounded repeats."""
    out = [""]
    for op, av in items:
        if op is sre_c.LITERAL:
            alts = [chr(av)]
        elif op is sre_c.IN:
            alts = []
            for kind, val in av:
                if kind is sre_c.LITERAL:
                    alts.append(chr(val))
                elif kind is sre_c.RANGE and val[1] - val[0] < MAX_REGEX_LITERALS:
                    alts.extend(chr(c) for c in range(val[0], val[1] + 1))
                else:
                    raise _NotFinite
        elif op is sre_c.BRANCH:
            alts = [x for branch in av[1] for x in _expand(branch)]
        elif op is sre_c.SUBPATTERN:
            if av[1] or av[2]:
                raise _NotFinite  # inline flags
            alts = _expand(av[3])
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            low, high, sub = av
            if high is sre_c.MAXREPEAT or high > MAX_REGEX_LITERALS:
                raise _NotFinite
            alts = _repeat(_expand(sub), low, high, op is sre_c.MAX_REPEAT)
        else:
            raise _NotFinite
        out = [a + b for a in out for b in alts]
        if len(out) > MAX_REGEX_LITERALS:
            raise _NotFinite
    return out


def _repeat(alts: list[str], low: int, high: int, greedy: bool) -> list[str]:
    if high == 0:
        return [""]
    more = [a + b for a in alts for b in _repeat(alts, max(low - 1, 0), high - 1, greedy)]
    if len(more) > MAX_REGEX_LITERALS:
        raise _NotFinite
    if low > 0:
        return more
    return [*more, ""] if greedy else ["", *more]


def _regex_prefixes(regex: str, field: str) -> list[str]:
    """The literal prefixes a stripPrefixRegex regex strips, in the order Go would pick them.

    Go takes the leftmost-first match and strips it when it is a non-empty prefix of the path;
    an empty match counts as no match (the next regex is tried). So the prefixes are the
    regex's strings in priority order, up to the first empty one, that start with '/'."""
    pattern = regex.strip()
    try:
        re2.compile(pattern)
    except re2.error as exc:
        raise MiddlewareError(field, f"invalid regex: {exc}") from exc
    unsupported = Unsupported(
        field,
        f"regex {pattern!r} matches more than a few literal prefixes: Envoy cannot send the "
        "matched text as X-Forwarded-Prefix (only regexes matching at most "
        f"{MAX_REGEX_LITERALS} literal strings, without '.', '$', flags or unbounded repeats, "
        "are translated)",
    )
    try:
        parsed = sre_p.parse(pattern)
    except Exception as exc:  # Python's syntax is not Go's: refuse what it cannot read
        raise unsupported from exc
    items = list(parsed)
    if items and items[0] == (sre_c.AT, sre_c.AT_BEGINNING):
        items = items[1:]
    try:
        strings = _expand(items)
    except (_NotFinite, ValueError) as exc:
        raise unsupported from exc
    out: list[str] = []
    for text in strings:
        if not text:
            break
        if text.startswith("/") and text not in out:
            out.append(text)
    return out


def strip_prefix_regex(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    regexes = spec.get("regex")
    if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
        raise MiddlewareError(f"{field}.regex", "regex must be a list of strings")
    prefixes: list[str] = []
    for i, regex in enumerate(regexes):
        prefixes.extend(
            p for p in _regex_prefixes(regex, f"{field}.regex[{i}]") if p not in prefixes
        )
    out: list[Plan] = []
    for plan in plans:
        out.extend(_strip_variants(plan, prefixes, field))
    return out


def replace_path(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    path = _str(spec, "path", field)
    out = []
    for plan in plans:
        if not plan.path.identity:
            raise Unsupported(field, "replacePath after another path middleware is not translated")
        out.append(
            replace(plan, path=PathState(replaced=path)).set_request(
                "X-Replaced-Path", ORIGINAL_PATH
            )
        )
    return out


def replace_path_regex(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    regex = _str(spec, "regex", field)
    replacement = spec.get("replacement")
    if not isinstance(replacement, str):
        raise MiddlewareError(f"{field}.replacement", "replacement must be a string")
    try:
        re2.compile(regex)
    except re2.error as exc:
        raise MiddlewareError(f"{field}.regex", f"invalid regex: {exc}") from exc
    out = []
    for plan in plans:
        if not plan.path.identity:
            raise Unsupported(
                field, "replacePathRegex after another path middleware is not translated"
            )
        # Traefik rewrites (and sets X-Replaced-Path) only when the regex matches the path:
        # one variant for a match, one for the rest. $1 / ${1} become RE2's \1.
        pattern, substitution = _go_replacement(regex, replacement, field)
        matches = HeaderMatch(name=":path", kind="regex", value=f"[^?]*(?:{regex})[^?]*(?:\\?.*)?")
        st = PathState(replaced=substitution, pattern=pattern)
        rewritten = replace(plan, conditions=(*plan.conditions, matches), path=st)
        out.append(rewritten.set_request("X-Replaced-Path", ORIGINAL_PATH))
        out.append(replace(plan, conditions=(*plan.conditions, replace(matches, invert=True))))
    return out


def _go_replacement(regex: str, replacement: str, field: str) -> tuple[str, str]:
    out = []
    i = 0
    while i < len(replacement):
        c = replacement[i]
        if c == "$":
            if replacement.startswith("$$", i):
                out.append("$")
                i += 2
                continue
            j = i + 1
            braced = j < len(replacement) and replacement[j] == "{"
            if braced:
                end = replacement.find("}", j)
                name = replacement[j + 1 : end] if end > 0 else ""
                i = end + 1 if end > 0 else len(replacement)
            else:
                k = j
                while k < len(replacement) and (replacement[k].isalnum() or replacement[k] == "_"):
                    k += 1
                name = replacement[j:k]
                i = k
            if not name.isdigit():
                raise Unsupported(
                    f"{field}.replacement", f"named group reference ${name} is not translated"
                )
            out.append(f"\\{int(name)}")
            continue
        out.append("\\\\" if c == "\\" else c)
        i += 1
    # ReplaceAllString replaces every match; Envoy's regex_rewrite does too.
    return regex, "".join(out)
