"""Traefik's HTTP router rule language: parser, validator and helpers.

Traefik parses a rule such as ``Host(`example.com`) && PathPrefix(`/api`)`` with
``vulcand/predicate``, which runs Go's own expression parser (``go/parser.ParseExpr``) and then
accepts only a small subset of Go: calls of known matcher names whose arguments are string
literals, combined with ``&&``, ``||``, ``!`` and parentheses. Each matcher is then validated when
the route is added (argument count, regular expressions, templates, IP addresses, ...).

:func:`parse_rule` reproduces both steps for the two rule syntaxes (``v3``, the default, and the
legacy ``v2`` one) and raises :class:`RuleError` for every rule Traefik would reject. The other
functions are pure helpers the translator needs (normal form, priorities, routing path, v2
templates).

Deliberate deviations from Traefik, all of them on the rejecting side:

* parentheses and ``!`` may be nested at most :data:`MAX_NESTING` levels deep (Go allows 100000);
* a string argument whose escapes (``\\x..``, octal) produce bytes that are not valid UTF-8 is
  rejected (Traefik accepts it, but such a string cannot be put into an Envoy configuration);
* ``Matcher.column`` and ``RuleError.column`` count characters (code points), not bytes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import re2

__all__ = [
    "MAX_NESTING",
    "V2_MATCHERS",
    "V3_MATCHERS",
    "And",
    "Conjunction",
    "DnfLiteral",
    "Expr",
    "Matcher",
    "Not",
    "Or",
    "RuleError",
    "Syntax",
    "TemplateKind",
    "compile_go_regex",
    "default_priority",
    "host_domains",
    "parse_domains",
    "parse_rule",
    "routing_path",
    "to_dnf",
    "v2_query_pairs",
    "v2_template_to_regex",
]

Syntax = Literal["v2", "v3"]
TemplateKind = Literal["host", "path", "pathprefix", "query"]

#: Maximum nesting depth of parentheses and ``!`` accepted by :func:`parse_rule`.
MAX_NESTING = 100

#: Matcher names of the v3 syntax, with the accepted numbers of arguments.
V3_MATCHERS: Mapping[str, tuple[int, ...]] = {
    "ClientIP": (1,),
    "Method": (1,),
    "Host": (1,),
    "HostRegexp": (1,),
    "Path": (1,),
    "PathRegexp": (1,),
    "PathPrefix": (1,),
    "Header": (2,),
    "HeaderRegexp": (2,),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
}

#: Matcher names of the v2 syntax. All take one or more arguments; ``Headers``,
#: ``HeadersRegexp`` and ``Query`` take key/value pairs (see :func:`v2_query_pairs`).
V2_MATCHERS: tuple[str, ...] = (
    "Host",
    "HostHeader",
    "HostRegexp",
    "ClientIP",
    "Path",
    "PathPrefix",
    "Method",
    "Headers",
    "HeadersRegexp",
    "Query",
)


# --------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True, slots=True)
class Matcher:
    """One matcher call, e.g. ``Host(`example.com`)``.

    ``name`` is the canonical spelling (``PathPrefix`` even if the rule says ``pathprefix``),
    ``args`` the unquoted arguments exactly as written, ``column`` the 1-based column of the
    matcher name in the rule text.
    """

    name: str
    args: tuple[str, ...]
    column: int


@dataclass(frozen=True, slots=True)
class And:
    """``left && right``."""

    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Or:
    """``left || right``."""

    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``."""

    operand: Expr


Expr = Matcher | And | Or | Not


class RuleError(ValueError):
    """A rule that Traefik would reject. ``column`` is 1-based (0 if not tied to a position)."""

    message: str
    column: int

    def __init__(self, message: str, column: int = 0) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}" if column else message)


# --------------------------------------------------------------------------------------------
# Matcher names


def _spellings(name: str) -> tuple[str, ...]:
    """The four spellings Traefik registers for a matcher name."""
    lower = name.lower()
    return (name, lower, name.upper(), lower[:1].upper() + lower[1:])


