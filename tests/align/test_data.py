"""Alignment data from the real question sets: held-out questions never trained on, preference
pairs of a right and a wrong answer, verifiable problems with a numeric answer."""

import pytest

from groundwork.align import data
from groundwork.errors import ConfigError, UnknownNameError


@pytest.mark.parametrize("source", list(data.SOURCES))
def test_train_and_test_questions_are_disjoint(source: str) -> None:
    train = {q.question for q in data.load_qa(source, "train")}
    test = {q.question for q in data.load_qa(source, "test")}
    assert train and test and not train & test
    share = len(test) / (len(train) + len(test))
    assert abs(share - data.TEST_FRACTION) < 0.05


def test_preference_pairs_choose_the_right_answer_over_a_wrong_one() -> None:
    items = data.load_qa("siqa,boolq", "test", limit=30)
    pairs = data.preference_pairs(items, system="Be brief.")
    assert len(pairs) == len(items) == 60
    for qa, (prompt, chosen, rejected) in zip(items, pairs, strict=True):
        assert prompt == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": qa.question},
        ]
        assert chosen == qa.answer and rejected in qa.wrong and rejected != chosen
    assert data.preference_pairs(data.load_qa("asdiv", "test", 5)) == []  # no wrong answers


def test_conversations_end_with_the_right_answer() -> None:
    qa = data.load_qa("commonsenseqa", "train", 1)[0]
    (chat,) = data.conversations([qa])
    assert chat[-1] == {"role": "assistant", "content": qa.answer}


def test_problems_have_numeric_targets() -> None:
    problems = data.problems("test")
    assert len(problems) > 400
    assert all(p.target and p.target[0] in "-0123456789" for p in problems)
    everything = data.load_qa("asdiv", "test")
    assert len(problems) < len(everything)  # a few answer with a name ("Mrs. Hilt")


def test_bad_names_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="piqa"):
        data.load_qa("piqaa")
    with pytest.raises(ConfigError, match="split"):
        data.load_qa("piqa", "dev")  # type: ignore[arg-type]
