"""The circuitBreaker ``expression`` language, parsed and typed the way Traefik does it.

Traefik hands the expression to vulcand/oxy's circuit breaker, which parses it with
vulcand/predicate: Go's own expression parser (``go/parser.ParseExpr``), then a walk that turns
the tree into predicates. So the *syntax* is Go's expression syntax, and the *accepted subset*
is what that walk and oxy's operators allow:

- conditions joined by ``&&`` and ``||`` (``&&`` binds tighter; parentheses group); ``!`` and
  every other Go operator parse but are refused;
- a condition is ``Metric(args) OP literal`` with OP one of ``== != < <= > >=``; the metric must
  be on the left (a literal on the left is refused, as in oxy);
- metrics: ``NetworkErrorRatio()`` and ``ResponseCodeRatio(from, to, dividedByFrom,
  dividedByTo)`` (float64, compared with a float literal such as ``0.5`` — ``1`` is an int and
  refused), ``LatencyAtQuantileMS(quantile)`` (quantile a float literal such as ``50.0``; int,
  compared with an int literal) and ``RequestThreshold()`` (int, compared with an int literal);
- arguments are literals (no expressions, no negative numbers: Go's unary minus is refused).

Grammar (Go's precedence levels; everything here parses, the typing pass then refuses what
Traefik refuses)::

    expr      = binary(1)
    binary(n) = unary | binary(n) OP(n) binary(n+1)      left associative
                OP(1) = ||    OP(2) = &&    OP(3) = == != < <= > >=
                OP(4) = + - | ^    OP(5) = * / % << >> & &^
    unary     = ("!" | "-" | "+" | "^" | "*" | "&" | "<-") unary | primary
    primary   = operand { "(" [ expr { "," expr } [ "," ] ] ")" }
    operand   = INT | FLOAT | IMAG | STRING | CHAR | IDENT | "(" expr ")"

Errors carry the 1-based column (and line, for a multi-line expression) of the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Number = int | Fraction
CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]


def position(text: str, offset: int) -> str:
    """Where ``offset`` is, for a user: ``column 7``, or ``line 2, column 3`` (1-based)."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}" if "\n" in text.rstrip("\n") else f"column {column}"


class ExpressionError(Exception):
    """The expression is not one Traefik accepts; ``position`` says where."""

    def __init__(self, text: str, offset: int, message: str) -> None:
        self.line = text.count("\n", 0, offset) + 1
        self.column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        self.message = message
        self.position = position(text, offset)
        super().__init__(f"{self.position}: {message}")


# --- the typed result ---------------------------------------------------------------------------

MetricName = Literal[
    "NetworkErrorRatio", "ResponseCodeRatio", "LatencyAtQuantileMS", "RequestThreshold"
]


@dataclass(frozen=True, slots=True)
class Metric:
    name: MetricName
    args: tuple[Number, ...]
    position: str

    def __str__(self) -> str:
        return f"{self.name}({', '.join(_show(a) for a in self.args)})"


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: Metric
    op: CompareOp
    value: Number
    position: str  # of the operator

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_show(self.value)}"


@dataclass(frozen=True, slots=True)
class Junction:
    op: Literal["&&", "||"]
    left: Condition
    right: Condition
    position: str  # of the operator


Condition = Comparison | Junction


