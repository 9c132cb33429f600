r"""ReAct: a language model that interleaves reasoning with calls to tools.

Yao et al. (2023, "ReAct: Synergizing Reasoning and Acting in Language Models") prompt a model to
write, in turn, a *thought* (free reasoning), an *action* (a call to a tool, ``search[...]``,
``calculator[...]``) and to read an *observation* (the tool's result, written into the text by the
system, never by the model), until it acts ``finish[answer]``:

```text
Question: A baker makes 12 trays of 24 cookies and sells 150. How many are left?
Thought: I need 12 * 24 - 150.
Action: calculator[12 * 24 - 150]
Observation: 138
Thought: 138 cookies are left.
Action: finish[138]
```

The loop of :meth:`ReActAgent.run` is a few lines: the prompt so far plus ``"Thought:"`` goes to
the model with the stop strings ``"\nObservation:"`` and ``"\nQuestion:"`` (so it cannot invent
the observation), :func:`parse_step` cuts out the thought and the action, the tool runs, and
``Observation: <result>`` is appended. The model is any *completion function*
(:data:`Complete`); the agent does not know what model is behind it.

Small models rarely follow the format perfectly, so parsing is tolerant (``name[input]``,
``name(input)``, ``name: input``, ``Final Answer: x``) and nothing the model writes can crash
the loop: an unparsable action, an unknown tool or a tool refusing its input (a
:class:`~groundwork.prompting.tools.ToolError`) becomes the observation and costs a step. The run
stops at ``finish`` (status ``"answered"``), after ``max_steps`` steps (``"step_limit"``), or after
``max_invalid`` invalid actions in a row (``"invalid"``).

Chapter 15 (Prompting, agents and retrieval).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from groundwork.checks import positive_int
from groundwork.errors import ConfigError
from groundwork.evaluate.task import normalize_answer
from groundwork.prompting.calculator import CalculatorError
from groundwork.prompting.cot import canonical_number, extract_answer, is_correct
from groundwork.prompting.tools import ToolError, ToolRegistry, unwrap

Complete = Callable[[str, Sequence[str]], str]
"""A model as a function: ``complete(prompt, stop)`` returns the text the model writes after
``prompt``, already cut before the first of the ``stop`` strings."""

STOP = ("\nObservation:", "\nQuestion:")
"""Where the model's turn ends: the system writes observations, the user asks questions."""

Status = Literal["answered", "step_limit", "invalid"]

DEFAULT_INSTRUCTION = (
    "Answer the question by alternating Thought, Action and Observation steps. A Thought "
    "reasons about what to do next; an Action calls one tool; the Observation is the tool's "
    "result. When you know the answer, finish."
)

FORMAT = """Use this format:
Thought: reason about what to do next
Action: tool_name[input]
Observation: the result of the tool
... (Thought, Action and Observation repeat as needed)
Thought: I know the answer
Action: finish[the answer]"""

CALCULATOR_EXAMPLE = """Question: A baker makes 12 trays of 24 cookies and sells 150 of them. \
How many cookies are left?
Thought: The baker makes 12 * 24 cookies and sells 150, so I need 12 * 24 - 150.
Action: calculator[12 * 24 - 150]
Observation: 138
Thought: 138 cookies are left.
Action: finish[138]
"""
"""A worked example of the format with the calculator (``12 * 24 - 150 = 138``)."""

SEARCH_EXAMPLE = """Question: Which river flows through the city where the Eiffel Tower stands?
Thought: I need to find where the Eiffel Tower stands.
Action: search[Eiffel Tower]
Observation: [1] The Eiffel Tower is a wrought-iron lattice tower in Paris, France.
Thought: The Eiffel Tower is in Paris. Now I need the river that flows through Paris.
Action: search[Paris river]
Observation: [1] Paris is the capital of France. The Seine flows through the city.
Thought: The Seine flows through Paris.
Action: finish[the Seine]
"""
"""A worked example of the format with the search tool."""


@dataclass
class Step:
    """One turn of the loop: what the model wrote and what the system answered."""

    thought: str
    """The reasoning before the action (for an invalid step: all the model wrote)."""
    action: str
    """The tool's name, ``"finish"``, or ``""`` when no action could be parsed."""
    action_input: str
    """The raw input of the action (the answer, for ``finish``)."""
    observation: str
    """The tool's result or the error shown to the model; ``""`` for ``finish``."""


