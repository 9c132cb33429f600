"""Chain-of-thought prompts, answer extraction and self-consistency's majority vote."""

import pytest

from groundwork.errors import ConfigError
from groundwork.prompting.cot import (
    EXEMPLARS,
    arithmetic_prompt,
    canonical_number,
    extract_answer,
    is_correct,
    majority_vote,
)


def test_prompts_show_reasoning_only_in_cot() -> None:
    direct = arithmetic_prompt("What is 2 + 3?", "direct")
    cot = arithmetic_prompt("What is 2 + 3?", "cot")
    assert direct.endswith("Question: What is 2 + 3?\nAnswer:")
    assert cot.endswith("Question: What is 2 + 3?\nAnswer:")
    assert EXEMPLARS[0].reasoning not in direct and EXEMPLARS[0].reasoning in cot
    assert cot.count("The answer is") == len(EXEMPLARS)
    with pytest.raises(ConfigError, match="style must be"):
        arithmetic_prompt("x", "socratic")  # type: ignore[arg-type]


def test_exemplars_are_arithmetically_right() -> None:
    # every "a op b = c" in the worked steps holds, and the last one is the answer
    import re

    for ex in EXEMPLARS:
        steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", ex.reasoning)
        assert steps
        for a, op, b, c in steps:
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}.get(
                op, int(a) / int(b)
            )
            assert value == int(c)
        assert steps[-1][3] == ex.answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("3 + 4 = 7. The answer is 7.", "7"),
        ("The answer is: 1,250 dollars", "1250"),
        ("The answer is $12.50.", "12.5"),
        ("first 3, then 8, so 11", "11"),
        ("It is 40.0", "40"),
        ("The answer is -3", "-3"),
        ("no number here", None),
    ],
)
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_answer_is_wins_over_later_numbers() -> None:
    assert extract_answer("The answer is 5. Next question: 6 + 6 = 12") == "5"


def test_majority_vote_and_ties() -> None:
    assert majority_vote(["3", "4", "4", None]) == "4"
    assert majority_vote(["9", "8", "8", "9"]) == "9"  # a tie goes to the first seen
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_is_correct_compares_numbers() -> None:
    assert is_correct("12", "12.0") and is_correct("0.50", "0.5")
    assert not is_correct("13", "12") and not is_correct(None, "1")
    assert canonical_number("1,000") == "1000"