def _show(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    text = f"{float(value):g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


# Every metric oxy defines: its parameter types, and the type of value it is compared with.
_FUNCTIONS: dict[str, tuple[tuple[type, ...], type]] = {
    "NetworkErrorRatio": ((), Fraction),
    "ResponseCodeRatio": ((int, int, int, int), Fraction),
    "LatencyAtQuantileMS": ((Fraction,), int),
    "RequestThreshold": ((), int),
}
_TYPE_NAME = {int: "an integer", Fraction: "a float", str: "a string"}


# --- lexer --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["int", "float", "imag", "string", "char", "ident", "op", "newline", "end"]
    text: str
    offset: int


_OPERATORS = sorted(
    (
        "||",
        "&&",
        "==",
        "!=",
        "<=",
        ">=",
        "<<",
        ">>",
        "&^",
        "<-",
        "<",
        ">",
        "+",
        "-",
        "|",
        "^",
        "*",
        "/",
        "%",
        "&",
        "!",
        "(",
        ")",
        ",",
    ),
    key=len,
    reverse=True,
)
_IDENT = re.compile(r"[^\W\d]\w*")
_DIGITS = frozenset("0123456789")
# Go number literals (the scanner's view): the typing pass decides what strconv then accepts.
_NUMBER = re.compile(
    r"""(?ix)
    0x[0-9a-f_]*(?:\.[0-9a-f_]*)?(?:p[+-]?[0-9_]+)?i?   # hexadecimal int or float
    | 0[bo][0-9_]*i?                                    # binary, octal
    | (?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:e[+-]?[0-9_]+)?i?   # decimal
    """
)


def _ends_operand(tokens: list[_Token]) -> bool:
    """Go inserts a semicolon at a newline after an operand or ``)``."""
    if not tokens:
        return False
    last = tokens[-1]
    return last.kind not in ("op", "newline", "end") or last.text == ")"


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            if _ends_operand(tokens):
                tokens.append(_Token("newline", "\n", i))
            i += 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ExpressionError(text, i, "comment not terminated")
            if "\n" in text[i:end] and _ends_operand(tokens):
                tokens.append(_Token("newline", "\n", i))
            i = end + 2
            continue
        if c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER.match(text, i)
            assert m is not None  # a digit, or a dot and a digit, always starts a match
            lit = m.group()
            if lit.lower().endswith("i"):
                kind: Literal["int", "float", "imag"] = "imag"
            elif lit.lower().startswith("0x"):
                kind = "float" if ("." in lit or "p" in lit.lower()) else "int"
            elif lit.lower().startswith(("0b", "0o")):
                kind = "int"
            else:
                kind = "float" if ("." in lit or "e" in lit.lower()) else "int"
            tokens.append(_Token(kind, lit, i))
            i = m.end()
            continue
        if c == '"' or c == "`" or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                if c != "`" and text[j] == "\\":
                    j += 1
                elif c != "`" and text[j] == "\n":
                    break
                j += 1
            if j >= n or text[j] != c:
                what = "rune literal" if c == "'" else "string literal"
                raise ExpressionError(text, i, f"{what} not terminated")
            tokens.append(_Token("char" if c == "'" else "string", text[i : j + 1], i))
            i = j + 1
            continue
        m = _IDENT.match(text, i)
        if m is not None:
            tokens.append(_Token("ident", m.group(), i))
            i = m.end()
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is None:
            raise ExpressionError(text, i, f"unexpected character {c!r}")
        tokens.append(_Token("op", op, i))
        i += len(op)
    tokens.append(_Token("end", "", n))
    return tokens


# --- parser (syntax) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lit:
    token: _Token


@dataclass(frozen=True, slots=True)
class _Ident:
    token: _Token


@dataclass(frozen=True, slots=True)
class _Call:
    fun: _Node
    args: tuple[_Node, ...]
    offset: int  # of the "("


@dataclass(frozen=True, slots=True)
class _Unary:
    op: _Token
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary:
    op: _Token
    left: _Node
    right: _Node


_Node = _Lit | _Ident | _Call | _Unary | _Binary

_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    **dict.fromkeys(("==", "!=", "<", "<=", ">", ">="), 3),
    **dict.fromkeys(("+", "-", "|", "^"), 4),
    **dict.fromkeys(("*", "/", "%", "<<", ">>", "&", "&^"), 5),
}
_UNARY = frozenset({"!", "-", "+", "^", "*", "&", "<-"})
# Nesting deeper than this is refused: the parser recurses once per level.
MAX_DEPTH = 100


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def error(self, token: _Token, message: str) -> ExpressionError:
        return ExpressionError(self.text, token.offset, message)

    def expect(self, text: str) -> _Token:
        tok = self.tok
        if tok.kind != "op" or tok.text != text:
            raise self.error(tok, f"expected {text!r}, found {_describe(tok)}")
        self.pos += 1
        return tok

    def parse(self) -> _Node:
        node = self.binary(1)
        if self.tok.kind == "newline":  # go/parser.ParseExpr accepts one trailing newline
            if self.tokens[self.pos + 1].kind != "end":
                raise self.error(self.tok, f"unexpected {_describe(self.tok)}")
            self.pos += 1
        if self.tok.kind != "end":
            raise self.error(self.tok, f"unexpected {_describe(self.tok)} after the expression")
        return node

    def binary(self, level: int) -> _Node:
        left = self.unary()
        while True:
            tok = self.tok
            prec = _PRECEDENCE.get(tok.text, 0) if tok.kind == "op" else 0
            if prec < level:
                return left
            self.pos += 1
            right = self.binary(prec + 1)
            left = _Binary(tok, left, right)

    def unary(self) -> _Node:
        tok = self.tok
        if tok.kind == "op" and tok.text in _UNARY:
            self.pos += 1
            with _Nesting(self, tok):
                return _Unary(tok, self.unary())
        return self.primary()

    def primary(self) -> _Node:
        node = self.operand()
        while self.tok.kind == "op" and self.tok.text == "(":
            open_ = self.tok
            self.pos += 1
            args: list[_Node] = []
            with _Nesting(self, open_):
                while not (self.tok.kind == "op" and self.tok.text == ")"):
                    args.append(self.binary(1))
                    if self.tok.kind == "op" and self.tok.text == ",":
                        self.pos += 1
                        continue
                    if not (self.tok.kind == "op" and self.tok.text == ")"):
                        raise self.error(
                            self.tok,
                            f"expected ',' or ')' in the argument list, found "
                            f"{_describe(self.tok)}",
                        )
            self.expect(")")
            node = _Call(node, tuple(args), open_.offset)
        return node

    def operand(self) -> _Node:
        tok = self.tok
        if tok.kind in ("int", "float", "imag", "string", "char"):
            self.pos += 1
            return _Lit(tok)
        if tok.kind == "ident":
            self.pos += 1
            return _Ident(tok)
        if tok.kind == "op" and tok.text == "(":
            self.pos += 1
            with _Nesting(self, tok):
                inner = self.binary(1)
            self.expect(")")
            return inner
        raise self.error(tok, f"expected an operand, found {_describe(tok)}")


