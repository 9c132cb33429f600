r"""Chain-of-thought prompting and self-consistency for arithmetic word problems.

*Chain of thought* (Wei et al. 2022): the solved examples of a few-shot prompt show their
reasoning before the answer ("... 12 - 5 = 7. The answer is 7."), so the model writes steps
before committing to a number. *Zero-shot* chain of thought (Kojima et al. 2022) only appends
"Let's think step by step." *Self-consistency* (Wang et al. 2023) samples $n$ reasoning paths at
a temperature above zero, extracts each path's final answer and returns the most frequent one:

$$ \hat a = \arg\max_a \sum_{i=1}^{n} [\,\mathrm{answer}(r_i) = a\,], \qquad
   r_i \sim p_\theta(\cdot \mid \text{prompt}). $$

Majority voting marginalises over the reasoning paths: a wrong path rarely lands on the same
wrong number twice, right paths agree.

The answer is read with :func:`extract_answer`: the number after "The answer is" when the text
has it, else the last number in the text (a model that does not follow the format still gets its
final figure read).

Chapter 15 (Prompting, agents and retrieval).
"""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from groundwork.errors import ConfigError

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)

Style = Literal["direct", "cot", "zero-shot-cot"]


@dataclass(frozen=True)
class Exemplar:
    """A solved problem for a few-shot prompt: the question, its worked steps, its answer."""

    question: str
    reasoning: str
    answer: str


EXEMPLARS = (
    Exemplar(
        question="Tom had 14 marbles. He gave 5 to his sister and then found 3 more. "
        "How many marbles does Tom have now?",
        reasoning="Tom started with 14 marbles. After giving 5 away he had 14 - 5 = 9. "
        "Finding 3 more gives 9 + 3 = 12.",
        answer="12",
    ),
    Exemplar(
        question="A box holds 6 rows of 4 cookies. How many cookies are in 3 boxes?",
        reasoning="One box holds 6 * 4 = 24 cookies. Three boxes hold 3 * 24 = 72 cookies.",
        answer="72",
    ),
    Exemplar(
        question="Maria read 45 pages on Monday and twice as many on Tuesday. "
        "How many pages did she read in the two days?",
        reasoning="On Tuesday she read 2 * 45 = 90 pages. In total she read 45 + 90 = 135 pages.",
        answer="135",
    ),
    Exemplar(
        question="36 students are split equally into 4 teams. How many students are in each team?",
        reasoning="Each team has 36 / 4 = 9 students.",
        answer="9",
    ),
)
"""Four worked arithmetic problems written for this library (one, two and three steps, the four
operations), the solved examples of :func:`arithmetic_prompt`."""


# --8<-- [start:prompt]
def arithmetic_prompt(
    question: str, style: Style = "cot", exemplars: Sequence[Exemplar] = EXEMPLARS
) -> str:
    """A plain-text few-shot prompt for a word problem, ending where the model answers.

    ``direct`` shows each exemplar's answer only; ``cot`` its reasoning and then
    "The answer is N."; ``zero-shot-cot`` shows no exemplar and starts the answer with
    "Let's think step by step." (Kojima et al. 2022).

    >>> print(arithmetic_prompt("What is 2 + 3?", "zero-shot-cot"))
    Question: What is 2 + 3?
    Answer: Let's think step by step.
    """
    if style == "zero-shot-cot":
        return f"Question: {question}\nAnswer: Let's think step by step."
    if style not in ("direct", "cot"):
        raise ConfigError(f"style must be 'direct', 'cot' or 'zero-shot-cot', got {style!r}")
    shots = []
    for ex in exemplars:
        body = f"{ex.reasoning} The answer is {ex.answer}." if style == "cot" else ex.answer
        shots.append(f"Question: {ex.question}\nAnswer: {body}")
    return "\n\n".join([*shots, f"Question: {question}\nAnswer:"])


# --8<-- [end:prompt]

STOP = ("\nQuestion:", "\n\n")
"""Where a generated answer ends: the model starting the next problem."""


# --8<-- [start:extract]
def extract_answer(text: str) -> str | None:
    """The final numeric answer in a model's text: the number after "the answer is", else the
    last number; commas dropped, a trailing ``.0`` removed. ``None`` when there is no number.

    >>> extract_answer("6 * 4 = 24. The answer is 24."), extract_answer("so 1,500.0 in all")
    ('24', '1500')
    >>> extract_answer("no idea") is None
    True
    """
    match = ANSWER_IS.search(text)
    if match:
        raw = match.group(1)
    else:
        numbers = NUMBER.findall(text)
        if not numbers:
            return None
        raw = numbers[-1]
    return canonical_number(raw)


def canonical_number(raw: str) -> str:
    """``"1,500.0"`` -> ``"1500"``; ``"0.50"`` -> ``"0.5"``; other text is returned stripped."""
    value = raw.replace(",", "").strip().rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else f"{number:g}"


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (``None`` votes ignored); ties go to the answer seen first.

    >>> majority_vote(["7", None, "12", "7", "12"])
    '7'
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


# --8<-- [end:extract]


def is_correct(predicted: str | None, gold: str) -> bool:
    """Numeric comparison of a predicted answer with the gold one (text equality otherwise).

    >>> is_correct("12", "12.0"), is_correct(None, "3")
    (True, False)
    """
    if predicted is None:
        return False
    return canonical_number(predicted) == canonical_number(gold)
