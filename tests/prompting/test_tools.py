"""Tools: typed arguments parsed from model text, the registry, and search/lookup over passages."""

import pytest

from groundwork.errors import ConfigError, GroundworkError
from groundwork.prompting.tools import (
    SearchState,
    Tool,
    ToolError,
    ToolRegistry,
    calculator_tool,
    lookup_tool,
    search_tool,
    split_sentences,
    unwrap,
)
from groundwork.retrieval.base import Hit


def echo_tool() -> Tool:
    return Tool("echo", "repeats its input", {"text": str}, lambda text: text)


def scale_tool() -> Tool:
    return Tool(
        "scale",
        "repeats a word n times, scaled",
        {"word": str, "n": int, "factor": float},
        lambda word, n, factor: f"{word}|{n!r}|{factor!r}",
    )


# --- parsing the input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Paris", "Paris"),
        ("  Paris  ", "Paris"),
        ('"Paris"', "Paris"),
        ("'Paris'", "Paris"),
        ("[Paris]", "Paris"),
        ('(["Paris"])', "Paris"),
        ('{"text": "Paris"}', "Paris"),  # a JSON object naming the one parameter
        ('{"other": 1}', '{"other": 1}'),  # any other JSON object is just text
        ("New York, USA", "New York, USA"),  # one parameter: commas belong to the text
        ("(2+3)*(4+5)", "(2+3)*(4+5)"),  # brackets that do not enclose everything stay
        ('"a" and "b"', '"a" and "b"'),  # quotes that do not enclose everything stay
    ],
)
def test_single_parameter_takes_the_whole_input(raw: str, expected: str) -> None:
    assert echo_tool().call(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cat, 3, 1.5", "cat|3|1.5"),
        ("cat,3,2", "cat|3|2.0"),  # int converted to float
        ('"a, b", 3, 1', "a, b|3|1.0"),  # quoted commas stay in the value
        ("[cat, 3.0, 1e3]", "cat|3|1000.0"),  # 3.0 is a whole number
        ('{"word": "cat", "n": 3, "factor": 0.5}', "cat|3|0.5"),
        ('{"factor": "2", "n": "4", "word": 7}', "7|4|2.0"),  # JSON keys in any order
    ],
)
def test_several_parameters_typed(raw: str, expected: str) -> None:
    assert scale_tool().call(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("cat, 3", r"expects 3 arguments 'word' \(str\), 'n' \(int\), 'factor' \(float\), got 2"),
        ("cat, 3, 1, 2", "got 4 values"),
        ("", "got 0 values"),
        ("cat, three, 1", r"got 'three' for 'n'"),
        ("cat, 3.5, 1", "not a whole number"),
        ("cat, 3, inf", "not a finite number"),
        ('{"word": "cat", "n": 3}', "no value for 'factor'"),
        ('{"word": "cat", "n": 3, "factr": 1}', "unknown key 'factr'; did you mean 'factor'"),
        ('{"word": "cat", "n": true, "factor": 1}', "true is not an integer"),
        ('{"word": ["x"], "n": 1, "factor": 1}', r'\["x"\] is not text'),
    ],
)
def test_bad_arguments_say_what_the_tool_expects(raw: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        scale_tool().call(raw)


def test_single_parameter_errors() -> None:
    with pytest.raises(ToolError, match=r"expects 1 argument 'text' \(str\), got '\"\"' .*empty"):
        echo_tool().call('  ""  ')
    half = Tool("half", "halves a number", {"x": float}, lambda x: str(x / 2))
    assert half.call("[3]") == "1.5"
    with pytest.raises(ToolError, match=r"expects 1 argument 'x' \(float\), got 'three'"):
        half.call("three")


def test_no_parameters() -> None:
    tool = Tool("now", "the time", {}, lambda: "noon")
    assert tool.call("") == "noon"
    assert tool.call(" [] ") == "noon"
    with pytest.raises(ToolError, match="expects no argument"):
        tool.call("x")


def test_function_errors_become_tool_errors() -> None:
    def fail(text: str) -> str:
        raise KeyError(text)

    with pytest.raises(ToolError, match="tool 'boom' failed on 'x': KeyError"):
        Tool("boom", "fails", {"text": str}, fail).call("x")

    def misconfigured(text: str) -> str:
        raise ConfigError("set up wrong")

    with pytest.raises(ConfigError):  # not the model's fault: not turned into an observation
        Tool("bad", "misconfigured", {"text": str}, misconfigured).call("x")

    def number(text: str) -> int:
        return 42

    assert Tool("n", "a number", {"text": str}, number).call("x") == "42"  # str() of the result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "my tool"}, "letters, digits"),
        ({"name": "1tool"}, "letters, digits"),
        ({"name": "Finish"}, "reserved"),
        ({"parameters": {"x": list}}, "use str, int or float"),
        ({"parameters": {"bad name": str}}, "parameter name"),
        ({"function": "not callable"}, "callable"),
    ],
)
def test_tool_definition_is_checked(kwargs: dict, message: str) -> None:
    fields = {"name": "ok", "description": "d", "parameters": {"x": str}, "function": str}
    with pytest.raises(ConfigError, match=message):
        Tool(**{**fields, **kwargs})


