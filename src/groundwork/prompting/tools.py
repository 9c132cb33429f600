"""Tools an agent can call: typed arguments parsed from model text, and a registry of tools.

A ReAct agent (Yao et al. 2023, "ReAct: Synergizing Reasoning and Acting in Language Models")
writes actions as text, ``Action: search[Eiffel Tower]``; the agent loop
(:mod:`groundwork.prompting.agents`) cuts out the tool's name and the raw input, and
:meth:`Tool.call` turns that input into typed arguments:

* a tool with **one** parameter takes the whole input (surrounding quotes or an enclosing pair of
  brackets removed, so ``search["Paris"]`` and ``search[(Paris)]`` both search for ``Paris``);
* a tool with **several** takes a JSON object, ``{"a": 1, "b": "x"}``, or comma-separated
  values in declaration order, ``1, x`` (quote a text value that holds a comma).

Values are converted to the declared types (``str``, ``int``, ``float``); anything that does not
fit raises :class:`ToolError` with a message that shows the expected form. The agent puts that
message in front of the model as the observation, so a wrong call costs a step, never a crash.

Ready-made: :func:`calculator_tool` (the safe evaluator of :mod:`~groundwork.prompting.calculator`,
as in Toolformer, Schick et al. 2023), and ReAct's ``Search[entity]`` and ``Lookup[keyword]``
over passages and any retriever: :func:`search_tool` shows the top passages, :func:`lookup_tool`
the next sentence of them with the keyword (ReAct's "Ctrl+F"); they share a :class:`SearchState`.
``finish[answer]`` is not a tool: the agent handles it.

Chapter 15 (Prompting, agents and retrieval).
"""

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from groundwork.checks import positive_int
from groundwork.errors import ConfigError, GroundworkError, did_you_mean
from groundwork.prompting.calculator import calculate
from groundwork.retrieval.base import Retriever
from groundwork.retrieval.datasets import split_sentences

PARAMETER_TYPES = (str, int, float)
"""The types a tool parameter may have."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CLOSERS = {"(": ")", "[": "]"}
_QUOTES = "\"'`"
_KINDS = {str: "text", int: "an integer", float: "a number"}


class ToolError(GroundworkError, ValueError):
    """A tool was called with input it cannot use, or does not exist; the message says why."""


# --- parsing an action's input ----------------------------------------------------------------


def _encloses(text: str) -> bool:
    """Whether ``text[0]`` is an opening bracket whose match is ``text[-1]`` (``(a)(b)``: no)."""
    closer = _CLOSERS.get(text[:1])
    if closer is None or not text.endswith(closer):
        return False
    depth = 0
    for i, ch in enumerate(text):
        if ch == text[0]:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return i == len(text) - 1
    return False


def unwrap(text: str) -> str:
    """Strip spaces, then surrounding quotes and enclosing brackets, repeatedly.

    >>> unwrap(' ["Paris"] '), unwrap("(2+3)*(4+5)")
    ('Paris', '(2+3)*(4+5)')
    """
    text = text.strip()
    while len(text) >= 2:
        quoted = text[0] in _QUOTES and text[-1] == text[0] and text[0] not in text[1:-1]
        if not (quoted or _encloses(text)):
            break
        text = text[1:-1].strip()
    return text


def _convert(value: Any, kind: type) -> str | int | float:
    """``value`` (text, or a JSON value) as ``kind``; raises ``ValueError`` when it does not fit."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"{json.dumps(value)} is not {_KINDS[kind]}")
    if kind is str:
        text = unwrap(value) if isinstance(value, str) else str(value)
        if not text:
            raise ValueError("the value is empty")
        return text
    if isinstance(value, str):
        value = unwrap(value)
        if kind is int and re.fullmatch(r"[+-]?\d+", value):
            return int(value)
        value = float(value)  # ValueError for text that is not a number
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"{value} is not a whole number")
        return int(value)
    return float(value)


