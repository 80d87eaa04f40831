"""The circuitBreaker expression parser: what Traefik (vulcand/predicate over Go's expression
parser, oxy's typed operators) accepts, what it refuses, and where the error is reported."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translators.middlewares.breaker_expression import (
    Comparison,
    ExpressionError,
    Junction,
    comparisons,
    disjunctions,
    parse_expression,
)


def test_a_comparison() -> None:
    cond = parse_expression("NetworkErrorRatio() > 0.30")
    assert isinstance(cond, Comparison)
    assert (cond.metric.name, cond.metric.args, cond.op, cond.value) == (
        "NetworkErrorRatio",
        (),
        ">",
        Fraction(3, 10),
    )
    assert cond.position == "column 21"  # the operator
    assert cond.metric.position == "column 1"


def test_metrics_and_their_arguments() -> None:
    cond = parse_expression("ResponseCodeRatio(500, 600, 0, 600) >= 0.25")
    assert isinstance(cond, Comparison)
    assert cond.metric.args == (500, 600, 0, 600)
    assert cond.op == ">="
    cond = parse_expression("LatencyAtQuantileMS(50.0) > 100")
    assert isinstance(cond, Comparison)
    assert cond.metric.args == (Fraction(50),) and cond.value == 100
    cond = parse_expression("RequestThreshold() != 7")
    assert isinstance(cond, Comparison) and cond.value == 7


def test_and_binds_tighter_than_or() -> None:
    cond = parse_expression(
        "NetworkErrorRatio() > 0.1 || ResponseCodeRatio(500, 600, 0, 600) > 0.2 "
        "&& RequestThreshold() >= 5"
    )
    assert isinstance(cond, Junction) and cond.op == "||"
    assert isinstance(cond.right, Junction) and cond.right.op == "&&"
    assert [str(c) for c in comparisons(cond)] == [
        "NetworkErrorRatio() > 0.1",
        "ResponseCodeRatio(500, 600, 0, 600) > 0.2",
        "RequestThreshold() >= 5",
    ]
    assert [j.position for j in disjunctions(cond)] == ["column 27"]


def test_parentheses_regroup() -> None:
    cond = parse_expression(
        "(NetworkErrorRatio() > 0.1 || NetworkErrorRatio() > 0.2) && RequestThreshold() > 1"
    )
    assert isinstance(cond, Junction) and cond.op == "&&"
    assert isinstance(cond.left, Junction) and cond.left.op == "||"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("5e-1", Fraction(1, 2)),
        ("25E-2", Fraction(1, 4)),
        ("0x1p-2", Fraction(1, 4)),  # strconv.ParseFloat takes hexadecimal floats
        ("0.30", Fraction(3, 10)),  # exact decimal, not the nearest double
    ],
)
def test_float_literals(text: str, value: Fraction) -> None:
    cond = parse_expression(f"NetworkErrorRatio() > {text}")
    assert isinstance(cond, Comparison) and cond.value == value


def test_whitespace_comments_and_a_trailing_newline() -> None:
    cond = parse_expression(
        "  NetworkErrorRatio() /* network */ > 0.5 &&\n  RequestThreshold() >= 3 // volume\n"
    )
    assert isinstance(cond, Junction)
    assert cond.position == "line 1, column 43"
    assert cond.right.position == "line 2, column 22"


def test_int_literal_with_a_leading_zero_is_decimal() -> None:
    # strconv.Atoi("017") is 17: Traefik reads Go's octal-looking literal as decimal.
    cond = parse_expression("RequestThreshold() > 017")
    assert isinstance(cond, Comparison) and cond.value == 17


def _error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "column", "says"),
    [
        # syntax
        ("", 1, "expected an operand, found the end of the expression"),
        ("NetworkErrorRatio() > 0.5 &&", 29, "expected an operand"),
        ("(NetworkErrorRatio() > 0.5", 27, "expected ')'"),
        ("NetworkErrorRatio() > 0.5)", 26, "unexpected ')' after the expression"),
        ("NetworkErrorRatio() $ 0.5", 21, "unexpected character '$'"),
        ("NetworkErrorRatio() > 0.5 & RequestThreshold() > 1", 27, "operator & is not supported"),
        ("NetworkErrorRatio(,) > 0.5", 19, "expected an operand"),
        ("ResponseCodeRatio(500 600, 0, 600) > 0.5", 23, "expected ',' or ')'"),
        ('NetworkErrorRatio() > "0.5', 23, "string literal not terminated"),
        ("NetworkErrorRatio() > 0.5 /* open", 27, "comment not terminated"),
        ("RequestThreshold() > 08", 22, "invalid digit in octal literal 08"),
        # what predicate refuses
        ("!(NetworkErrorRatio() > 0.5)", 1, "operator ! is not supported"),
        ("NetworkErrorRatio() > -0.5", 23, "negative numbers are not accepted"),
        ("NetworkErrorRatio() > 0.2 + 0.3", 27, "operator + is not supported"),
        ("NetworkErrorRatio()", 1, "expected a condition"),
        ("NetworkErrorRatio > 0.5", 1, "NetworkErrorRatio is not defined"),
        ("Latency() > 1", 1, "unknown function Latency"),
        ("NetworkErrorRatio(1) > 0.5", 18, "takes 0 arguments, not 1"),
        ("ResponseCodeRatio(500, 600) > 0.5", 18, "takes 4 arguments, not 2"),
        ("ResponseCodeRatio(500, 600, 0, 600.0) > 0.5", 32, "argument 4 of ResponseCodeRatio"),
        ("ResponseCodeRatio(500, 600, 0, -1) > 0.5", 32, "operator - is not supported"),
        ("LatencyAtQuantileMS(50) > 100", 21, "write 50 as 50.0"),
        ("NetworkErrorRatio() > 1", 23, "write 1 as 1.0"),
        ("LatencyAtQuantileMS(50.0) > 100.0", 29, "compared with an integer, not a float"),
        ("RequestThreshold() >= 2.5", 23, "compared with an integer, not a float"),
        ("NetworkErrorRatio() > 'x'", 23, "rune literal 'x' is not supported"),
        ('NetworkErrorRatio() > "x"', 23, "not a string"),
        ("NetworkErrorRatio() > 2i", 23, "imaginary literal"),
        ("0.5 < NetworkErrorRatio()", 1, "a metric on the right is not accepted"),
        ("NetworkErrorRatio() > NetworkErrorRatio()", 23, "not a metric"),
        ("NetworkErrorRatio() > 0.5 > 0.1", 27, "compares a metric with a value"),
        ("NetworkErrorRatio() > 0.5 && 1", 30, "each side of && must be a condition"),
        ("RequestThreshold() > 1_000", 22, "not a decimal integer"),
        ("RequestThreshold() > 0x10", 22, "not a decimal integer"),
        ("NetworkErrorRatio() > 1_0.5", 23, "no _ in decimal floats"),
    ],
)
def test_errors_name_the_column(text: str, column: int, says: str) -> None:
    err = _error(text)
    assert (err.line, err.column) == (1, column), str(err)
    assert says in err.message, str(err)
    assert str(err).startswith(f"column {column}: ")


def test_a_newline_after_an_operand_ends_the_expression_as_in_go() -> None:
    # Go inserts a semicolon there: ParseExpr refuses what follows.
    err = _error("NetworkErrorRatio() > 0.5\n&& RequestThreshold() > 3")
    assert (err.line, err.column) == (1, 26)
    assert "newline" in err.message
    assert str(err).startswith("line 1, column 26: ")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    err = _error("(" * 150 + "NetworkErrorRatio() > 0.5" + ")" * 150)
    assert "nested more than" in err.message
    err = _error("!" * 500 + "NetworkErrorRatio() > 0.5")
    assert "nested more than" in err.message


_METRIC = st.sampled_from(
    [
        ("NetworkErrorRatio()", "float"),
        ("ResponseCodeRatio(500, 600, 0, 600)", "float"),
        ("LatencyAtQuantileMS(99.0)", "int"),
        ("RequestThreshold()", "int"),
    ]
)
_OP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


@st.composite
def _comparison(draw: st.DrawFn) -> str:
    metric, kind = draw(_METRIC)
    if kind == "float":
        value = f"{draw(st.integers(0, 999))}.{draw(st.integers(0, 99))}"
    else:
        value = str(draw(st.integers(0, 10**6)))
    return f"{metric} {draw(_OP)} {value}"


@st.composite
def _condition(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        return draw(_comparison())
    left = draw(_condition(depth + 1))
    right = draw(_condition(depth + 1))
    op = draw(st.sampled_from(["&&", "||"]))
    text = f"{left} {op} {right}"
    return f"({text})" if draw(st.booleans()) else text


@given(_condition())
def test_every_well_typed_condition_parses(text: str) -> None:
    cond = parse_expression(text)
    # Every comparison is kept, in order; the junctions are the ones written.
    assert len(comparisons(cond)) == sum(
        text.count(f"{name}(")
        for name in (
            "NetworkErrorRatio",
            "ResponseCodeRatio",
            "LatencyAtQuantileMS",
            "RequestThreshold",
        )
    )
    assert len(disjunctions(cond)) == text.count("||")


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_an_expression_error(text: str) -> None:
    try:
        parse_expression(text)
    except ExpressionError as err:
        assert err.line >= 1 and err.column >= 1