def test_unwrap() -> None:
    assert unwrap(" ((x)) ") == "x"
    assert unwrap("`code`") == "code"
    assert unwrap("(a)(b)") == "(a)(b)"
    assert unwrap("[") == "["
    assert unwrap("") == ""


# --- registry -------------------------------------------------------------------------------


def test_registry() -> None:
    tools = ToolRegistry([calculator_tool(), echo_tool()])
    tools.register(scale_tool())
    assert tools.names == ["calculator", "echo", "scale"]
    assert len(tools) == 3 and [t.name for t in tools] == tools.names
    assert "echo" in tools and "ECHO " in tools and "search" not in tools and 3 not in tools
    assert tools.get("Calculator").name == "calculator"  # case and spaces are ignored
    assert tools.describe() == (
        "calculator[expression: str]: evaluates arithmetic with numbers, + - * / // % ** and "
        "parentheses, e.g. (12 + 3) * 4\n"
        "echo[text: str]: repeats its input\n"
        "scale[word: str, n: int, factor: float]: repeats a word n times, scaled"
    )


def test_registry_errors() -> None:
    tools = ToolRegistry([calculator_tool(), echo_tool()])
    with pytest.raises(ToolError, match=r"no tool 'calculater'; did you mean 'calculator'"):
        tools.get("calculater")
    with pytest.raises(ToolError, match=r"available: calculator, echo"):
        tools.get("zzz")
    with pytest.raises(ToolError, match="no tools are registered"):
        ToolRegistry().get("x")
    with pytest.raises(ConfigError, match="already registered"):
        tools.register(Tool("Echo", "again", {"t": str}, str))
    with pytest.raises(ConfigError, match="only Tool objects"):
        tools.register("echo")  # type: ignore[arg-type]
    assert ToolRegistry().describe() == ""


# --- calculator -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("6 * 7", "42"),
        ("(2+3)*(4+5)", "45"),
        ("[12 * 24 - 150]", "138"),
        ('"7 / 2"', "3.5"),
        ("2 / 3", "0.6666666667"),  # 10 significant digits
        ("10 ** 20 / 3", "3.333333333e+19"),
        ("2 ** 80", "1208925819614629174706176"),  # integers exactly
    ],
)
def test_calculator_tool(raw: str, expected: str) -> None:
    assert calculator_tool().call(raw) == expected


def test_calculator_tool_refusal_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match=r"tool 'calculator' refused .*names such as 'x'") as info:
        calculator_tool().call("x + 1")
    assert isinstance(info.value, GroundworkError)
    with pytest.raises(ToolError, match="division by zero"):
        calculator_tool().call("1 / 0")


# --- search and lookup ----------------------------------------------------------------------

