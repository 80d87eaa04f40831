"""Rewriting Traefik's regexes for what Envoy actually matches against.

Traefik runs a regex on a value it has prepared (the host lower-cased without its port, the
routing path with non-reserved escapes decoded, one query value); Envoy runs a *full-match* RE2
on the raw header. The functions here tokenize an RE2 pattern just enough to rewrite it:

- ``lowercase_view``: the pattern as it behaves on ``lower(text)``, applied to text of any case
  (a literal ``a`` becomes ``[aA]``, a literal ``A`` can never match, classes likewise);
- ``percent_view``: literal characters that Envoy's normalised path keeps percent-encoded (and
  that Traefik's routing path decodes) also match their ``%XX`` form;
- ``split_anchors``: a pattern anchored at its start and/or end, with the anchors removed, so it
  can be embedded in a larger full-match regex (a host with its port, a query string).

Only what is needed is parsed: escapes, classes, anchors, flags; everything else passes through.
Patterns the rewriting cannot express exactly raise ``RegexRewriteError`` and the caller refuses
the rule with a diagnostic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import re2

TokenKind = Literal["lit", "class", "other", "bol", "eol", "alt", "open", "close"]

# Characters that are neither unreserved nor reserved (RFC 3986): Envoy's normalised path keeps
# them %-encoded (raw ones are encoded), Traefik's routing path decodes them.
_PATH_ENCODED = frozenset(' "<>\\^`{|}')
_SIMPLE_ESCAPES = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
NEVER = r"[^\s\S]"  # an empty class: matches nothing (Envoy refuses \x{10FFFF})


class RegexRewriteError(ValueError):
    """The pattern uses something the rewriting cannot carry over exactly."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # source text (for "lit": the literal character itself)
    negated: bool = False
    items: tuple[tuple[str, str], ...] = ()  # class items: (lo, hi) ranges or ("\\d", "") escapes


def _escape_literal(c: str) -> str:
    return str(re2.escape(c))


def _read_escape(p: str, i: int) -> tuple[str | None, str, int]:
    """At ``p[i] == '\\'``: (literal char or None, source text, next index)."""
    if i + 1 >= len(p):
        raise RegexRewriteError("trailing backslash")
    c = p[i + 1]
    if c == "x":
        if i + 2 < len(p) and p[i + 2] == "{":
            end = p.index("}", i + 3)
            return chr(int(p[i + 3 : end], 16)), p[i : end + 1], end + 1
        return chr(int(p[i + 2 : i + 4], 16)), p[i : i + 4], i + 4
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], p[i : i + 2], i + 2
    if c in "01234567":
        j = i + 1
        while j < len(p) and j < i + 4 and p[j] in "01234567":
            j += 1
        return chr(int(p[i + 1 : j], 8)), p[i:j], j
    if c in "pP":
        if i + 2 < len(p) and p[i + 2] == "{":
            end = p.index("}", i + 3)
            return None, p[i : end + 1], end + 1
        return None, p[i : i + 3], i + 3
    if c.isalnum():
        return None, p[i : i + 2], i + 2  # \d \w \s \b \A \z \C ...
    return c, p[i : i + 2], i + 2  # an escaped punctuation character is that character


