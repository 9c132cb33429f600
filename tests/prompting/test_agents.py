"""The ReAct loop, driven by a scripted fake model that records what it was shown."""

import json
from collections.abc import Sequence

import pytest

from groundwork.errors import ConfigError
from groundwork.prompting.agents import (
    CALCULATOR_EXAMPLE,
    SEARCH_EXAMPLE,
    STOP,
    ReActAgent,
    Step,
    answer_matches,
    parse_action,
    parse_step,
)
from groundwork.prompting.tools import Tool, ToolRegistry, calculator_tool


class ScriptedModel:
    """Returns ``outputs`` in order (then repeats the last); records every prompt and stop list."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.stops: list[list[str]] = []

    def __call__(self, prompt: str, stop: Sequence[str]) -> str:
        self.prompts.append(prompt)
        self.stops.append(list(stop))
        return self.outputs[min(len(self.prompts), len(self.outputs)) - 1]


class Recorder:
    """A tool function that records its calls."""

    def __init__(self, reply: str = "ok") -> None:
        self.calls: list[str] = []
        self.reply = reply

    def __call__(self, text: str) -> str:
        self.calls.append(text)
        return self.reply


def calculator_registry() -> ToolRegistry:
    return ToolRegistry([calculator_tool()])


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("calculator[2 + 3]", ("calculator", "2 + 3")),
        ("calculator[(2 + 3) * [4]]", ("calculator", "(2 + 3) * [4]")),  # nested brackets
        ("calculator[(2+3)*4] and more", ("calculator", "(2+3)*4")),
        ("search(Eiffel Tower)", ("search", "Eiffel Tower")),
        ("search: Eiffel Tower", ("search", "Eiffel Tower")),
        ("search [Paris]", ("search", "Paris")),
        ("`search`[Paris]", ("search", "Paris")),
        ("search[Paris", ("search", "Paris")),  # an unclosed bracket is forgiven
        ("finish[42]", ("finish", "42")),
        ("finish[]", ("finish", "")),
        ("search Paris", None),
        ("search", None),
        ("", None),
        ("[Paris]", None),
    ],
)
def test_parse_action(body: str, expected: tuple[str, str] | None) -> None:
    assert parse_action(body) == expected


@pytest.mark.parametrize(
    ("completion", "thought", "action"),
    [
        (" I need 6 * 7.\nAction: calculator[6 * 7]", "I need 6 * 7.", ("calculator", "6 * 7")),
        ("Action: calculator[1+1]", "", ("calculator", "1+1")),
        (" Thought: repeated prefix\nAction: x[y]", "repeated prefix", ("x", "y")),
        (" think\nAction 2: search[Paris]", "think", ("search", "Paris")),
        (" think. Action: search[Paris]", "think.", ("search", "Paris")),  # on the same line
        (" think\naction: search[Paris]", "think", ("search", "Paris")),
        (" two lines\nof thought\nAction: a[b]", "two lines\nof thought", ("a", "b")),
        (" done\nFinal Answer: 42", "done", ("finish", "42")),
        (" done\nAction: finish[42]\nThought: more", "done", ("finish", "42")),
        (" x\nAction: a[1]\nObservation: 7\nAction: b[2]", "x", ("a", "1")),  # model ran on
        (" x\nQuestion: next?\nAction: a[1]", "x", None),  # cut at a stop string first
        (" I do not know what to do", "I do not know what to do", None),
        ("", "", None),
        (" hmm\nAction: search Paris", "hmm", None),
    ],
)
def test_parse_step(completion: str, thought: str, action: tuple[str, str] | None) -> None:
    parsed = parse_step(completion)
    assert (parsed.thought, parsed.action) == (thought, action)


# --- the loop -------------------------------------------------------------------------------


def test_tool_call_then_finish() -> None:
    model = ScriptedModel(
        " I need 12 * 24 - 150.\nAction: calculator[12 * 24 - 150]",
        " 138 are left.\nAction: finish[138]",
    )
    transcript = ReActAgent(model, calculator_registry()).run("How many cookies are left?")
    assert transcript.status == "answered" and transcript.answer == "138"
    assert transcript.steps == [
        Step("I need 12 * 24 - 150.", "calculator", "12 * 24 - 150", "138"),
        Step("138 are left.", "finish", "138", ""),
    ]
    assert len(model.prompts) == 2
    assert model.stops == [list(STOP)] * 2 == [["\nObservation:", "\nQuestion:"]] * 2
    first, second = model.prompts
    assert first.endswith("Question: How many cookies are left?\nThought:")
    # the next prompt is the previous one, the step in canonical form, and a new "Thought:"
    assert second == (
        first + " I need 12 * 24 - 150.\nAction: calculator[12 * 24 - 150]\nObservation: 138\n"
        "Thought:"
    )
    assert transcript.prompt == second[: -len("Thought:")] + (
        "Thought: 138 are left.\nAction: finish[138]\n"
    )


def test_prompt_lists_the_tools_format_and_examples() -> None:
    model = ScriptedModel("Action: finish[x]")
    tools = calculator_registry()
    tools.register(Tool("search", "searches the documents", {"query": str}, str))
    agent = ReActAgent(model, tools, examples=[CALCULATOR_EXAMPLE, SEARCH_EXAMPLE])
    agent.run("What?")
    prompt = model.prompts[0]
    assert tools.describe() in prompt
    assert "calculator[expression: str]: evaluates arithmetic" in prompt
    assert "search[query: str]: searches the documents" in prompt
    assert "finish[answer: str]" in prompt
    assert "Action: tool_name[input]" in prompt
    # examples come after the instructions and before the question, separated by blank lines
    assert prompt.index(CALCULATOR_EXAMPLE.strip()) < prompt.index(SEARCH_EXAMPLE.strip())
    assert prompt.endswith(SEARCH_EXAMPLE.strip() + "\n\nQuestion: What?\nThought:")
    custom = ScriptedModel("Action: finish[x]")
    ReActAgent(custom, tools, instruction="Be brief.").run("Q")
    assert custom.prompts[0].startswith("Be brief.\n\nTools:\ncalculator[")


def test_examples_follow_the_agent_format() -> None:
    """The few-shot examples parse as the agent reads the model: each step, then finish."""
    for example, answer in ((CALCULATOR_EXAMPLE, "138"), (SEARCH_EXAMPLE, "the Seine")):
        assert example.startswith("Question: ")
        turns = example.split("\nThought:")[1:]
        parsed = [parse_step(turn) for turn in turns]
        assert all(p.action is not None for p in parsed)
        assert parsed[-1].action == ("finish", answer)
    assert calculator_tool().call("12 * 24 - 150") == "138"


def test_final_answer_is_finish_and_answers_are_unwrapped() -> None:
    transcript = ReActAgent(ScriptedModel(" easy\nFinal Answer: Paris"), ToolRegistry()).run("Q")
    assert (transcript.status, transcript.answer) == ("answered", "Paris")
    transcript = ReActAgent(ScriptedModel('Action: Finish["Paris"]'), ToolRegistry()).run("Q")
    assert transcript.answer == "Paris"


def test_step_limit() -> None:
    model = ScriptedModel(" again\nAction: calculator[1 + 1]")
    transcript = ReActAgent(model, calculator_registry(), max_steps=3).run("Q")
    assert transcript.status == "step_limit" and transcript.answer is None
    assert len(transcript.steps) == 3 == len(model.prompts)
    assert all(step.observation == "2" for step in transcript.steps)


def test_malformed_action_recovery() -> None:
    model = ScriptedModel(
        " I will just say it: 4", " oops\nAction: calculator[2 + 2]", "Action: finish[4]"
    )
    transcript = ReActAgent(model, calculator_registry()).run("2 + 2?")
    assert transcript.status == "answered" and transcript.answer == "4"
    invalid = transcript.steps[0]
    assert (invalid.action, invalid.action_input) == ("", "")
    assert invalid.thought == "I will just say it: 4"
    assert invalid.observation == (
        "Invalid action: expected 'Action: tool[input]' with one of: calculator, finish."
    )
    # the model sees its mistake and the correction it should make
    assert model.prompts[1].endswith(
        "Thought: I will just say it: 4\nObservation: Invalid action: expected "
        "'Action: tool[input]' with one of: calculator, finish.\nThought:"
    )
    assert transcript.steps[1].observation == "4"


def test_unknown_tool_lists_the_tools() -> None:
    model = ScriptedModel(
        "Action: calculater[2 + 2]", "Action: calculator[2 + 2]", "Action: finish[4]"
    )
    transcript = ReActAgent(model, calculator_registry()).run("Q")
    step = transcript.steps[0]
    assert (step.action, step.action_input) == ("calculater", "2 + 2")
    assert "no tool 'calculater'; did you mean 'calculator'" in step.observation
    assert step.observation.startswith("Invalid action:")
    assert "Observation: Invalid action: there is no tool 'calculater'" in model.prompts[1]
    assert transcript.answer == "4"


def test_tool_errors_become_observations() -> None:
    model = ScriptedModel(
        "Action: calculator[__import__('os').system('ls')]",
        "Action: calculator[1 / 0]",
        "Action: finish[none]",
    )
    transcript = ReActAgent(model, calculator_registry(), max_invalid=1).run("Q")
    first, second, _ = transcript.steps
    assert first.observation.startswith("Error: tool 'calculator' refused")
    assert "function calls are not allowed" in first.observation
    assert "division by zero" in second.observation
    assert transcript.status == "answered"  # a refused input is not an invalid action

    def broken(text: str) -> str:
        raise ValueError("cannot")

    tools = ToolRegistry([Tool("broken", "fails", {"text": str}, broken)])
    model = ScriptedModel("Action: broken[x]", "Action: finish[y]")
    transcript = ReActAgent(model, tools).run("Q")
    assert (
        transcript.steps[0].observation == "Error: tool 'broken' failed on 'x': ValueError: cannot"
    )


def test_max_invalid_in_a_row() -> None:
    model = ScriptedModel("nonsense")
    transcript = ReActAgent(model, calculator_registry(), max_invalid=3, max_steps=10).run("Q")
    assert transcript.status == "invalid" and transcript.answer is None
    assert len(transcript.steps) == 3
    # a valid action resets the count
    model = ScriptedModel("x", "y", "Action: calculator[1]", "z", "w", "v")
    transcript = ReActAgent(model, calculator_registry(), max_invalid=3, max_steps=10).run("Q")
    assert transcript.status == "invalid" and len(transcript.steps) == 6
    # finish without an answer is invalid, and the run goes on
    model = ScriptedModel("Action: finish[]", "Action: finish[5]")
    transcript = ReActAgent(model, calculator_registry()).run("Q")
    assert transcript.steps[0].observation.startswith("Invalid action: finish needs the answer")
    assert transcript.answer == "5"


def test_observations_are_truncated() -> None:
    tools = ToolRegistry([Tool("long", "a long text", {"text": str}, lambda text: "word " * 100)])
    model = ScriptedModel("Action: long[x]", "Action: finish[y]")
    transcript = ReActAgent(model, tools, max_observation_chars=20).run("Q")
    observation = transcript.steps[0].observation
    assert len(observation) <= 20 and observation.endswith("...")
    assert f"Observation: {observation}\n" in model.prompts[1]


def test_transcript_render_and_to_dict() -> None:
    model = ScriptedModel(" compute\nAction: calculator[6 * 7]", " done\nAction: finish[42]")
    transcript = ReActAgent(model, calculator_registry()).run("  What is 6 times 7? ")
    assert transcript.render() == (
        "Question: What is 6 times 7?\n"
        "Thought: compute\n"
        "Action: calculator[6 * 7]\n"
        "Observation: 42\n"
        "Thought: done\n"
        "Action: finish[42]\n"
        "Answer: 42"
    )
    data = json.loads(json.dumps(transcript.to_dict()))
    assert data["status"] == "answered" and data["answer"] == "42"
    assert data["steps"][0] == {
        "thought": "compute",
        "action": "calculator",
        "action_input": "6 * 7",
        "observation": "42",
    }
    stopped = ReActAgent(ScriptedModel("?"), calculator_registry(), max_invalid=1).run("Q")
    assert stopped.render().endswith("No answer (stopped: invalid)")


def test_the_agent_does_not_call_tools_after_finish() -> None:
    calls = Recorder()
    tools = ToolRegistry([Tool("note", "records", {"text": str}, calls)])
    model = ScriptedModel("Action: note[a]", "Action: finish[b]", "Action: note[c]")
    ReActAgent(model, tools).run("Q")
    assert calls.calls == ["a"] and len(model.prompts) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"max_invalid": -1}, "max_invalid"),
        ({"max_observation_chars": 0}, "max_observation_chars"),
        ({"examples": CALCULATOR_EXAMPLE}, r"examples=\[CALCULATOR_EXAMPLE\]"),
        ({"tools": [calculator_tool()]}, "tools must be a ToolRegistry"),
        ({"complete": "model"}, "complete must be a function"),
    ],
)
def test_agent_arguments_are_checked(kwargs: dict, message: str) -> None:
    arguments = {"complete": ScriptedModel("x"), "tools": calculator_registry(), **kwargs}
    with pytest.raises(ConfigError, match=message):
        ReActAgent(**arguments)


def test_run_errors() -> None:
    agent = ReActAgent(ScriptedModel("x"), calculator_registry())
    with pytest.raises(ConfigError, match="question is empty"):
        agent.run("  ")
    agent = ReActAgent(lambda prompt, stop: None, calculator_registry())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="must return the continuation as a string"):
        agent.run("Q")


# --- scoring --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ("42", "42", True),
        ("42.0", "42", True),
        ("1,000", "1000", True),
        ("$1,000.50", "1000.5", True),
        ("0.30000000000000004", "0.3", True),
        ("42.001", "42", False),
        ("The answer is 42.", "42", True),  # the last number of a sentence
        ("18 or 20", "20", True),
        ("forty-two", "42", False),
        ("-3", "-3", True),
        ("3", "-3", False),
        ("The Seine", "seine", True),
        ("the Seine river", "Seine", False),
        ("Paris!", "paris", True),
        (None, "42", False),
        (None, "x", False),
    ],
)
def test_answer_matches(predicted: str | None, gold: str, expected: bool) -> None:
    assert answer_matches(predicted, gold) is expected