# --- a tool ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A function an agent may call, with named, typed parameters.

    Example:
        >>> echo = Tool("echo", "repeats its input", {"text": str}, lambda text: text)
        >>> echo.call('"hello"'), echo.signature
        ('hello', 'echo[text: str]')
    """

    name: str
    """What the model writes to call it, e.g. ``"search"``: letters, digits and ``_``."""
    description: str
    """One line for the agent's prompt: what it does and what input it wants."""
    parameters: dict[str, type]
    """Parameter names and types (``str``, ``int`` or ``float``), in positional order."""
    function: Callable[..., str]
    """Called with the converted arguments as keywords; returns the observation text."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"tool name {self.name!r} must be letters, digits and '_' (not starting with a "
                "digit), e.g. 'search'"
            )
        if self.name.lower() == "finish":
            raise ConfigError("'finish' is reserved: the agent itself handles finish[answer]")
        for param, kind in self.parameters.items():
            if not _NAME.match(param):
                raise ConfigError(f"tool {self.name!r}: parameter name {param!r} is not valid")
            if kind not in PARAMETER_TYPES:
                raise ConfigError(
                    f"tool {self.name!r}: parameter {param!r} has type {kind!r}; use str, int "
                    "or float"
                )
        if not callable(self.function):
            raise ConfigError(f"tool {self.name!r}: function must be callable")

    @property
    def signature(self) -> str:
        """How the model calls it: ``name[arg: type, ...]``."""
        args = ", ".join(f"{p}: {t.__name__}" for p, t in self.parameters.items())
        return f"{self.name}[{args}]"

    def usage(self) -> str:
        """What the tool expects, e.g. ``tool 'lookup' expects 1 argument 'keyword' (str)``."""
        n = len(self.parameters)
        args = ", ".join(f"{p!r} ({t.__name__})" for p, t in self.parameters.items())
        if n == 0:
            return f"tool {self.name!r} expects no argument"
        return f"tool {self.name!r} expects {n} argument{'s' if n > 1 else ''} {args}"

    # --8<-- [start:parse_arguments]
    def parse_arguments(self, raw: str) -> dict[str, str | int | float]:
        """Typed keyword arguments from an action's raw input text.

        Args:
            raw: what the model wrote between the brackets of ``name[...]``.

        Returns:
            Parameter name -> value of the declared type.

        Raises:
            ToolError: wrong number of values, a value that does not convert, or a JSON object
                with missing or unknown keys; the message shows what the tool expects.
        """
        text = raw.strip()
        params = self.parameters
        if not params:
            if unwrap(text):
                raise ToolError(f"{self.usage()}, got {raw!r}; call it as {self.name}[]")
            return {}
        values: dict[str, Any]
        obj = _json_object(text)
        if obj is not None and (len(params) > 1 or set(obj) == set(params)):
            missing = [p for p in params if p not in obj]
            unknown = [k for k in obj if k not in params]
            if unknown:
                hint = did_you_mean(unknown[0], params)
                raise ToolError(f"{self.usage()}, got unknown key {unknown[0]!r}; {hint}")
            if missing:
                raise ToolError(f"{self.usage()}, got no value for {missing[0]!r}")
            values = obj
        elif len(params) == 1:
            values = {next(iter(params)): text}
        else:  # comma-separated positional values; csv keeps quoted commas together
            inner = unwrap(text)
            fields = next(csv.reader([inner], skipinitialspace=True), []) if inner else []
            if len(fields) != len(params):
                raise ToolError(
                    f"{self.usage()}, got {len(fields)} value{'s' if len(fields) != 1 else ''} "
                    f"in {raw!r}; separate values with commas or give a JSON object"
                )
            values = dict(zip(params, fields, strict=True))
        converted: dict[str, str | int | float] = {}
        for param, kind in params.items():
            try:
                converted[param] = _convert(values[param], kind)
            except (ValueError, TypeError, OverflowError) as err:
                raise ToolError(
                    f"{self.usage()}, got {values[param]!r} for {param!r}: {err}"
                ) from err
        return converted

    # --8<-- [end:parse_arguments]

    def call(self, raw: str) -> str:
        """Parse ``raw`` (:meth:`parse_arguments`), call the function, return its text.

        Raises:
            ToolError: the input does not fit the parameters, or the function refused it (its
                ``ValueError``, ``TypeError``, ``ArithmeticError`` or ``LookupError``, e.g. a
                :class:`~groundwork.prompting.calculator.CalculatorError`, becomes the message).
        """
        kwargs = self.parse_arguments(raw)
        try:
            result = self.function(**kwargs)
        except (ToolError, ConfigError):
            raise  # already says what to do / a setup problem, not the model's input
        except GroundworkError as err:
            raise ToolError(f"tool {self.name!r} refused {raw.strip()!r}: {err}") from err
        except (ValueError, TypeError, ArithmeticError, LookupError) as err:
            raise ToolError(
                f"tool {self.name!r} failed on {raw.strip()!r}: {type(err).__name__}: {err}"
            ) from err
        return result if isinstance(result, str) else str(result)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text) if text.startswith("{") else None
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


# --- the registry ---------------------------------------------------------------------------


class ToolRegistry:
    """The tools an agent may use, by name, in the order they were registered.

    Example:
        >>> tools = ToolRegistry([calculator_tool()])
        >>> "calculator" in tools, tools.get("calculator").call("6 * 7")
        (True, '42')
    """

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add ``tool``.

        Raises:
            ConfigError: not a :class:`Tool`, or a tool with that name (in any letter case) is
                already registered.
        """
        if not isinstance(tool, Tool):
            raise ConfigError(f"only Tool objects can be registered, got {type(tool).__name__}")
        if tool.name.lower() in (n.lower() for n in self._tools):
            raise ConfigError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        """The tool called ``name`` (letter case and surrounding spaces are ignored).

        Raises:
            ToolError: no such tool; the message lists the closest name or all of them.
        """
        tool = self._find(name)
        if tool is not None:
            return tool
        if not self._tools:
            raise ToolError(f"there is no tool {name!r}: no tools are registered")
        hint = did_you_mean(name.strip(), self._tools)
        raise ToolError(f"there is no tool {name!r}; {hint} (available: {', '.join(self._tools)})")

    def _find(self, name: str) -> Tool | None:
        if name in self._tools:
            return self._tools[name]
        wanted = name.strip().lower()
        return next((t for t in self._tools.values() if t.name.lower() == wanted), None)

    @property
    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def describe(self) -> str:
        """One line per tool, ``name[arg: type]: description``, for the agent's prompt."""
        return "\n".join(f"{t.signature}: {t.description}" for t in self._tools.values())

    def __contains__(self, name: object) -> bool:
        """Whether :meth:`get` would find ``name``."""
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


