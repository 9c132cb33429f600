r"""A safe arithmetic evaluator: the calculator an agent may call with text written by a model.

Language models are poor at arithmetic and good at writing it down; Schick et al. (2023,
"Toolformer: Language Models Can Teach Themselves to Use Tools") and Yao et al. (2023, "ReAct")
hand the sum to a calculator. The calculator's input is model output, so it is a *security
boundary*: ``eval("__import__('os').system(...)")`` must never run, and neither may an
innocent-looking ``9**9**9`` that would take the process hours and all its memory.

So :func:`calculate` never calls ``eval``. It parses the text with ``ast.parse(text, mode="eval")``
(parsing runs no code) and walks the tree itself, accepting only

* number literals (``int`` and ``float``, e.g. ``3``, ``2.5``, ``1e3``; not ``True``, ``1j``,
  strings or bytes),
* unary ``+`` and ``-``, binary ``+ - * / // % **``, and parentheses.

Everything else (names, calls, attributes, subscripts, comparisons, lambdas, ...) is refused with
a :class:`CalculatorError` saying what was found. Work is bounded before it is done:

* the text is at most :data:`MAX_CHARS` characters and the tree at most :data:`MAX_DEPTH` deep;
* every value, intermediate or final, has magnitude below :data:`MAX_MAGNITUDE` (``1e100``): an
  integer has at most 100 digits, so ``*`` of two allowed values is cheap;
* a power ``a ** b`` needs :math:`|b| \le` :data:`MAX_EXPONENT` and is refused *before* it is
  computed when :math:`|b| \log_{10} |a| \ge 100`.

Division: ``/`` of two integers gives an ``int`` when it is exact (``6/3 -> 2``) and a ``float``
otherwise (``7/2 -> 3.5``); with a float operand it is a float (``6.0/3 -> 2.0``). ``//`` and ``%``
follow Python (floor division, the remainder has the divisor's sign).

Chapter 15 (Prompting, agents and retrieval).
"""

import ast
import math

from groundwork.errors import GroundworkError

MAX_CHARS = 200
"""Longest expression accepted, in characters."""
MAX_DEPTH = 30
"""Deepest expression tree accepted (each operator adds one level)."""
MAX_EXPONENT = 100
"""Largest ``|b|`` accepted in ``a ** b``."""
MAX_MAGNITUDE = 10**100
"""Every value must satisfy ``abs(value) < MAX_MAGNITUDE``."""

ALLOWED = "numbers, + - * / // % ** and parentheses"

_SYMBOLS = {"×": "*", "÷": "/", "−": "-"}
"""Typographic signs a model may write, read as ``*``, ``/`` and ``-``."""

_BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}

_REFUSED_NODES: dict[type, str] = {
    ast.Name: "names",
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "'and'/'or'",
    ast.IfExp: "conditional expressions",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dictionaries",
    ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignments",
    ast.Starred: "'*' unpacking",
}


class CalculatorError(GroundworkError, ValueError):
    """An expression the calculator refuses: not plain arithmetic, too big, or undefined."""


Number = int | float


def _refuse(message: str) -> CalculatorError:
    return CalculatorError(f"{message}; the calculator accepts only {ALLOWED}, e.g. (3 + 4) * 2")


# --8<-- [start:check_tree]
def _check_tree(node: ast.AST, depth: int = 0) -> None:
    """Refuse any node that is not a number, a unary +/- or a binary arithmetic operator.

    Runs over the whole tree before anything is computed, so ``10**1000 + x`` is refused for
    the name ``x`` rather than for the power. Recursion stops at :data:`MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise CalculatorError(
            f"the expression is nested more than {MAX_DEPTH} levels deep; simplify it"
        )
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) not in (int, float):  # excludes bool (a subclass of int), complex, str
            kind = {
                bool: "booleans",
                str: "strings",
                bytes: "bytes",
                complex: "complex numbers",
                type(None): "None values",
            }
            raise _refuse(f"{kind.get(type(value), type(value).__name__)} are not allowed")
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.UAdd | ast.USub):
            raise _refuse(f"the operator {_unary_name(node.op)!r} is not allowed")
        _check_tree(node.operand, depth + 1)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            hint = "; write powers as 2 ** 3" if isinstance(node.op, ast.BitXor) else ""
            raise _refuse(f"the operator {_binary_name(node.op)!r} is not allowed{hint}")
        _check_tree(node.left, depth + 1)
        _check_tree(node.right, depth + 1)
        return
    if isinstance(node, ast.Tuple):
        raise _refuse("commas are not allowed (write 1000, not 1,000)")
    what = _REFUSED_NODES.get(type(node), f"{type(node).__name__} expressions")
    example = f" such as {node.id!r}" if isinstance(node, ast.Name) else ""
    raise _refuse(f"{what}{example} are not allowed")


# --8<-- [end:check_tree]


def _unary_name(op: ast.unaryop) -> str:
    return {ast.Not: "not", ast.Invert: "~"}.get(type(op), type(op).__name__)


def _binary_name(op: ast.operator) -> str:
    names = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}
    return names.get(type(op), "@" if isinstance(op, ast.MatMult) else type(op).__name__)


def _bounded(value: Number) -> Number:
    """Return ``value`` if it is finite and below :data:`MAX_MAGNITUDE` in magnitude."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError(f"the result is not a finite number ({value}); use smaller numbers")
    if abs(value) >= MAX_MAGNITUDE:
        raise CalculatorError(
            "a number in the calculation reaches 1e100 or more in magnitude (the calculator's "
            "limit); use smaller numbers"
        )
    return value