class _Nesting:
    def __init__(self, parser: _Parser, token: _Token) -> None:
        self.parser = parser
        self.token = token

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise self.parser.error(self.token, f"nested more than {MAX_DEPTH} levels deep")

    def __exit__(self, *exc: object) -> None:
        self.parser.depth -= 1


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "the end of the expression"
    if tok.kind == "newline":
        return "a newline (Go ends the expression there: break lines after an operator)"
    return repr(tok.text)


# --- typing (what vulcand/predicate and oxy accept) ---------------------------------------------


def _offset(node: _Node) -> int:
    if isinstance(node, _Lit | _Ident):
        return node.token.offset
    if isinstance(node, _Unary):
        return node.op.offset
    if isinstance(node, _Call):
        return _offset(node.fun)
    return _offset(node.left)


class _Typer:
    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, offset: int, message: str) -> ExpressionError:
        return ExpressionError(self.text, offset, message)

    def position(self, offset: int) -> str:
        return position(self.text, offset)

    def condition(self, node: _Node) -> Condition:
        """predicateParser.parse: operators join what their operands evaluate to."""
        if isinstance(node, _Binary):
            op = node.op.text
            if op in ("&&", "||"):
                left = self._operand_condition(node.left, op)
                right = self._operand_condition(node.right, op)
                return Junction(op, left, right, self.position(node.op.offset))  # type: ignore[arg-type]
            if op in ("==", "!=", "<", "<=", ">", ">="):
                return self.comparison(node)
            raise self.error(node.op.offset, f"operator {op} is not supported")
        if isinstance(node, _Unary):
            self.value(node)  # refuses every unary operator
        self.value(node)  # an error of its own first, if it has one
        raise self.error(_offset(node), "expected a condition such as NetworkErrorRatio() > 0.5")

    def _operand_condition(self, node: _Node, op: str) -> Condition:
        if isinstance(node, _Binary | _Unary):
            return self.condition(node)
        self.value(node)
        raise self.error(
            _offset(node),
            f"each side of {op} must be a condition such as NetworkErrorRatio() > 0.5",
        )

    def comparison(self, node: _Binary) -> Comparison:
        op = node.op.text
        if isinstance(node.left, _Binary | _Unary):
            # (a > b) > c: a predicate compared with a value; oxy's operators take a metric.
            self.condition(node.left)
            raise self.error(
                node.op.offset, f"{op} compares a metric with a value, not a condition"
            )
        left = self.value(node.left)
        right = self.value(node.right)
        if not isinstance(left, Metric):
            raise self.error(
                _offset(node.left),
                f"the left side of {op} must be a metric such as NetworkErrorRatio()"
                + (" (a metric on the right is not accepted)" if isinstance(right, Metric) else ""),
            )
        expected = _FUNCTIONS[left.name][1]
        if isinstance(right, Metric) or type(right) is not expected:
            got = "a metric" if isinstance(right, Metric) else _TYPE_NAME[type(right)]
            hint = " (write 1 as 1.0)" if expected is Fraction and got == "an integer" else ""
            raise self.error(
                _offset(node.right),
                f"{left.name}() is compared with {_TYPE_NAME[expected]}, not {got}{hint}",
            )
        return Comparison(left, op, right, self.position(node.op.offset))  # type: ignore[arg-type]

    def value(self, node: _Node) -> Metric | Number | str:
        """predicateParser.evaluateExpr: literals, and calls of the known functions."""
        if isinstance(node, _Lit):
            return self.literal(node.token)
        if isinstance(node, _Ident):
            raise self.error(
                node.token.offset,
                f"{node.token.text} is not defined (a metric is called: {node.token.text}())"
                if node.token.text in _FUNCTIONS
                else f"{node.token.text} is not defined",
            )
        if isinstance(node, _Call):
            return self.call(node)
        hint = " (negative numbers are not accepted)" if node.op.text == "-" else ""
        raise self.error(node.op.offset, f"operator {node.op.text} is not supported{hint}")

    def call(self, node: _Call) -> Metric:
        if not isinstance(node.fun, _Ident):
            raise self.error(_offset(node.fun), "only a metric name can be called")
        name = node.fun.token.text
        if name not in _FUNCTIONS:
            known = ", ".join(_FUNCTIONS)
            raise self.error(node.fun.token.offset, f"unknown function {name} (known: {known})")
        params, _ = _FUNCTIONS[name]
        args: list[Number] = []
        values = [(arg, self.value(arg)) for arg in node.args]
        if len(values) != len(params):
            raise self.error(
                node.offset,
                f"{name} takes {len(params)} argument{'s' if len(params) != 1 else ''}, "
                f"not {len(values)}",
            )
        for i, ((arg, val), param) in enumerate(zip(values, params, strict=True)):
            if isinstance(val, Metric) or type(val) is not param:
                got = "a metric" if isinstance(val, Metric) else _TYPE_NAME[type(val)]
                hint = " (write 50 as 50.0)" if param is Fraction and got == "an integer" else ""
                raise self.error(
                    _offset(arg),
                    f"argument {i + 1} of {name} must be {_TYPE_NAME[param]}, not {got}{hint}",
                )
            assert not isinstance(val, str)  # str is never a parameter type
            args.append(val)
        return Metric(name, tuple(args), self.position(node.fun.token.offset))  # type: ignore[arg-type]

    def literal(self, tok: _Token) -> Number | str:
        """literalToValue: strconv.Atoi for INT, strconv.ParseFloat for FLOAT."""
        text = tok.text
        if tok.kind == "int":
            if "_" in text or text[:2].lower() in ("0x", "0b", "0o"):
                raise self.error(tok.offset, f"{text} is not a decimal integer")
            if re.fullmatch(r"0[0-9]+", text) and re.search(r"[89]", text):
                raise self.error(tok.offset, f"invalid digit in octal literal {text}")
            return int(text, 10)  # Atoi: a leading 0 is still decimal
        if tok.kind == "float":
            if text[:2].lower() == "0x":
                body = text.replace("_", "")
                if "p" not in body.lower():
                    raise self.error(tok.offset, f"hexadecimal float {text} needs a p exponent")
                try:
                    return Fraction(float.fromhex(body))
                except (ValueError, OverflowError):
                    raise self.error(tok.offset, f"{text} is not a number") from None
            if "_" in text:
                raise self.error(tok.offset, f"{text} is not a number (no _ in decimal floats)")
            exponent = re.search(r"[eE]([+-]?\d+)$", text)
            if exponent is not None and abs(int(exponent.group(1))) > 400:
                raise self.error(tok.offset, f"{text} is out of range")
            return Fraction(text)
        if tok.kind == "string":
            return text[1:-1]  # only ever reported back as being of the wrong type
        what = "imaginary" if tok.kind == "imag" else "rune"
        raise self.error(tok.offset, f"{what} literal {text} is not supported")


def parse_expression(text: str) -> Condition:
    """Parse and type ``text`` as Traefik does; raises ExpressionError naming the column."""
    return _Typer(text).condition(_Parser(text).parse())


def comparisons(cond: Condition) -> list[Comparison]:
    """Every comparison of the condition, left to right."""
    if isinstance(cond, Comparison):
        return [cond]
    return [*comparisons(cond.left), *comparisons(cond.right)]


def disjunctions(cond: Condition) -> list[Junction]:
    """Every ``||`` of the condition, left to right."""
    if isinstance(cond, Comparison):
        return []
    here = [cond] if cond.op == "||" else []
    return [*disjunctions(cond.left), *here, *disjunctions(cond.right)]