# --- ready-made tools -----------------------------------------------------------------------


# --8<-- [start:calculator_tool]
def calculator_tool() -> Tool:
    """A ``calculator[expression]`` tool over :func:`~groundwork.prompting.calculator.calculate`.

    Integers are shown exactly, floats with up to 10 significant digits (``2/3 -> 0.6666666667``).
    """

    def run(expression: str) -> str:
        value = calculate(expression)
        return str(value) if isinstance(value, int) else f"{value:.10g}"

    return Tool(
        name="calculator",
        description="evaluates arithmetic with numbers, + - * / // % ** and parentheses, "
        "e.g. (12 + 3) * 4",
        parameters={"expression": str},
        function=run,
    )


# --8<-- [end:calculator_tool]


@dataclass
class SearchState:
    """What the last search found, shared by the search and lookup tools (ReAct's environment).

    Example:
        >>> state = SearchState()
        >>> state.remember(["Paris is in France. It is big.", "Lyon is in France."])
        >>> state.lookup("france")
        '(Result 1 / 2) Paris is in France.'
        >>> state.lookup("france"), state.lookup("france")
        ('(Result 2 / 2) Lyon is in France.', 'No more results.')
    """

    passages: list[str] = field(default_factory=list)
    """The passages of the most recent search, best first."""
    keyword: str | None = None  # the keyword of the current run of lookups,
    matches: list[str] = field(default_factory=list)  # the sentences that contain it,
    position: int = 0  # and how many of them were returned already

    def remember(self, passages: Sequence[str]) -> None:
        """Keep the passages of a new search; lookups start again from the first sentence."""
        self.passages = list(passages)
        self.keyword, self.matches, self.position = None, [], 0

    # --8<-- [start:lookup]
    def lookup(self, keyword: str) -> str:
        """The next sentence of the searched passages containing ``keyword`` (any letter case).

        As ReAct's ``Lookup``: a new keyword starts from the first match; the same keyword again
        moves on to the next one, until "No more results.".
        """
        if not self.passages:
            return "Nothing to look up yet: use search[query] first, then lookup[keyword]."
        if keyword != self.keyword:
            self.keyword, self.position = keyword, 0
            needle = keyword.lower()
            sentences = (s for p in self.passages for s in split_sentences(p))
            self.matches = [s for s in sentences if needle in s.lower()]
        if not self.matches:
            return f"No sentence of the search results contains {keyword!r}."
        if self.position >= len(self.matches):
            return "No more results."
        self.position += 1
        return f"(Result {self.position} / {len(self.matches)}) {self.matches[self.position - 1]}"

    # --8<-- [end:lookup]


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, marked with ``...``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut + "..."