@dataclass
class Transcript:
    """A whole run of the agent on one question."""

    question: str
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    """The ``finish`` answer; ``None`` unless ``status == "answered"``."""
    status: Status = "step_limit"
    prompt: str = ""
    """The full final prompt (instruction, examples, question and every step)."""

    def render(self) -> str:
        """A readable trace: the question, each Thought/Action/Observation, then the answer."""
        lines = [f"Question: {self.question}"]
        for step in self.steps:
            lines.append(_render_step(step).rstrip("\n"))
        if self.answer is not None:
            lines.append(f"Answer: {self.answer}")
        else:
            lines.append(f"No answer (stopped: {self.status})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)


def _render_step(step: Step) -> str:
    """A step as it appears in the prompt."""
    text = f"Thought: {step.thought}\n"
    if step.action:
        text += f"Action: {step.action}[{step.action_input}]\n"
    if step.action != "finish" or step.observation:  # a finish without answer is answered too
        text += f"Observation: {step.observation}\n"
    return text


# --- parsing what the model wrote -------------------------------------------------------------

_ACTION = re.compile(r"\bAction(?:\s+\d+)?\s*:[ \t]*(.*)", re.IGNORECASE)
_FINAL = re.compile(r"\bFinal\s+Answer\s*:[ \t]*(.*)", re.IGNORECASE)
_THOUGHT_PREFIX = re.compile(r"^\s*Thought(?:\s+\d+)?\s*:", re.IGNORECASE)
_CALL = re.compile(r"[`'\"]?([A-Za-z_]\w*)[`'\"]?\s*(.*)", re.DOTALL)


def _bracketed(text: str, opener: str, closer: str) -> str:
    """The inside of ``text``'s leading bracket, up to its match (or the end, if unclosed)."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[1:i]
    return text[1:].rstrip(closer)


# --8<-- [start:parse_action]
def parse_action(body: str) -> tuple[str, str] | None:
    """Tool name and raw input from the text after ``Action:``, or ``None``.

    Accepts ``name[input]``, ``name(input)`` and ``name: input``.

    >>> parse_action("calculator[(2 + 3) * 4]"), parse_action("search: Paris")
    (('calculator', '(2 + 3) * 4'), ('search', 'Paris'))
    """
    match = _CALL.match(body.strip())
    if match is None:
        return None
    name, rest = match.group(1), match.group(2).strip()
    for opener, closer in ("[]", "()"):
        if rest.startswith(opener):
            return name, _bracketed(rest, opener, closer).strip()
    if rest.startswith(":"):
        return name, rest[1:].strip()
    return None


# --8<-- [end:parse_action]


@dataclass
class ParsedStep:
    """What :func:`parse_step` found in one completion."""

    thought: str
    action: tuple[str, str] | None
    """``(name, input)``; ``("finish", answer)`` for a final answer; ``None`` if unparsable."""


# --8<-- [start:parse_step]
def parse_step(completion: str) -> ParsedStep:
    """Split a completion (the text after ``"Thought:"``) into its thought and its action.

    The text is first cut at any stop string the model did not stop at; the first line that
    holds ``Action:`` (or ``Final Answer:``, read as ``finish``) is the action, what comes before
    it the thought, and anything after it is ignored.

    >>> parse_step(" 6 times 7.\\nAction: calculator[6 * 7]")
    ParsedStep(thought='6 times 7.', action=('calculator', '6 * 7'))
    """
    for stop in (*STOP, "Observation:"):
        cut = completion.find(stop)
        if cut >= 0:
            completion = completion[:cut]
    action, final = _ACTION.search(completion), _FINAL.search(completion)
    if final is not None and (action is None or final.start() < action.start()):
        return ParsedStep(_clean_thought(completion[: final.start()]), ("finish", final[1]))
    if action is None:
        return ParsedStep(_clean_thought(completion), None)
    return ParsedStep(_clean_thought(completion[: action.start()]), parse_action(action[1]))


# --8<-- [end:parse_step]


def _clean_thought(text: str) -> str:
    return _THOUGHT_PREFIX.sub("", text.strip(), count=1).strip()


# --- the agent ------------------------------------------------------------------------------


class ReActAgent:
    """A ReAct agent: a completion function, a set of tools, and the loop between them.

    Args:
        complete: the model, ``complete(prompt, stop) -> continuation``.
        tools: the tools it may call (``finish`` is always available).
        max_steps: completions per question before giving up (status ``"step_limit"``).
        max_invalid: unparsable actions or unknown tools in a row before giving up (status
            ``"invalid"``).
        examples: solved transcripts shown before the question (e.g.
            :data:`CALCULATOR_EXAMPLE`), each starting with ``"Question:"``.
        max_observation_chars: observations are cut to this length.
        instruction: replaces :data:`DEFAULT_INSTRUCTION` (the tool list and the format follow
            it either way).
        guided: when a turn holds no action, keep its first line as the thought and ask the
            model again after ``"Action:"``, written by the system (one line, stopped at the
            newline): small models that drift into endless thoughts are walked back into the
            format. Costs one more completion for such turns.

    Raises:
        ConfigError: an argument of the wrong kind or out of range.
    """

    def __init__(
        self,
        complete: Complete,
        tools: ToolRegistry,
        *,
        max_steps: int = 6,
        max_invalid: int = 3,
        examples: Sequence[str] = (),
        max_observation_chars: int = 500,
        instruction: str | None = None,
        guided: bool = False,
    ) -> None:
        if not callable(complete):
            raise ConfigError("complete must be a function complete(prompt, stop) -> str")
        if not isinstance(tools, ToolRegistry):
            raise ConfigError(f"tools must be a ToolRegistry, got {type(tools).__name__}")
        if isinstance(examples, str) or not all(isinstance(e, str) for e in examples):
            raise ConfigError(
                "examples must be a sequence of transcript strings, e.g. "
                "examples=[CALCULATOR_EXAMPLE] (not one bare string)"
            )
        self.complete = complete
        self.tools = tools
        self.max_steps = positive_int("max_steps", max_steps)
        self.max_invalid = positive_int("max_invalid", max_invalid)
        self.max_observation_chars = positive_int("max_observation_chars", max_observation_chars)
        self.examples = [e.strip() + "\n" for e in examples]
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction.strip()
        self.guided = guided

    def header(self) -> str:
        """Everything before the question: instruction, tools, format and examples."""
        tools = self.tools.describe()
        tools += ("\n" if tools else "") + "finish[answer: str]: ends the task with the answer"
        parts = [self.instruction, "Tools:\n" + tools, FORMAT, *self.examples]
        return "\n\n".join(p.strip("\n") for p in parts if p) + "\n\n"

    # --8<-- [start:run]
    def run(self, question: str) -> Transcript:
        """Answer ``question`` by thinking, calling tools and reading their results.

        Raises:
            ConfigError: ``question`` is empty, or ``complete`` did not return a string.
        """
        question = question.strip() if isinstance(question, str) else ""
        if not question:
            raise ConfigError("the question is empty; ask the agent something")
        prompt = self.header() + f"Question: {question}\n"
        transcript = Transcript(question=question)
        invalid_in_a_row = 0
        for _ in range(self.max_steps):
            completion = self.complete(prompt + "Thought:", list(STOP))
            if not isinstance(completion, str):
                raise ConfigError(
                    f"complete() must return the continuation as a string, got "
                    f"{type(completion).__name__}"
                )
            parsed = parse_step(completion)
            if parsed.action is None and self.guided:
                parsed = self._guide(prompt, parsed)
            step, valid = self._act(parsed)
            transcript.steps.append(step)
            prompt += _render_step(step)
            if valid and step.action == "finish":
                transcript.answer, transcript.status = step.action_input, "answered"
                break
            invalid_in_a_row = 0 if valid else invalid_in_a_row + 1
            if invalid_in_a_row >= self.max_invalid:
                transcript.status = "invalid"
                break
        transcript.prompt = prompt
        return transcript

    # --8<-- [end:run]

    def _guide(self, prompt: str, parsed: ParsedStep) -> ParsedStep:
        """The thought's first line, then the action the model writes after ``"Action:"``."""
        thought = parsed.thought.split("\n", 1)[0].strip()
        line = self.complete(f"{prompt}Thought: {thought}\nAction:", [*STOP, "\n"])
        if not isinstance(line, str):
            raise ConfigError(f"complete() must return a string, got {type(line).__name__}")
        return ParsedStep(thought, parse_action(line))

    # --8<-- [start:act]
    def _act(self, parsed: ParsedStep) -> tuple[Step, bool]:
        """Run the parsed action; return the step and whether the action was well-formed."""
        thought = parsed.thought
        choices = ", ".join([*self.tools.names, "finish"])
        if parsed.action is None:
            message = f"Invalid action: expected 'Action: tool[input]' with one of: {choices}."
            return Step(thought, "", "", message), False
        name, raw = parsed.action
        if name.lower() == "finish":
            answer = unwrap(raw)
            if not answer:
                message = "Invalid action: finish needs the answer, as 'Action: finish[answer]'."
                return Step(thought, "finish", raw, message), False
            return Step(thought, "finish", answer, ""), True
        try:
            tool = self.tools.get(name)
        except ToolError as err:
            return Step(thought, name, raw, self._truncate(f"Invalid action: {err}.")), False
        try:
            observation = tool.call(raw)
        except (ToolError, CalculatorError) as err:  # a refused input is an observation
            observation = f"Error: {err}"
        return Step(thought, tool.name, raw, self._truncate(observation)), True

    # --8<-- [end:act]

    def _truncate(self, text: str) -> str:
        text = text.strip()
        limit = self.max_observation_chars
        return text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."


# --8<-- [start:answer_matches]
def answer_matches(predicted: str | None, gold: str) -> bool:
    """Whether an agent's answer equals the gold answer.

    A numeric gold answer is compared with the prediction's final number, read as chain of
    thought reads it (:func:`~groundwork.prompting.cot.extract_answer`: the number after "the
    answer is", else the last one; thousands separators dropped, ``12.50`` equal to ``12.5``).
    Other answers are compared as text after
    :func:`~groundwork.evaluate.task.normalize_answer` (case, punctuation, articles).

    >>> answer_matches("1,000", "1000"), answer_matches("The Seine", "seine")
    (True, True)
    """
    if predicted is None:
        return False
    if extract_answer(gold) == canonical_number(gold):  # the gold answer is a number
        return is_correct(extract_answer(predicted), gold)
    return normalize_answer(predicted) == normalize_answer(gold)


# --8<-- [end:answer_matches]
