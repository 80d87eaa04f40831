"""redirectScheme: Traefik's redirect, answered by Envoy.

Status codes as Traefik picks them: non-permanent 302 for GET (and HEAD) and 307 otherwise;
permanent 301 for GET and 308 otherwise. The target scheme's default port is dropped. A request
already on the target scheme and port is not redirected (Traefik passes it on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import re2

from translators.ir import HeaderMatch, Redirect, Rewrite
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

_DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_scheme(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    scheme = spec.get("scheme")
    if not isinstance(scheme, str) or not scheme:
        raise MiddlewareError(f"{field}.scheme", "scheme is required")
    port_value = spec.get("port")
    port: int | None = None
    if port_value not in (None, ""):
        try:
            port = int(str(port_value))
        except ValueError as exc:
            raise MiddlewareError(f"{field}.port", f"port {port_value!r} is not a number") from exc
    permanent = spec.get("permanent") is True
    if scheme not in ("http", "https"):
        raise Unsupported(f"{field}.scheme", f"redirect to scheme {scheme!r} is not translated")
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    # Switchman's listeners are plain HTTP: a request is on "https" only if it arrived as such.
    already = HeaderMatch(name="x-forwarded-proto", kind="exact", value=scheme)
    get = HeaderMatch(name=":method", kind="exact", value="GET")
    statuses = (
        (get, 301 if permanent else 302),
        (replace(get, invert=True), 308 if permanent else 307),
    )
    out = []
    for plan in plans:
        redirecting = (*plan.conditions, replace(already, invert=True))
        for method, status in statuses:
            redirect = Redirect(scheme=scheme, port=port, strip_port=port is None, status=status)
            out.append(replace(plan, conditions=(*redirecting, method), redirect=redirect))
        if port is None:
            out.append(replace(plan, conditions=(*plan.conditions, already)))
    return out


# redirectRegex: the URL regex is split at its top level into scheme, host and path parts, each
# matched by Envoy against one part of the request (x-forwarded-proto, :authority, :path).
_ANY_SCHEME = frozenset({".*", ".+", "[a-z]+", r"\w+", "[^:]+", "[^:/]+"})
_TAILS = ("(.*)$", "(.*)", ".*$", ".*", "$", "")


def _top_level(text: str, sep: str, start: int = 0) -> int:
    """Index of ``sep`` in a regex outside groups, classes and escapes; -1 if none."""
    depth = 0
    i = start
    in_class = False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if text.startswith("[^]", i) or text.startswith("[]", i):
                i += 2 if text[i + 1] == "]" else 3
                continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            return i
        i += 1
    return -1


def _groups(text: str) -> int:
    """Capturing groups in a regex (named groups count too)."""
    return sum(
        1
        for i, c in enumerate(text)
        if c == "("
        and _top_level_escape_free(text, i)
        and (not text.startswith("(?", i) or text.startswith(("(?P<", "(?<"), i))
    )


def _top_level_escape_free(text: str, i: int) -> bool:
    """Is text[i] outside escapes and classes?"""
    j = 0
    in_class = False
    while j < i:
        if text[j] == "\\":
            j += 2
            continue
        if in_class and text[j] == "]":
            in_class = False
        elif not in_class and text[j] == "[":
            in_class = True
        j += 1
    return j == i and not in_class


def _stays_in_segment(text: str, forbidden: str) -> bool:
    """True when the regex cannot match any character of ``forbidden`` (conservatively):
    no '.', no negated escapes, negated classes must exclude every forbidden character."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped in ("S", "W", "D", "p", "P", "C", "Q", "x") or escaped in forbidden:
                return False
            i += 2
            continue
        if c == ".":
            return False
        if c == "[":
            end = text.find("]", i + 2)
            if end < 0:
                return False
            body = text[i + 1 : end]
            if body.startswith("^") and not all(f in body for f in forbidden):
                return False
            if not body.startswith("^") and any(f in body for f in forbidden):
                return False
            i = end + 1
            continue
        if c in forbidden and c != "?":  # an unescaped '?' is a quantifier
            return False
        i += 1
    return True


