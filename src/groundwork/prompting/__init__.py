"""Prompting (chapter 15): in-context learning, chain of thought, and ReAct agents with tools.

* :mod:`groundwork.prompting.fewshot`: which solved examples go in a prompt (random, nearest
  neighbours by MiniLM) and in what order.
* :mod:`groundwork.prompting.calibration`: contextual calibration of a few-shot classifier.
* :mod:`groundwork.prompting.cot`: chain-of-thought prompts, answer extraction, and
  self-consistency's majority vote.
* :mod:`groundwork.prompting.calculator`: a safe arithmetic evaluator over the syntax tree.
* :mod:`groundwork.prompting.tools`: tools with typed arguments, their registry, and the
  calculator, search and lookup tools.
* :mod:`groundwork.prompting.agents`: the ReAct loop of thoughts, actions and observations.
"""

from groundwork.prompting.agents import ReActAgent, Step, Transcript, answer_matches
from groundwork.prompting.calculator import CalculatorError, calculate
from groundwork.prompting.calibration import calibrate, content_free_probs, label_probs
from groundwork.prompting.cot import arithmetic_prompt, extract_answer, majority_vote
from groundwork.prompting.fewshot import nearest_shots, orderings, random_shots
from groundwork.prompting.tools import (
    Tool,
    ToolError,
    ToolRegistry,
    calculator_tool,
    lookup_tool,
    search_tool,
)

__all__ = [
    "CalculatorError",
    "ReActAgent",
    "Step",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "Transcript",
    "answer_matches",
    "arithmetic_prompt",
    "calculate",
    "calculator_tool",
    "calibrate",
    "content_free_probs",
    "extract_answer",
    "label_probs",
    "lookup_tool",
    "majority_vote",
    "nearest_shots",
    "orderings",
    "random_shots",
    "search_tool",
]