PASSAGES = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built for the 1889 fair.",
    "Paris is the capital of France. The Seine flows through Paris. Paris has many museums.",
    "The Louvre is the world's most visited museum. It is in Paris.",
    "Berlin is the capital of Germany.",
]


class FakeRetriever:
    """Ranks passages by how many query words they contain; records the calls."""

    def __init__(self, passages: list[str]) -> None:
        self.passages = passages
        self.calls: list[tuple[str, int]] = []

    def retrieve(self, query: str, k: int) -> list[Hit]:
        self.calls.append((query, k))
        words = query.lower().split()
        scores = [sum(w in p.lower() for w in words) for p in self.passages]
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [Hit(i, float(scores[i])) for i in ranked[:k] if scores[i] > 0]


def test_search_shows_the_top_passages_numbered() -> None:
    retriever = FakeRetriever(PASSAGES)
    tool = search_tool(retriever, PASSAGES, k=2)
    assert tool.name == "search" and tool.parameters == {"query": str}
    observation = tool.call("[Eiffel Tower]")
    assert retriever.calls == [("Eiffel Tower", 2)]
    assert observation == f"[1] {PASSAGES[0]}"  # only one passage contains the words
    observation = tool.call("capital of France")
    assert observation.splitlines()[0] == f"[1] {PASSAGES[1]}"
    assert observation.splitlines()[1] == f"[2] {PASSAGES[3]}"
    assert tool.call("Tokyo") == "No passages found for 'Tokyo'; try other words."


def test_search_truncates_each_passage_at_a_word_boundary() -> None:
    tool = search_tool(FakeRetriever(PASSAGES), PASSAGES, k=2, max_chars=100)
    observation = tool.call("Paris")
    assert len(observation) <= 100
    first, second = observation.splitlines()
    assert first.startswith("[1] The Eiffel Tower") and first.endswith("...")
    assert PASSAGES[0].startswith(first[4:-3])  # whole words, then "..."
    assert second.startswith("[2] Paris is the capital")


def test_lookup_reads_the_last_search_sentence_by_sentence() -> None:
    state = SearchState()
    search = search_tool(FakeRetriever(PASSAGES), PASSAGES, k=3, state=state)
    lookup = lookup_tool(state)
    assert "search[query] first" in lookup.call("Seine")  # an observation, not an error
    search.call("Paris capital")
    assert state.passages == [PASSAGES[1], PASSAGES[0], PASSAGES[2]]
    assert lookup.call("seine") == "(Result 1 / 1) The Seine flows through Paris."
    assert lookup.call("seine") == "No more results."
    assert lookup.call("museum") == "(Result 1 / 2) Paris has many museums."
    assert lookup.call("museum") == "(Result 2 / 2) The Louvre is the world's most visited museum."
    assert lookup.call("Eiffel") == (
        "(Result 1 / 1) The Eiffel Tower is a wrought-iron lattice tower in Paris."
    )
    assert lookup.call("Tokyo") == "No sentence of the search results contains 'Tokyo'."
    search.call("Berlin")  # a new search starts lookups afresh
    assert lookup.call("capital") == "(Result 1 / 1) Berlin is the capital of Germany."


def test_search_checks_its_arguments_and_the_retriever() -> None:
    retriever = FakeRetriever(PASSAGES)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        search_tool(retriever, PASSAGES, k=0)
    with pytest.raises(ConfigError, match="max_chars"):
        search_tool(retriever, PASSAGES, max_chars=-1)
    with pytest.raises(ConfigError, match="at least one passage"):
        search_tool(retriever, [])
    with pytest.raises(ConfigError, match="returned passage 3 but search_tool was given 2"):
        search_tool(FakeRetriever(PASSAGES), PASSAGES[:2]).call("Berlin")
    with pytest.raises(ConfigError, match="SearchState"):
        lookup_tool(retriever)  # type: ignore[arg-type]


def test_split_sentences() -> None:
    assert split_sentences("Hi there. How are you?  Fine!\nGood") == [
        "Hi there.",
        "How are you?",
        "Fine!",
        "Good",
    ]
    assert split_sentences("  ") == []
