"""Traefik's sticky cookies, byte for byte: names, values, the Set-Cookie line, and how a request's
Cookie header is read.

Sources: ``pkg/server/cookie`` (names), ``pkg/server/service/loadbalancer/sticky.go`` (values),
``pkg/provider/configuration.go`` (``Normalize``, which makes the service names values are hashed
from), and Go's ``net/http`` (``Cookie.String`` writes the line; ``Request.Cookie`` returns the
*first* cookie of that name with a valid value).
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# RFC 2616 token characters Traefik keeps in a cookie name besides letters and digits.
_TOKEN = "!#$%&'*+-.^`|~"
_SAME_SITE = {"none": "None", "lax": "Lax", "strict": "Strict"}
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_WS = "[ \\t]*"


def sanitize_name(name: str) -> str:
    """``cookie.sanitizeName``: every character outside the RFC 2616 token set becomes ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c in _TOKEN) else "_" for c in name)


def generated_name(service: str) -> str:
    """``cookie.GenerateName``: ``_`` and the first 5 hex digits of sha1 of the service name."""
    return "_" + hashlib.sha1(f"_TRAEFIK_BACKEND_{service}".encode()).hexdigest()[:5]


def normalize(name: str) -> str:
    """``provider.Normalize``: runs of characters that are not letters or numbers become ``-``."""
    parts: list[str] = []
    word = ""
    for c in name:
        if unicodedata.category(c)[0] in "LN":
            word += c
        elif word:
            parts.append(word)
            word = ""
    if word:
        parts.append(word)
    return "-".join(parts)


def sticky_value(handler: str) -> str:
    """The value that pins a handler: the first 16 hex digits of sha256 of its name."""
    return hashlib.sha256(handler.encode()).hexdigest()[:16]


def _fnv64(text: str) -> str:
    """Go's ``hash/fnv.New64`` (FNV-1, not 1a), printed as ``strconv.FormatUint(h, 16)``."""
    h = _FNV64_OFFSET
    for byte in text.encode():
        h = (h * _FNV64_PRIME) % 2**64
        h ^= byte
    return format(h, "x")


def legacy_values(handler: str) -> tuple[str, ...]:
    """Values older Traefik versions wrote, still honoured (and rewritten to ``sticky_value``):
    the name itself, its FNV-64 hash, and the hash of that hash."""
    once = _fnv64(handler)
    return (handler, once, _fnv64(once))


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieAttributes:
    """What follows ``name=value`` in Traefik's Set-Cookie line."""

    path: str = "/"
    domain: str = ""
    max_age: int = 0  # > 0: Max-Age; < 0: expire at once (Max-Age=0); 0: a session cookie
    http_only: bool = False
    secure: bool = False
    same_site: str = ""  # none, lax or strict (any case); anything else: no attribute


def set_cookie(name: str, value: str, attrs: CookieAttributes) -> str:
    """Go's ``http.Cookie.String``: attributes in its order, an invalid domain left out, bytes a
    path may not hold dropped."""
    out = f"{name}={value}"
    path = "".join(c for c in attrs.path if 0x20 <= ord(c) < 0x7F and c != ";")
    if path:
        out += f"; Path={path}"
    if attrs.domain and valid_domain(attrs.domain):
        out += f"; Domain={attrs.domain.removeprefix('.')}"
    if attrs.max_age > 0:
        out += f"; Max-Age={attrs.max_age}"
    elif attrs.max_age < 0:
        out += "; Max-Age=0"
    if attrs.http_only:
        out += "; HttpOnly"
    if attrs.secure:
        out += "; Secure"
    same_site = _SAME_SITE.get(attrs.same_site.lower())
    if same_site:
        out += f"; SameSite={same_site}"
    return out


def valid_domain(domain: str) -> bool:
    """Go's ``validCookieDomain``: a domain name (an optional leading dot) or an IPv4 address."""
    try:
        return ipaddress.ip_address(domain).version == 4
    except ValueError:
        pass
    if not domain or len(domain) > 255:
        return False
    s = domain.removeprefix(".")
    last, letter, part = ".", False, 0
    for c in s:
        if c.isascii() and c.isalpha():
            letter = True
            part += 1
        elif c.isascii() and c.isdigit():
            part += 1
        elif c == "-":
            if last == ".":
                return False
            part += 1
        elif c == ".":
            if last in ".-" or part == 0 or part > 63:
                return False
            part = 0
        else:
            return False
        last = c
    return last != "-" and part <= 63 and letter


def _escape(c: str) -> str:
    """One character for RE2, inside or outside a class."""
    if c.isascii() and (c.isalnum() or c == "_"):
        return c
    if c == "\t":
        return "\\t"
    return "\\" + c


def _not_named(name: str) -> str:
    """RE2 for one ``;``-separated part of a Cookie header that Go does *not* read as a cookie
    called ``name`` (``[ws]name[ws]=…`` or ``[ws]name[ws]``, trimmed). Built from the inside out:
    after ``name[:k]`` the part either ends, or takes another character than ``name[k]``, or
    goes on with ``name[k]``; after the whole name it must not go on with ``=`` or end."""
    rest = f"{_WS}[^;= \\t][^;]*"
    for k in range(len(name) - 1, -1, -1):
        exclude = ";" + _escape(name[k]) + (" \\t" if k == 0 else "")
        rest = f"(?:{_escape(name[k])}{rest}|[^{exclude}][^;]*)?"
    return f"{_WS}{rest}"


def first_cookie_regex(name: str, values: Sequence[str]) -> str:
    """A full-match RE2 for a Cookie header whose first cookie called ``name`` has one of
    ``values`` (quoted or not), as Go's ``Request.Cookie`` reads it. A same-named cookie with an
    invalid value (a quote or backslash inside) before it also stops the match, where Go would
    skip it."""
    vals = "|".join("".join(_escape(c) for c in v) for v in values)
    return (
        f"(?:{_not_named(name)};)*{_WS}{''.join(_escape(c) for c in name)}{_WS}="
        f'(?:{vals}|"(?:{vals})"){_WS}(?:;.*)?'
    )


def any_cookie_regex(name: str, values: Sequence[str]) -> str:
    """Like ``first_cookie_regex`` but for any cookie called ``name``, not only the first: a much
    smaller program, for names too long for the exact one."""
    vals = "|".join("".join(_escape(c) for c in v) for v in values)
    return (
        f"(?:.*;)?{_WS}{''.join(_escape(c) for c in name)}{_WS}="
        f'(?:{vals}|"(?:{vals})"){_WS}(?:;.*)?'
    )