def _read_class(p: str, i: int) -> tuple[Token, int]:
    start = i
    i += 1
    negated = i < len(p) and p[i] == "^"
    if negated:
        i += 1
    items: list[tuple[str, str]] = []
    first = True
    while True:
        if i >= len(p):
            raise RegexRewriteError("unterminated character class")
        c = p[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and p.startswith("[:", i):
            end = p.index(":]", i + 2)
            items.append((p[i : end + 2], ""))
            i = end + 2
            continue
        if c == "\\":
            lit, text, i = _read_escape(p, i)
            if lit is None:
                items.append((text, ""))
                continue
            c = lit
        else:
            i += 1
        if i + 1 < len(p) and p[i] == "-" and p[i + 1] != "]":
            hi = p[i + 1]
            j = i + 2
            if hi == "\\":
                lit, _, j = _read_escape(p, i + 1)
                if lit is None:
                    raise RegexRewriteError("class range ending in a class escape")
                hi = lit
            items.append((c, hi))
            i = j
        else:
            items.append((c, c))
    return Token("class", p[start:i], negated, tuple(items)), i


def tokenize(pattern: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    p = pattern
    while i < len(p):
        c = p[i]
        if c == "\\":
            if p.startswith("\\Q", i):
                end = p.find("\\E", i + 2)
                end = len(p) if end < 0 else end
                out.extend(Token("lit", ch) for ch in p[i + 2 : end])
                i = end + 2
                continue
            lit, text, i = _read_escape(p, i)
            if lit is not None:
                out.append(Token("lit", lit))
            elif text in ("\\A",):
                out.append(Token("bol", text))
            elif text in ("\\z",):
                out.append(Token("eol", text))
            else:
                out.append(Token("other", text))
            continue
        if c == "[":
            tok, i = _read_class(p, i)
            out.append(tok)
            continue
        if c == "(":
            j = i + 1
            if p.startswith("?P<", j) or p.startswith("?<", j):
                k = p.index(">", j)
                out.append(Token("open", p[i : k + 1]))  # a named group
                i = k + 1
                continue
            if p.startswith("?", j):
                k = j + 1
                while k < len(p) and p[k] not in ":)":
                    k += 1
                if k >= len(p):
                    raise RegexRewriteError("unterminated group")
                # (?i) applies onwards: not a group; (?i: and (?: open one.
                out.append(Token("other" if p[k] == ")" else "open", p[i : k + 1]))
                i = k + 1
                continue
            out.append(Token("open", "("))
            i += 1
            continue
        if c == ")":
            out.append(Token("close", ")"))
        elif c == "|":
            out.append(Token("alt", "|"))
        elif c == "^":
            out.append(Token("bol", "^"))
        elif c == "$":
            out.append(Token("eol", "$"))
        elif c in "*+?.":
            out.append(Token("other", c))
        elif c == "{":
            end = p.find("}", i)
            body = p[i + 1 : end] if end > 0 else ""
            if (
                end > 0
                and body
                and all(ch.isdigit() or ch == "," for ch in body)
                and body[0] != ","
            ):
                out.append(Token("other", p[i : end + 1]))  # a repetition
                i = end + 1
                continue
            out.append(Token("lit", "{"))  # RE2: a brace that starts no repetition is literal
        else:
            out.append(Token("lit", c))
        i += 1
    return out


def render(tokens: list[Token]) -> str:
    parts = []
    for t in tokens:
        parts.append(_escape_literal(t.text) if t.kind == "lit" else t.text)
    return "".join(parts)


def has_flag(pattern: str, flag: str) -> bool:
    return any(
        t.kind in ("other", "open") and t.text.startswith("(?") and flag in t.text.split(":")[0]
        for t in tokenize(pattern)
    )


# -- lower-case view ----------------------------------------------------------------------------


def _class_lower(tok: Token) -> str:
    """The class as seen through lower(): x matches iff lower(x) is in the class."""
    ranges: list[str] = []
    for lo, hi in tok.items:
        if hi == "":
            if lo in ("[:upper:]",):
                continue  # lower(x) is never upper-case
            ranges.append(lo if lo != "[:lower:]" else "[:alpha:]")
            continue
        a, b = ord(lo), ord(hi)
        # Split off the ASCII letters; other characters are unaffected by lower().
        cuts = sorted({a, b + 1, ord("A"), ord("Z") + 1, ord("a"), ord("z") + 1})
        for x, y in itertools.pairwise(cuts):
            x, y = max(x, a), min(y - 1, b)
            if x > y:
                continue
            if ord("A") <= x <= ord("Z"):
                continue  # upper-case members can never be seen
            if ord("a") <= x <= ord("z"):
                ranges.append(f"{chr(x)}-{chr(y)}{chr(x).upper()}-{chr(y).upper()}")
            else:
                ranges.append(f"{_cls(chr(x))}-{_cls(chr(y))}" if x != y else _cls(chr(x)))
    if not ranges:
        return "(?s:.)" if tok.negated else NEVER
    return f"[{'^' if tok.negated else ''}{''.join(ranges)}]"


def _cls(c: str) -> str:
    return f"\\x{{{ord(c):x}}}" if not c.isalnum() else c


def lowercase_view(pattern: str) -> str:
    """A pattern that matches ``text`` wherever ``pattern`` matches ``lower(text)`` (ASCII)."""
    if has_flag(pattern, "i"):
        return pattern
    out: list[str] = []
    for t in tokenize(pattern):
        if t.kind == "lit" and t.text.isascii() and t.text.isalpha():
            out.append(f"[{t.text}{t.text.upper()}]" if t.text.islower() else NEVER)
        elif t.kind == "class":
            out.append(_class_lower(t))
        else:
            out.append(_escape_literal(t.text) if t.kind == "lit" else t.text)
    return "".join(out)


# -- percent-encoded view -----------------------------------------------------------------------


def pct_alternatives(c: str) -> str:
    """``%XX`` forms of one character (UTF-8), hex digits of either case."""
    out = []
    for byte in c.encode():
        hx = f"{byte:02X}"
        out.append("%" + "".join(f"[{h}{h.lower()}]" if h.isalpha() else h for h in hx))
    return "".join(out)


def path_literal(c: str) -> str:
    """One character of a routing path, as it can appear in Envoy's normalised path."""
    if c in _PATH_ENCODED or not c.isascii():
        return f"(?:{_escape_literal(c)}|{pct_alternatives(c)})"
    return _escape_literal(c)


def needs_path_regex(text: str) -> bool:
    return any(c in _PATH_ENCODED or not c.isascii() for c in text)


def percent_view(pattern: str) -> str:
    out: list[str] = []
    for t in tokenize(pattern):
        if t.kind == "lit":
            out.append(path_literal(t.text))
        elif t.kind == "class" and not t.negated:
            extra = [
                pct_alternatives(c)
                for c in sorted(_PATH_ENCODED)
                if any(lo <= c <= hi for lo, hi in t.items if hi)
            ]
            out.append(f"(?:{t.text}|{'|'.join(extra)})" if extra else t.text)
        else:
            out.append(t.text)
    return "".join(out)


# -- anchors ------------------------------------------------------------------------------------


def split_anchors(pattern: str) -> tuple[bool, str, bool]:
    """(anchored at start, pattern without the anchors, anchored at end).

    Anchors anywhere else (inside an alternation, a group, mid-pattern) cannot be carried into a
    larger regex and raise ``RegexRewriteError``.
    """
    tokens = tokenize(pattern)
    depth = 0
    for t in tokens:
        if t.kind == "open":
            depth += 1
        elif t.kind == "close":
            depth -= 1
        elif t.kind == "alt" and depth == 0 and any(x.kind in ("bol", "eol") for x in tokens):
            raise RegexRewriteError("anchors in a pattern with a top-level alternation")
    start = bool(tokens) and tokens[0].kind == "bol"
    end = bool(tokens) and tokens[-1].kind == "eol" and len(tokens) > (1 if start else 0)
    body = tokens[1 if start else 0 : len(tokens) - (1 if end else 0)]
    if any(t.kind in ("bol", "eol") for t in body):
        raise RegexRewriteError("an anchor in the middle of the pattern")
    return start, render(body), end


def program_size(pattern: str) -> int:
    return int(re2.compile(pattern).programsize)


# Without counted repetition ({n,m}) or Unicode classes (\p), an ASCII pattern compiles to at
# most ~5 RE2 instructions per character plus a small constant (a fuzz over 60,000 random
# patterns of classes, negations, case folding and quantifiers: the worst was 4.6 per character
# above 20); 12 per character leaves a wide margin. Such patterns need no compile to be known
# small, and compiling is most of a route's translation time.
_SIZE_PER_CHAR = 12
_SIZE_CONSTANT = 20


def over_program_size(pattern: str, limit: int) -> int | None:
    """The RE2 program size of ``pattern`` if it exceeds ``limit``, else None."""
    if (
        _SIZE_PER_CHAR * len(pattern) + _SIZE_CONSTANT <= limit
        and pattern.isascii()
        and "{" not in pattern
        and "\\p" not in pattern
        and "\\P" not in pattern
    ):
        return None
    size = program_size(pattern)
    return size if size > limit else None