def _name_table(names: Sequence[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name in names:
        for spelling in _spellings(name):
            table[spelling] = name
    return table


_V3_NAMES = _name_table(tuple(V3_MATCHERS))
_V2_NAMES = _name_table(V2_MATCHERS)
_ALL_NAMES = {**_V3_NAMES, **_V2_NAMES}
_NAMES: Mapping[Syntax, Mapping[str, str]] = {"v3": _V3_NAMES, "v2": _V2_NAMES}
_CANONICAL_BY_LOWER = {name.lower(): name for name in (*V3_MATCHERS, *V2_MATCHERS)}


def _unknown_matcher(name: str, column: int, names: Mapping[str, str], syntax: str) -> RuleError:
    canonical = _CANONICAL_BY_LOWER.get(name.lower())
    if canonical is not None and canonical in names.values():
        spellings = ", ".join(dict.fromkeys(_spellings(canonical)))
        return RuleError(
            f"unknown matcher {name!r}: matcher names are accepted only as {spellings}", column
        )
    if canonical is not None:
        return RuleError(f"matcher {canonical} does not exist in the {syntax} rule syntax", column)
    return RuleError(f"unknown matcher {name!r}", column)


# --------------------------------------------------------------------------------------------
# Tokenizer (the subset of Go's scanner that matters)

_IDENT, _STRING, _LPAREN, _RPAREN, _COMMA, _AND, _OR, _NOT, _ELLIPSIS, _NEWLINE, _EOF, _OTHER = (
    "identifier",
    "string",
    "'('",
    "')'",
    "','",
    "'&&'",
    "'||'",
    "'!'",
    "'...'",
    "newline",
    "end of rule",
    "character",
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    value: str
    column: int


_SIMPLE_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
}
_HEX = frozenset("0123456789abcdefABCDEF")


def _is_ident_start(c: str) -> bool:
    return c == "_" or c.isalpha()


def _is_ident_part(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _decode_arg(raw: bytes, column: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RuleError("string argument is not valid UTF-8", column) from None


def _scan_interpreted(rule: str, start: int) -> tuple[str, int]:
    """Scan a Go interpreted string literal starting at ``rule[start] == '"'``."""
    out = bytearray()
    i = start + 1
    n = len(rule)
    while True:
        if i >= n or rule[i] == "\n":
            raise RuleError("string literal not terminated", start + 1)
        c = rule[i]
        if c == '"':
            return _decode_arg(bytes(out), start + 1), i + 1
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        esc_col = i + 1
        if i + 1 >= n:
            raise RuleError("string literal not terminated", start + 1)
        e = rule[i + 1]
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
            i += 2
        elif e in "01234567":
            digits = rule[i + 1 : i + 4]
            if len(digits) < 3 or any(d not in "01234567" for d in digits):
                raise RuleError("illegal character in octal escape sequence", esc_col)
            value = int(digits, 8)
            if value > 255:
                raise RuleError("octal escape value > 255", esc_col)
            out.append(value)
            i += 4
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = rule[i + 2 : i + 2 + width]
            if len(digits) < width or any(d not in _HEX for d in digits):
                raise RuleError("illegal character in hexadecimal escape sequence", esc_col)
            value = int(digits, 16)
            if e == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise RuleError("escape sequence is invalid Unicode code point", esc_col)
                out += chr(value).encode("utf-8")
            i += 2 + width
        else:
            raise RuleError("unknown escape sequence", esc_col)


def _tokenize(rule: str) -> Iterator[_Token]:
    """Yield tokens; a newline after an identifier, string or ')' becomes a _NEWLINE token
    (Go's automatic semicolon), which the parser accepts only at the very end."""
    i = 1 if rule.startswith("\ufeff") else 0
    n = len(rule)
    for j in range(i, n):  # Go's scanner rejects these anywhere, even in strings and comments
        c = rule[j]
        if c == "\x00":
            raise RuleError("illegal character NUL", j + 1)
        if c == "\ufeff":
            raise RuleError("illegal byte order mark", j + 1)
        if 0xD800 <= ord(c) <= 0xDFFF:
            raise RuleError("illegal UTF-8 encoding", j + 1)
    insert_semi = False
    while i < n:
        c = rule[i]
        col = i + 1
        if c in " \t\r":
            i += 1
            continue
        if c == "\n":
            if insert_semi:
                insert_semi = False
                yield _Token(_NEWLINE, "\n", col)
            i += 1
            continue
        if c == "/" and i + 1 < n and rule[i + 1] in "/*":
            if rule[i + 1] == "/":
                end = rule.find("\n", i)
                end = n if end < 0 else end
                newline = True
            else:
                close = rule.find("*/", i + 2)
                if close < 0:
                    raise RuleError("comment not terminated", col)
                end = close + 2
                newline = "\n" in rule[i:end]
            if newline and insert_semi:
                insert_semi = False
                yield _Token(_NEWLINE, "\n", col)
            i = end
            continue
        if _is_ident_start(c):
            j = i + 1
            while j < n and _is_ident_part(rule[j]):
                j += 1
            insert_semi = True
            yield _Token(_IDENT, rule[i:j], col)
            i = j
            continue
        if c == "`":
            close = rule.find("`", i + 1)
            if close < 0:
                raise RuleError("raw string literal not terminated", col)
            body = rule[i + 1 : close]
            insert_semi = True
            yield _Token(_STRING, body.replace("\r", ""), col)
            i = close + 1
            continue
        if c == '"':
            value, i = _scan_interpreted(rule, i)
            insert_semi = True
            yield _Token(_STRING, value, col)
            continue
        two = rule[i : i + 2]
        if two == "&&":
            insert_semi = False
            yield _Token(_AND, two, col)
            i += 2
            continue
        if two == "||":
            insert_semi = False
            yield _Token(_OR, two, col)
            i += 2
            continue
        if rule[i : i + 3] == "...":
            insert_semi = False
            yield _Token(_ELLIPSIS, "...", col)
            i += 3
            continue
        if c == "!" and two != "!=":
            insert_semi = False
            yield _Token(_NOT, c, col)
            i += 1
            continue
        if c == "(":
            insert_semi = False
            yield _Token(_LPAREN, c, col)
            i += 1
            continue
        if c == ")":
            insert_semi = True
            yield _Token(_RPAREN, c, col)
            i += 1
            continue
        if c == ",":
            insert_semi = False
            yield _Token(_COMMA, c, col)
            i += 1
            continue
        # Anything else (numbers, char literals, other operators, ...) is valid Go at best, but
        # never part of a Traefik rule: the parser reports it where it finds it.
        insert_semi = False
        yield _Token(_OTHER, c, col)
        i += 1
    yield _Token(_EOF, "", n + 1)


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, rule: str, names: Mapping[str, str], syntax: str) -> None:
        self._tokens = list(_tokenize(rule))
        self._pos = 0
        self._names = names
        self._syntax = syntax

    @property
    def _tok(self) -> _Token:
        return self._tokens[self._pos]

    def _advance(self) -> _Token:
        tok = self._tokens[self._pos]
        self._pos += 1
        return tok

    def _unexpected(self, expected: str) -> RuleError:
        tok = self._tok
        if tok.kind == _OTHER:
            if tok.value == "&" or tok.value == "|":
                return RuleError(
                    f"unsupported operator {tok.value!r} (use {tok.value * 2!r})", tok.column
                )
            if tok.value.isdecimal() or tok.value == "'":
                return RuleError(
                    'matcher arguments must be string literals (`...` or "...")', tok.column
                )
            return RuleError(f"unexpected character {tok.value!r}", tok.column)
        found = tok.kind if tok.kind in (_EOF, _STRING, _NEWLINE, _IDENT) else tok.value
        if tok.kind == _IDENT:
            found = f"identifier {tok.value!r}"
        return RuleError(f"expected {expected}, found {found}", tok.column)

    def parse(self) -> Expr:
        expr = self._parse_or(0)
        newline = self._tok
        if newline.kind == _NEWLINE:
            self._advance()
            if self._tok.kind != _EOF:
                raise RuleError(
                    "unexpected newline: a line may end after a matcher or ')' only at the end "
                    "of the rule (put '&&' or '||' at the end of the line instead)",
                    newline.column,
                )
        if self._tok.kind != _EOF:
            raise self._unexpected("'&&', '||' or end of rule")
        return expr

    def _parse_or(self, depth: int) -> Expr:
        left = self._parse_and(depth)
        while self._tok.kind == _OR:
            self._advance()
            left = Or(left, self._parse_and(depth))
        return left

    def _parse_and(self, depth: int) -> Expr:
        left = self._parse_unary(depth)
        while self._tok.kind == _AND:
            self._advance()
            left = And(left, self._parse_unary(depth))
        return left

    def _parse_unary(self, depth: int) -> Expr:
        nots = 0
        while self._tok.kind == _NOT:
            nots += 1
            if depth + nots > MAX_NESTING:
                raise RuleError(f"rule is nested more than {MAX_NESTING} levels", self._tok.column)
            self._advance()
        expr = self._parse_primary(depth + nots)
        for _ in range(nots):
            expr = Not(expr)
        return expr

    def _parse_primary(self, depth: int) -> Expr:
        tok = self._tok
        if tok.kind == _LPAREN:
            if depth + 1 > MAX_NESTING:
                raise RuleError(f"rule is nested more than {MAX_NESTING} levels", tok.column)
            self._advance()
            expr = self._parse_or(depth + 1)
            if self._tok.kind != _RPAREN:
                raise self._unexpected("')'")
            self._advance()
            return expr
        if tok.kind == _IDENT:
            return self._parse_call()
        raise self._unexpected("a matcher, '!' or '('")

    def _parse_call(self) -> Matcher:
        name_tok = self._advance()
        canonical = self._names.get(name_tok.value)
        if canonical is None:
            raise _unknown_matcher(name_tok.value, name_tok.column, self._names, self._syntax)
        if self._tok.kind != _LPAREN:
            raise self._unexpected(f"'(' after matcher {name_tok.value}")
        self._advance()
        args: list[str] = []
        while self._tok.kind != _RPAREN:
            if self._tok.kind != _STRING:
                if self._tok.kind in (_IDENT, _LPAREN, _NOT) or (
                    self._tok.kind == _OTHER
                    and (self._tok.value.isdecimal() or self._tok.value in "'")
                ):
                    raise RuleError(
                        'matcher arguments must be string literals (`...` or "...")',
                        self._tok.column,
                    )
                raise self._unexpected("a string argument or ')'")
            args.append(self._advance().value)
            if self._tok.kind == _ELLIPSIS:
                self._advance()
                if self._tok.kind == _COMMA:
                    self._advance()
                if self._tok.kind != _RPAREN:
                    raise self._unexpected("')'")
                break
            if self._tok.kind == _COMMA:
                self._advance()
                continue
            if self._tok.kind != _RPAREN:
                if self._tok.kind == _NEWLINE:
                    raise RuleError("missing ',' before newline in argument list", self._tok.column)
                raise self._unexpected("',' or ')'")
        self._advance()
        return Matcher(canonical, tuple(args), name_tok.column)


def _parse(rule: str, names: Mapping[str, str], syntax: str) -> Expr:
    if not rule.strip(" \t\r\n"):
        raise RuleError("empty rule")
    return _Parser(rule, names, syntax).parse()


def _iter_matchers(expr: Expr) -> Iterator[Matcher]:
    """Matchers of ``expr`` in rule order (no recursion)."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Matcher):
            yield node
        elif isinstance(node, Not):
            stack.append(node.operand)
        else:
            stack.append(node.right)
            stack.append(node.left)


# --------------------------------------------------------------------------------------------
# Validation helpers

_RE2_OPTIONS: Any = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_go_regex(pattern: str, column: int = 0) -> Any:
    """Compile ``pattern`` as Go's ``regexp.Compile`` would, with RE2 (as Envoy does).

    Returns the compiled ``re2`` pattern; raises :class:`RuleError` if it is invalid.
    ``\\C`` (any byte), which RE2 accepts and Go rejects, is rejected.
    """
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if pattern[i + 1 : i + 2] == "C":
                raise RuleError(f"invalid regular expression {pattern!r}: \\C", column)
            i += 2
            continue
        i += 1
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RuleError(f"invalid regular expression {pattern!r}: {detail}", column) from None


def _is_ascii(s: str) -> bool:
    return s.isascii()


def _go_dtoi(s: str) -> int | None:
    i = 0
    n = 0
    while i < len(s) and "0" <= s[i] <= "9":
        n = n * 10 + ord(s[i]) - 48
        if n >= 0xFFFFFF:
            return None
        i += 1
    if i == 0 or i != len(s):
        return None
    return n


def _parse_go_ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's ``net.ParseIP`` (no zone allowed)."""
    if "%" in s or not s.isascii():
        return None
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def _check_ip_or_cidr(value: str, column: int) -> None:
    """Go's ``ip.NewChecker`` for one entry: ``net.ParseIP`` or else ``net.ParseCIDR``."""
    if _parse_go_ip(value) is not None:
        return
    addr, sep, mask = value.partition("/")
    ip = _parse_go_ip(addr) if sep else None
    bits = _go_dtoi(mask) if sep else None
    if ip is None or bits is None or bits > ip.max_prefixlen:
        raise RuleError(f"invalid IP address or CIDR {value!r}", column)


_QUOTE_META = frozenset("\\.+*?()|[]{}^$")


def _go_quote_meta(s: str) -> str:
    return "".join("\\" + c if c in _QUOTE_META else c for c in s)


def _brace_indices(s: str, column: int) -> list[int]:
    level = 0
    idx = 0
    idxs: list[int] = []
    for i, c in enumerate(s):
        if c == "{":
            level += 1
            if level == 1:
                idx = i
        elif c == "}":
            level -= 1
            if level == 0:
                idxs += (idx, i + 1)
            elif level < 0:
                raise RuleError(f"unbalanced braces in {s!r}", column)
    if level != 0:
        raise RuleError(f"unbalanced braces in {s!r}", column)
    return idxs


def _template_regex(template: str, kind: TemplateKind, column: int) -> tuple[str, list[str]]:
    """gorilla/mux ``newRouteRegexp``: the regex source and the variable names."""
    if kind in ("path", "pathprefix") and template and template[0] != "/":
        raise RuleError(f"path must start with a slash, got {template!r}", column)
    if kind == "query" and "=" not in template:
        raise RuleError(f"query template {template!r} has no '='", column)
    idxs = _brace_indices(template, column)
    default = {"host": "[^.]+", "query": ".*"}.get(kind, "[^/]+")
    pattern = ["(?i)^" if kind == "host" else "^"]
    names: list[str] = []
    end = 0
    for k in range(0, len(idxs), 2):
        raw = template[end : idxs[k]]
        end = idxs[k + 1]
        name, sep, patt = template[idxs[k] + 1 : end - 1].partition(":")
        if not sep:
            patt = default
        if not name or not patt:
            raise RuleError(
                f"missing name or pattern in {template[idxs[k] : end]!r} of template {template!r}",
                column,
            )
        pattern.append(f"{_go_quote_meta(raw)}(?P<v{k // 2}>{patt})")
        names.append(name)
        compile_go_regex(f"^{patt}$", column)
    pattern.append(_go_quote_meta(template[end:]))
    if kind == "query" and template.split("=", 1)[1] == "":
        pattern.append(default)
    if kind != "pathprefix":
        pattern.append("$")
    source = "".join(pattern)
    compile_go_regex(source, column)
    return source, names


def v2_template_to_regex(template: str, kind: TemplateKind) -> str:
    """Translate a v2 (gorilla/mux) template into the RE2 regex Traefik matches with.

    ``{name}`` uses the default pattern (``[^.]+`` for ``host``, ``[^/]+`` for ``path`` and
    ``pathprefix``, ``.*`` for ``query``); ``{name:pattern}`` uses ``pattern``; text outside the
    braces is literal. The result is anchored: ``^...$`` (full match) for ``host``, ``path`` and
    ``query``, ``^...`` (prefix) for ``pathprefix``. ``host`` regexes start with ``(?i)`` and are
    matched against the request host without its port (not lower-cased, no trailing-dot
    handling); ``path`` ones against the routing path (:func:`routing_path`). ``query`` takes a
    ``key=value`` template (see :func:`v2_query_pairs`); its regex is matched against
    ``key=<first value of key>`` and an empty value matches any value.

    Raises :class:`RuleError` for malformed templates (unbalanced braces, empty name or pattern,
    invalid regex, path not starting with ``/``).
    """
    return _template_regex(template, kind, 0)[0]


def v2_query_pairs(args: Sequence[str], column: int = 0) -> tuple[tuple[str, str], ...]:
    """The key/value pairs of a v2 ``Query`` matcher, as Traefik builds them.

    Each argument is split on its first ``=`` and all the pieces are concatenated, then read as
    key, value, key, value, ... (so ``Query(`a`, `b`)`` means ``a=b``). Every pair must hold
    (AND). Raises :class:`RuleError` if the pieces do not pair up.
    """
    pieces: list[str] = []
    for arg in args:
        pieces.extend(arg.split("=", 1))
    if len(pieces) % 2:
        raise RuleError(
            f"Query: number of key/value pieces must be even, got {len(pieces)} from {list(args)}",
            column,
        )
    return tuple((pieces[i], pieces[i + 1]) for i in range(0, len(pieces), 2))


# --------------------------------------------------------------------------------------------
# Per-matcher validation


def _check_args(m: Matcher) -> None:
    if not m.args:
        raise RuleError(f"no arguments for matcher {m.name}", m.column)
    if any(a == "" for a in m.args):
        raise RuleError(f"empty argument for matcher {m.name}", m.column)


def _validate_v3(m: Matcher) -> None:
    _check_args(m)
    counts = V3_MATCHERS[m.name]
    if len(m.args) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise RuleError(
            f"matcher {m.name} takes {expected} argument(s), got {len(m.args)}", m.column
        )
    name, args, col = m.name, m.args, m.column
    if name == "ClientIP":
        _check_ip_or_cidr(args[0], col)
    elif name == "Host":
        if args[0] != "*" and not _is_ascii(args[0]):
            raise RuleError(f"non-ASCII characters are not allowed in Host: {args[0]!r}", col)
    elif name == "HostRegexp":
        if not _is_ascii(args[0]):
            raise RuleError(f"non-ASCII characters are not allowed in HostRegexp: {args[0]!r}", col)
        compile_go_regex(args[0], col)
    elif name in ("Path", "PathPrefix"):
        if not args[0].startswith("/"):
            raise RuleError(f"{name}: path {args[0]!r} does not start with a '/'", col)
    elif name == "PathRegexp":
        compile_go_regex(args[0], col)
    elif name in ("HeaderRegexp", "QueryRegexp") and len(args) == 2:
        compile_go_regex(args[1], col)


def _validate_v2(m: Matcher) -> None:
    _check_args(m)
    name, args, col = m.name, m.args, m.column
    if name in ("Host", "HostHeader", "HostRegexp"):
        for arg in args:
            if not _is_ascii(arg):
                raise RuleError(f"non-ASCII characters are not allowed in {name}: {arg!r}", col)
            if name == "HostRegexp":
                _template_regex(arg, "host", col)
    elif name == "ClientIP":
        for arg in args:
            _check_ip_or_cidr(arg, col)
    elif name in ("Path", "PathPrefix"):
        for arg in args:
            _template_regex(arg, "path" if name == "Path" else "pathprefix", col)
    elif name in ("Headers", "HeadersRegexp"):
        if len(args) % 2:
            raise RuleError(
                f"matcher {name} takes key/value pairs, got {len(args)} argument(s)", col
            )
        if name == "HeadersRegexp":
            for value in args[1::2]:
                compile_go_regex(value, col)
    elif name == "Query":
        seen: set[str] = set()
        for key, value in v2_query_pairs(args, col):
            _, names = _template_regex(f"{key}={value}", "query", col)
            for var in names:
                if var in seen:
                    raise RuleError(f"Query: duplicated route variable {var!r}", col)
            seen.update(names)


# --------------------------------------------------------------------------------------------
# Public API


def parse_rule(rule: str, syntax: Syntax = "v3") -> Expr:
    """Parse and validate ``rule`` exactly as Traefik does when it adds a route.

    ``&&`` binds tighter than ``||``, both are left-associative, ``!`` is kept as :class:`Not`
    nodes. Matcher names are accepted as defined, all lower-case, all upper-case, or with only
    the first letter upper-case. Raises :class:`RuleError` for every rule Traefik rejects:
    syntax errors, unknown matchers (including matchers of the other syntax), wrong numbers
    of arguments, empty arguments, invalid regular expressions, templates, IPs, and so on.
    """
    if syntax not in _NAMES:
        raise RuleError(f"unknown rule syntax {syntax!r} (expected 'v2' or 'v3')")
    expr = _parse(rule, _NAMES[syntax], syntax)
    validate = _validate_v3 if syntax == "v3" else _validate_v2
    for matcher in _iter_matchers(expr):
        validate(matcher)
    return expr


def parse_domains(rule: str) -> tuple[str, ...]:
    """Traefik's ``ParseDomains``: the lower-cased arguments of the ``Host`` matchers.

    The rule is only parsed (any v2 or v3 matcher name is accepted, arguments are not
    validated, so ``Host()`` simply gives nothing); raises :class:`RuleError` on syntax errors
    and unknown matchers. Unlike :func:`host_domains`, ``HostHeader`` is not included.
    """
    expr = _parse(rule, _ALL_NAMES, "v2 or v3")
    return tuple(_go_lower(arg) for m in _iter_matchers(expr) if m.name == "Host" for arg in m.args)


def host_domains(expr: Expr) -> tuple[str, ...]:
    """The arguments of the ``Host`` (and v2 ``HostHeader``) matchers, lower-cased, in rule
    order. Like Traefik, matchers under ``!`` are included."""
    return tuple(
        _go_lower(arg)
        for m in _iter_matchers(expr)
        if m.name in ("Host", "HostHeader")
        for arg in m.args
    )


def default_priority(rule: str) -> int:
    """Traefik's default priority: the length of the rule in UTF-8 bytes, whitespace included."""
    return len(rule.encode("utf-8", "surrogatepass"))


DnfLiteral = tuple[bool, Matcher]
Conjunction = tuple[DnfLiteral, ...]


def to_dnf(expr: Expr, limit: int = 64) -> tuple[Conjunction, ...]:
    """Disjunctive normal form of ``expr``.

    Returns a tuple of conjunctions; each conjunction is a tuple of ``(negated, Matcher)``.
    Negations are pushed to the leaves (De Morgan). The order of matchers follows the rule.
    Raises :class:`RuleError` as soon as more than ``limit`` conjunctions would be needed.
    """

    def too_many() -> RuleError:
        return RuleError(
            f"rule expands to more than {limit} alternatives in disjunctive normal form; "
            "simplify it or split it into several routes"
        )

    def dnf(node: Expr, negated: bool) -> list[Conjunction]:
        while isinstance(node, Not):
            node, negated = node.operand, not negated
        if isinstance(node, Matcher):
            return [((negated, node),)]
        # After De Morgan, a negated Or is a conjunction and a negated And a disjunction.
        conjunctive = isinstance(node, And) != negated
        operands: list[Expr] = []
        stack: list[Expr] = [node]
        while stack:  # flatten chains of the same operator without recursion
            item = stack.pop()
            if type(item) is type(node):
                assert isinstance(item, And | Or)
                stack.append(item.right)
                stack.append(item.left)
            else:
                operands.append(item)
        if conjunctive:
            result: list[Conjunction] = [()]
            for operand in operands:
                part = dnf(operand, negated)
                if len(result) * len(part) > limit:
                    raise too_many()
                result = [a + b for a in result for b in part]
            return result
        result = []
        for operand in operands:
            result.extend(dnf(operand, negated))
            if len(result) > limit:
                raise too_many()
        return result

    return tuple(dnf(expr, False))


_RESERVED_ESCAPES = frozenset(
    (
        *("%3A", "%2F", "%3F", "%23", "%5B", "%5D", "%40", "%21", "%24", "%26"),
        *("%27", "%28", "%29", "%2A", "%2B", "%2C", "%3B", "%3D", "%25"),
    )
)


def routing_path(escaped_path: str) -> str:
    """Traefik's routing path: ``escaped_path`` (the URL's escaped path, no query) with every
    ``%XX`` decoded except the reserved ones (``%3A %2F %3F %23 %5B %5D %40 %21 %24 %26 %27 %28
    %29 %2A %2B %2C %3B %3D %25``), which stay as they are.

    Like Traefik, only the upper-case spelling of a reserved escape is kept: ``%2f`` is decoded
    to ``/``. Decoded bytes that are not valid UTF-8 come back as surrogate escapes
    (``errors="surrogateescape"``). Raises ``ValueError`` for a malformed escape (Traefik
    answers 400).
    """
    data = escaped_path.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b != 0x25:  # '%'
            out.append(b)
            i += 1
            continue
        if i + 2 >= len(data):
            raise ValueError("invalid percent-encoding at the end of the URL path")
        encoded = data[i : i + 3].decode("ascii", "replace")
        if encoded in _RESERVED_ESCAPES:
            out += data[i : i + 3]
        else:
            if not all(ch in _HEX for ch in encoded[1:]):
                raise ValueError("invalid percent-encoding in URL path")
            out.append(int(encoded[1:], 16))
        i += 3
    return out.decode("utf-8", "surrogateescape")


def _go_lower(s: str) -> str:
    """Go's ``strings.ToLower`` (simple case mapping, one rune to one rune)."""
    if s.isascii():
        return s.lower()
    out = []
    for c in s:
        low = c.lower()
        if len(low) != 1:
            low = "i" if c == "\u0130" else c
        out.append(low)
    return "".join(out)