def _references(text: str, field: str) -> list[tuple[int, int, int]]:
    """Go replacement references: (start, end, group number)."""
    out = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            i += 1
            continue
        if text.startswith("$$", i):
            i += 2
            continue
        j = i + 1
        if j < len(text) and text[j] == "{":
            end = text.find("}", j)
            name = text[j + 1 : end] if end > 0 else ""
            stop = end + 1 if end > 0 else len(text)
        else:
            k = j
            while k < len(text) and (text[k].isalnum() or text[k] == "_"):
                k += 1
            name, stop = text[j:k], k
        if not name.isdigit():
            raise Unsupported(field, f"replacement reference ${name} is not translated")
        out.append((i, stop, int(name)))
        i = stop
    return out


def _only_group(part: str, first_group: int, refs_text: str, field: str) -> int | None:
    """A replacement part that is exactly a reference to a group spanning the whole regex part
    keeps that part of the request; returns the group, or None for a literal part."""
    refs = _references(refs_text, field)
    if not refs:
        return None
    whole = (
        len(refs) == 1
        and refs[0][:2] == (0, len(refs_text))
        and part.startswith("(")
        and not part.startswith("(?")
        and part.endswith(")")
        and _is_tail(part[1:-1], "")
        and refs[0][2] == first_group
    )
    if not whole:
        raise Unsupported(
            field,
            "a replacement building the scheme or host from parts of the URL is not translated",
        )
    return first_group


