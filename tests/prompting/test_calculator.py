"""The safe calculator: right answers, and a security boundary that refuses everything else fast."""

import time

import pytest

from groundwork.errors import GroundworkError
from groundwork.prompting.calculator import MAX_CHARS, CalculatorError, calculate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", 14),  # * before +
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),  # ** is right-associative: 2 ** 9
        ("-2 ** 2", -4),  # ** binds tighter than unary minus
        ("(-2) ** 2", 4),
        ("--3", 3),
        ("+-+3", -3),
        ("2 ** -1", 0.5),
        ("7 / 2", 3.5),
        ("6 / 3", 2),  # exact division of integers stays an int
        ("6.0 / 3", 2.0),
        ("7 // 2", 3),
        ("-7 // 2", -4),  # floor division, as Python
        ("7 % 3", 1),
        ("-7 % 3", 2),  # the remainder has the divisor's sign
        ("7.5 % 2", 1.5),
        ("1e3", 1000.0),
        ("2.5e-3 * 4", 0.01),
        ("0.1 + 0.2", 0.1 + 0.2),
        ("  12 * (3 + 4)  ", 84),
        ("3 × 4 ÷ 2", 6),
        ("10 − 4", 6),  # the minus sign U+2212, not a hyphen
        ("1_000 + 1", 1001),
        ("2 ** 0.5", 2**0.5),
        ("10 ** 99", 10**99),
        ("((((((7))))))", 7),
    ],
)
def test_arithmetic(expression: str, expected: int | float) -> None:
    value = calculate(expression)
    assert value == pytest.approx(expected, rel=1e-12)
    assert type(value) is type(expected)


ATTACKS = [
    "__import__('os').system('ls')",
    "__import__",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('x')",
    "exec('1')",
    "eval('1+1')",
    "compile('1', 'x', 'eval')",
    "globals()",
    "9**9**9",
    "10**1000",
    "2**100000",
    "2**101",
    "99999999999**99",
    "(10**50) * (10**50)",
    "1e99 * 10",
    "1e308 * 10",
    "1e400",
    "9" * 101,
    "[1]*10**9",
    "10**9*[1]",
    "'a'*10",
    "b'a'",
    "f'{1}'",
    "lambda: 1",
    "x",
    "x + 1",
    "pi",
    "1 if 1 else 2",
    "True+1",
    "None",
    "...",
    "1j",
    "1 < 2",
    "1 and 2",
    "not 1",
    "~1",
    "1 << 1000",
    "2 ^ 3",
    "1 & 1",
    "{1: 2}",
    "{1}",
    "(1, 2)",
    "1,000",
    "[x for x in range(10)]",
    "(x for x in ())",
    "(y := 1)",
    "*a",
    "1 @ 2",
    "1 +",
    "",
    "   ",
    "1\n+ 2",
    "1\x00",
    "import os",
    "1; 2",
    "(" * 1000 + "1" + ")" * 1000,
    "-" * 199 + "1",
    "(" * 99 + "1" + ")" * 99 + "+x",
    "1+" * 100 + "1",
    "1" + "+1" * 99,
    "1 + " * 300 + "1",
    "a" * 10_000,
    "1/0",
    "1//0",
    "1%0",
    "1.5/0.0",
    "0**-1",
    "(-8) ** (1/3)",
]


@pytest.mark.parametrize("attack", ATTACKS, ids=range(len(ATTACKS)))
def test_refuses_everything_but_arithmetic_quickly(attack: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError):
        calculate(attack)
    assert time.perf_counter() - start < 0.5  # refused before any expensive work


def test_error_is_a_groundwork_error_with_a_clear_message() -> None:
    with pytest.raises(GroundworkError, match=r"names such as 'x' are not allowed.*\(3 \+ 4\)"):
        calculate("x * 2")
    with pytest.raises(CalculatorError, match="function calls are not allowed"):
        calculate("__import__('os')")
    with pytest.raises(CalculatorError, match="attribute access"):
        calculate("(1).real")
    with pytest.raises(CalculatorError, match="division by zero"):
        calculate("5 / (3 - 3)")
    with pytest.raises(CalculatorError, match="exponent 387420489 is too large"):
        calculate("9**9**9")
    with pytest.raises(CalculatorError, match="1e100"):
        calculate("10 ** 100")
    with pytest.raises(CalculatorError, match="write 1000, not 1,000"):
        calculate("1,000 * 2")
    with pytest.raises(CalculatorError, match=r"write powers as 2 \*\* 3"):
        calculate("2^3")
    with pytest.raises(CalculatorError, match=f"at most {MAX_CHARS}"):
        calculate("1+" * 150 + "1")
    with pytest.raises(CalculatorError, match="nested more than"):
        calculate("-" * 100 + "1")
    with pytest.raises(CalculatorError, match="not a valid expression"):
        calculate("2 +* 3")
    with pytest.raises(CalculatorError, match="booleans"):
        calculate("True")
    with pytest.raises(CalculatorError, match="must be text"):
        calculate(12)  # type: ignore[arg-type]


def test_refuses_before_evaluating_anything() -> None:
    """The whole tree is checked first: a name is reported even after an expensive-looking power."""
    with pytest.raises(CalculatorError, match="names"):
        calculate("9**9**9 + x")


def test_limits_are_inclusive_where_documented() -> None:
    assert calculate("2 ** 100") == 2**100  # exponent 100 is allowed, 31 digits
    assert calculate("(-1) ** 100") == 1
    assert calculate("0.5 ** -100") == 2.0**100
    assert calculate("-" * 30 + "1") == 1  # 30 levels deep is allowed
    with pytest.raises(CalculatorError):
        calculate("-" * 31 + "1")