# --8<-- [start:search_tool]
def search_tool(
    retriever: Retriever,
    passages: Sequence[str],
    k: int = 3,
    max_chars: int = 600,
    *,
    state: SearchState | None = None,
) -> Tool:
    """A ``search[query]`` tool: the top ``k`` passages for the query, numbered.

    Args:
        retriever: ranks ``passages``: ``retrieve(query, k)`` returns hits with ``.index`` into
            ``passages`` and ``.score``.
        passages: the collection the retriever was built over.
        k: passages shown per search.
        max_chars: length of the whole observation; each passage gets an equal share and is cut
            at a word boundary (the full passages stay in ``state`` for lookups).
        state: share it with :func:`lookup_tool` so lookups read what this tool found.

    Returns:
        The tool (name ``"search"``).

    Raises:
        ConfigError: ``k`` or ``max_chars`` is not a positive integer, or ``passages`` is empty.
    """
    positive_int("k", k)
    positive_int("max_chars", max_chars)
    if not passages:
        raise ConfigError("search_tool needs at least one passage to search")
    memory = state if state is not None else SearchState()

    def run(query: str) -> str:
        hits = list(retriever.retrieve(query, k))[:k]
        for hit in hits:
            if not 0 <= hit.index < len(passages):
                raise ConfigError(
                    f"the retriever returned passage {hit.index} but search_tool was given "
                    f"{len(passages)} passages; build the retriever over the same passages"
                )
        found = [passages[hit.index] for hit in hits]
        memory.remember(found)
        if not found:
            return f"No passages found for {query!r}; try other words."
        share = max(max_chars // len(found) - 5, 20)  # 5: the "[i] " prefix and a newline
        return "\n".join(f"[{i}] {_shorten(p, share)}" for i, p in enumerate(found, start=1))

    return Tool(
        name="search",
        description=f"searches the documents and shows the top {k} passages for a query",
        parameters={"query": str},
        function=run,
    )


# --8<-- [end:search_tool]


def lookup_tool(state: SearchState) -> Tool:
    """A ``lookup[keyword]`` tool: the next sentence with the keyword in the last search's passages.

    Args:
        state: the same :class:`SearchState` given to :func:`search_tool`.

    Returns:
        The tool (name ``"lookup"``). Before any search it answers with an observation telling
        the agent to search first (not an error).
    """
    if not isinstance(state, SearchState):
        raise ConfigError(
            f"lookup_tool needs the SearchState shared with search_tool, got {type(state).__name__}"
        )
    return Tool(
        name="lookup",
        description="finds the next sentence containing a keyword in the last search's passages",
        parameters={"keyword": str},
        function=state.lookup,
    )