def redirect_regex(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    regex = spec.get("regex")
    if not isinstance(regex, str) or not regex:
        raise MiddlewareError(f"{field}.regex", "regex must be a non-empty string")
    replacement = spec.get("replacement")
    if not isinstance(replacement, str) or not replacement:
        raise MiddlewareError(f"{field}.replacement", "replacement must be a non-empty string")
    permanent = spec.get("permanent", False)
    if not isinstance(permanent, bool):
        raise MiddlewareError(f"{field}.permanent", "permanent must be true or false")
    try:
        re2.compile(regex)
    except re2.error as exc:
        raise MiddlewareError(f"{field}.regex", f"invalid regex: {exc}") from exc
    rfield = f"{field}.regex"
    unsupported = (
        "only regexes of the form ^<scheme>://<host>/<path> are translated, with a scheme "
        "of http/https (or any), a host part that cannot match '/', and a path part that cannot "
        "match '?' except for a trailing .* or (.*)"
    )
    sep = _top_level(regex, "://")
    if not regex.startswith("^") or sep < 0:
        raise Unsupported(rfield, unsupported)
    slash = _top_level(regex, "/", sep + 3)
    if slash < 0:
        raise Unsupported(rfield, unsupported)
    scheme_re, host_re, path_re = regex[1:sep], regex[sep + 3 : slash], regex[slash:]
    tail = next(t for t in _TAILS if path_re.endswith(t) and _is_tail(path_re, t))
    head = path_re[: len(path_re) - len(tail)]
    # The host is always followed by the request URI's '/'; the path part must stay out of the
    # query, which Envoy's rewrite does not see.
    if not _stays_in_segment(head, "?") or not _stays_in_segment(host_re, "/"):
        raise Unsupported(rfield, unsupported)
    if scheme_re.strip("()") in _ANY_SCHEME and scheme_re in (
        *_ANY_SCHEME,
        *(f"({s})" for s in _ANY_SCHEME),
    ):
        schemes: list[str] | None = None
    else:
        try:
            schemes = [s for s in ("http", "https") if re2.fullmatch(scheme_re, s)]
        except re2.error as exc:
            raise Unsupported(rfield, unsupported) from exc
        if not _stays_in_segment(scheme_re, ":/"):
            raise Unsupported(rfield, unsupported)
    # The replacement's scheme and host: literal, or the whole matched part kept.
    rsep = replacement.find("://")
    if rsep < 0:
        raise Unsupported(
            f"{field}.replacement", "a replacement that is not an absolute URL is not translated"
        )
    rslash = replacement.find("/", rsep + 3)
    if rslash < 0:
        rslash = len(replacement)
    t_scheme, t_host, t_path = (
        replacement[:rsep],
        replacement[rsep + 3 : rslash],
        replacement[rslash:] or "/",
    )
    rf = f"{field}.replacement"
    if "?" in t_path or "#" in t_path:
        raise Unsupported(rf, "a replacement with a query or fragment is not translated")
    keep_scheme = _only_group(scheme_re, 1, t_scheme, rf) is not None
    host_group = _groups(scheme_re) + 1
    keep_host = _only_group(host_re, host_group, t_host, rf) is not None
    if not keep_scheme and t_scheme not in ("http", "https"):
        raise Unsupported(rf, f"redirect to scheme {t_scheme!r} is not translated")
    before = _groups(scheme_re) + _groups(host_re)
    # The path: Go's groups renumbered for the path part alone; $n → \n.
    refs = _references(t_path, rf)
    pieces = []
    last = 0
    tail_group = before + _groups(head) + 1 if tail.startswith("(") else None
    for start, stop, group in refs:
        if group <= before or group > before + _groups(path_re):
            raise Unsupported(rf, f"${group} refers to the scheme or host part of the URL")
        if group == tail_group and stop != len(t_path):
            raise Unsupported(
                rf,
                "the trailing (.*) (which holds the query) is only translated "
                "at the end of the replacement",
            )
        pieces.append(t_path[last:start].replace("\\", "\\\\").replace("$$", "$"))
        pieces.append(f"\\{group - before}")
        last = stop
    pieces.append(t_path[last:].replace("\\", "\\\\").replace("$$", "$"))
    substitution = "".join(pieces)
    tail_used = tail_group is not None and any(g == tail_group for _, _, g in refs)
    if tail in ("(.*)", "(.*)$") and tail_used:
        pattern, strip_query = f"^{head}(.*)", False
    elif tail in ("", "$"):
        pattern, strip_query = f"^{head}{tail}", False
    else:  # the rest of the URL, query included, is matched and dropped
        pattern, strip_query = f"^{head}" + ("(.*)" if tail.startswith("(") else ".*"), True
    conditions = [HeaderMatch(name=":path", kind="regex", value=f"(?:{path_re}).*")]
    conditions.append(HeaderMatch(name=":authority", kind="regex", value=host_re))
    if schemes is not None:
        conditions.append(
            HeaderMatch(name="x-forwarded-proto", kind="regex", value="|".join(schemes) or "^$")
        )
    redirect = Redirect(
        scheme=None if keep_scheme else t_scheme,
        host=None if keep_host else t_host,
        status=302,
        path_rewrite=Rewrite(pattern=pattern, substitution=substitution),
        strip_query=strip_query,
    )
    get = HeaderMatch(name=":method", kind="exact", value="GET")
    statuses = (
        (get, 301 if permanent else 302),
        (replace(get, invert=True), 308 if permanent else 307),
    )
    out = []
    for plan in plans:
        if plan.redirect is not None or not plan.path.identity:
            raise Unsupported(
                field, "redirectRegex after a path or redirect middleware is not translated"
            )
        if not refs and not keep_scheme and not keep_host:
            # A fixed target: a request already there passes (Traefik: same URL).
            same = (
                HeaderMatch(name="x-forwarded-proto", kind="exact", value=t_scheme),
                HeaderMatch(name=":authority", kind="exact", value=t_host),
                HeaderMatch(name=":path", kind="exact", value=t_path.replace("$$", "$")),
            )
            out.append(replace(plan, conditions=(*plan.conditions, *same)))
        for method, status in statuses:
            out.append(
                replace(
                    plan,
                    conditions=(*plan.conditions, *conditions, method),
                    redirect=replace(redirect, status=status),
                )
            )
        # No match: one pass-through variant per first failing condition.
        for i, cond in enumerate(conditions):
            out.append(
                replace(
                    plan,
                    conditions=(*plan.conditions, *conditions[:i], replace(cond, invert=True)),
                )
            )
    return out


def _is_tail(path_re: str, tail: str) -> bool:
    """``tail`` ends the path regex at its top level (not, say, inside a group or escaped)."""
    start = len(path_re) - len(tail)
    depth = 0
    in_class = False
    i = 0
    while i < start:
        c = path_re[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    return i == start and depth == 0 and not in_class