# --8<-- [start:power]
def _power(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refused before computing it when the result would be too large."""
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(
            f"the exponent {exponent} is too large: the calculator allows |exponent| <= "
            f"{MAX_EXPONENT}"
        )
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero: 0 raised to a negative power is undefined")
    if base < 0 and isinstance(exponent, float) and not exponent.is_integer():
        raise CalculatorError(
            f"({base}) ** {exponent} is not a real number (a negative base with a fractional "
            "exponent)"
        )
    # |base ** exponent| = 10 ** (exponent * log10|base|): refuse it before it is computed.
    if base != 0 and exponent * math.log10(abs(base)) >= 100:
        raise CalculatorError(
            f"({base}) ** {exponent} would reach 1e100 or more (the calculator's limit); use "
            "smaller numbers"
        )
    return _bounded(base**exponent)


# --8<-- [end:power]


# --8<-- [start:evaluate]
def _evaluate(node: ast.AST) -> Number:
    """Value of a tree that :func:`_check_tree` accepted."""
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # _check_tree refused every other constant
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)  # the only other kind _check_tree lets through
    left, right = _evaluate(node.left), _evaluate(node.right)
    op = node.op
    if isinstance(op, ast.Pow):
        return _power(left, right)
    if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
        raise CalculatorError(f"division by zero in {left} {_BINARY[type(op)]} {right}")
    if isinstance(op, ast.Add):
        result: Number = left + right
    elif isinstance(op, ast.Sub):
        result = left - right
    elif isinstance(op, ast.Mult):
        result = left * right  # both below 1e100: at most a 200-digit product
    elif isinstance(op, ast.Div):
        exact = isinstance(left, int) and isinstance(right, int) and left % right == 0
        result = left // right if exact else left / right
    elif isinstance(op, ast.FloorDiv):
        result = left // right
    else:
        result = left % right
    return _bounded(result)


# --8<-- [end:evaluate]


# --8<-- [start:calculate]
def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely (no names, calls or other Python).

    Args:
        expression: e.g. ``"(3 + 4) * 2"``; surrounding spaces are ignored, and ``×``, ``÷`` and
            the minus sign ``−`` are read as ``*``, ``/`` and ``-``.

    Returns:
        The value: an ``int`` when every step is exact on integers (``6/3 -> 2``), else a
        ``float`` (``7/2 -> 3.5``, ``2**-1 -> 0.5``).

    Raises:
        CalculatorError: the text is empty, too long, not valid syntax or not plain arithmetic;
            a number would reach ``1e100``; an exponent is above 100; or a division by zero.

    >>> calculate("2 + 3 * 4")
    14
    >>> calculate("(1 + 2) / 4")
    0.75
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be text, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("the expression is empty; give arithmetic such as 12 * (3 + 4)")
    if len(text) > MAX_CHARS:
        raise CalculatorError(
            f"the expression is {len(text)} characters long; the calculator accepts at most "
            f"{MAX_CHARS}"
        )
    for symbol, replacement in _SYMBOLS.items():
        text = text.replace(symbol, replacement)
    try:
        tree = ast.parse(text, mode="eval")  # parsing only: no code runs
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise _refuse(f"{text!r} is not a valid expression") from err
    _check_tree(tree.body)
    try:
        return _evaluate(tree.body)
    except (OverflowError, ZeroDivisionError) as err:  # safety net; the checks come first
        raise CalculatorError(f"{text!r} cannot be computed: {err}") from err


# --8<-- [end:calculate]
