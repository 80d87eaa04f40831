"""encodedCharacters (Traefik v3.7): answer 400 to a path holding an encoded character it denies.

Traefik scans the request's escaped path (no query) left to right: a ``%`` with fewer than two
characters after it, or one of the denied escapes — ``%2F`` (``allowEncodedSlash``), ``%5C``
(``allowEncodedBackSlash``), ``%00`` (``allowEncodedNullCharacter``), ``%3B``
(``allowEncodedSemicolon``), ``%25`` (``allowEncodedPercent``), ``%3F``
(``allowEncodedQuestionMark``), ``%23`` (``allowEncodedHash``), hex digits in either case — stops
the request with 400 and an empty body. Every flag defaults to false: all seven are denied.

Here the route splits in two variants on ``:path`` (path part only): one answers 400 itself
(``Plan.reply``; the middlewares listed after it never see the request), the other goes on. The
path Envoy matches is the one its listener normalised (``.``/``..`` resolved, ``//`` merged,
unreserved escapes decoded, ``%2F`` kept), which is the escaped path Traefik's entry point hands
its routers. After a path middleware the check is on the rewritten path, as in Traefik: a
literal ``replacePath`` or ``addPrefix`` is checked here, ``stripPrefix`` moves the check past the
stripped prefix; after ``replacePathRegex`` it is not translated.

Envoy itself answers 400 to ``%00`` in any path (its normaliser refuses it), so
``allowEncodedNullCharacter: true`` cannot let one through (a warning says so); and Envoy turns a
literal backslash into ``/`` before routing, where Traefik sees it as ``%5C``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import re2

from translators.ir import DirectResponse, HeaderMatch
from translators.middlewares.base import Context, MiddlewareError, Plan, Unsupported

# Each allow flag and the escape it lets through (as an RE2 class pair: either case of hex).
CHARACTERS: tuple[tuple[str, str], ...] = (
    ("allowEncodedSlash", "2[Ff]"),
    ("allowEncodedBackSlash", "5[Cc]"),
    ("allowEncodedNullCharacter", "00"),
    ("allowEncodedSemicolon", "3[Bb]"),
    ("allowEncodedPercent", "25"),
    ("allowEncodedQuestionMark", "3[Ff]"),
    ("allowEncodedHash", "23"),
)
REJECT = DirectResponse(status=400)


def denied_path_regex(escapes: list[str], after: str = "") -> str:
    """A full-match RE2 on ``:path``: the path part (past the literal ``after``) holds a denied
    escape, or a ``%`` with fewer than two characters before the end of the path."""
    return (
        f"{re2.escape(after) if after else ''}[^?]*%(?:(?:{'|'.join(escapes)}).*|[^?]?(?:\\?.*)?)"
    )


def _rejects(path: str, escapes: list[str]) -> bool:
    """Traefik's scan, on a path known statically (a replacePath or addPrefix literal)."""
    return re2.fullmatch(denied_path_regex(escapes), path.split("?", 1)[0]) is not None


def encoded_characters(
    spec: Mapping[str, Any], plans: list[Plan], ctx: Context, field: str
) -> list[Plan]:
    known = {name for name, _ in CHARACTERS}
    for key, value in spec.items():
        if key not in known:
            raise MiddlewareError(f"{field}.{key}", f"unknown field {key!r}")
        if value is not None and not isinstance(value, bool):
            raise MiddlewareError(f"{field}.{key}", f"{key} must be true or false")
    escapes = [escape for name, escape in CHARACTERS if spec.get(name) is not True]
    if spec.get("allowEncodedNullCharacter") is True:
        ctx.warn(
            f"{field}.allowEncodedNullCharacter",
            "Envoy's path normalisation answers 400 to %00 in any path before routing; "
            "it cannot be allowed",
            "Unsupported",
        )
    if not escapes:
        return plans  # Traefik: nothing denied, nothing checked
    out: list[Plan] = []
    for plan in plans:
        out.extend(_variants(plan, escapes, field))
    return out


def _variants(plan: Plan, escapes: list[str], field: str) -> list[Plan]:
    st = plan.path
    rejected = replace(plan, reply=REJECT)
    if st.replaced is not None:
        if st.pattern is not None:
            raise Unsupported(
                field,
                "encodedCharacters after replacePathRegex is not translated (the path is "
                "rewritten from the request)",
            )
        return [rejected if _rejects(st.replaced, escapes) else plan]
    if "%" in st.added[-2:] or "%" in st.stripped[-2:]:
        raise Unsupported(field, "a prefix ending in a partial escape is not translated")
    if _rejects(st.added, escapes):
        return [rejected]  # what addPrefix put in front is always there
    cond = HeaderMatch(name=":path", kind="regex", value=denied_path_regex(escapes, st.stripped))
    return [
        replace(rejected, conditions=(*plan.conditions, cond)),
        replace(plan, conditions=(*plan.conditions, replace(cond, invert=True))),
    ]
