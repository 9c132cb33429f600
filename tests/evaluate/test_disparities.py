"""Performance disparities (``groundwork.evaluate.disparities``): the perturbations on
hand-written sentences (spelling, vocabulary, names, typos; determinism), McNemar's exact test
and the paired accuracy gap against hand-computed values."""

import math

import pytest

from groundwork.errors import ConfigError
from groundwork.evaluate.disparities import (
    US_TO_UK,
    add_typos,
    exclusive_names,
    mcnemar_exact,
    paired_accuracy_gap,
    replace_words,
    swap_names,
    to_british,
)


def test_to_british_spelling_keeps_case_and_word_boundaries() -> None:
    text = "COLOR the Center; recognized colors. Colorado and colonel stay."
    assert to_british(text) == "COLOUR the Centre; recognised colours. Colorado and colonel stay."
    assert to_british("Traveling with aluminum pajamas") == "Travelling with aluminium pyjamas"


def test_to_british_vocabulary_goes_first_and_is_optional() -> None:
    text = "Wrap it in aluminum foil and put the cookies on the stove."
    assert to_british(text) == "Wrap it in aluminium foil and put the cookies on the stove."
    assert to_british(text, vocabulary=True) == (
        "Wrap it in tin foil and put the biscuits on the cooker."
    )


def test_spelling_table_maps_lowercase_words_to_different_words() -> None:
    assert US_TO_UK["organization"] == "organisation"
    assert US_TO_UK["favorite"] == "favourite"
    assert all(k == k.lower() and k != v for k, v in US_TO_UK.items())


def test_replace_words_does_not_touch_parts_of_words_or_hyphenated_words() -> None:
    mapping = {"gray": "grey"}
    assert replace_words("grayish gray-blue gray.", mapping) == "grayish gray-blue grey."
    with pytest.raises(ConfigError, match="lowercase"):
        replace_words("x", {"Gray": "grey"})


def test_swap_names_is_simultaneous_and_whole_word() -> None:
    mapping = {"Kai": "Jamal", "Jamal": "Kai"}
    assert swap_names("Kai gave Jamal Kai's book; Kaiser stays.", mapping) == (
        "Jamal gave Kai Jamal's book; Kaiser stays."
    )
    assert swap_names("unchanged", {}) == "unchanged"


def test_exclusive_names_keeps_single_capitalised_names_only_one_group_has() -> None:
    groups = {"a": ["Ann", "Bo", "Cy", "MOHAMED", "Izzah (Izzat)"], "b": ["Bo", "Di", "Di"]}
    assert exclusive_names(groups) == {"a": ["Ann", "Cy"], "b": ["Di"]}
    with pytest.raises(ConfigError, match="no name"):
        exclusive_names({"a": ["Bo"], "b": ["Bo", "Di"]})
    with pytest.raises(ConfigError, match="two groups"):
        exclusive_names({"a": ["Bo"]})


def test_add_typos_swaps_adjacent_interior_letters_deterministically() -> None:
    text = "Carefully remove the stubborn labels from bottles."
    every = add_typos(text, rate=1.0)
    assert every != text
    for old, new in zip(text.split(), every.split(), strict=True):
        assert len(old) == len(new) and sorted(old) == sorted(new)
        assert old[0] == new[0] and old[-1] == new[-1]  # first and last letters stay
        assert sum(a != b for a, b in zip(old, new, strict=True)) in (0, 2)
    assert "the" in every.split()  # shorter than min_len
    assert add_typos(text, rate=1.0) == every  # same text, same seed: same typos
    assert add_typos(text, rate=0.0) == text


def test_add_typos_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="rate"):
        add_typos("text", rate=1.5)
    with pytest.raises(ConfigError, match="min_len"):
        add_typos("text", min_len=3)


def test_mcnemar_exact_by_hand() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0  # min(1, 2 * P[X <= 3]) with X ~ Bin(6, 1/2) > 1
    assert math.isclose(mcnemar_exact(0, 5), 2 / 32)
    assert math.isclose(mcnemar_exact(9, 1), 2 * 11 / 1024)
    with pytest.raises(ConfigError):
        mcnemar_exact(-1, 2)


def test_paired_accuracy_gap_by_hand() -> None:
    base = [1, 1, 1, 1, 0, 0, 1, 0]
    perturbed = [1, 0, 0, 1, 0, 1, 1, 0]
    g = paired_accuracy_gap(base, perturbed, n_boot=500, seed=1)
    assert (g.n, g.base_accuracy, g.perturbed_accuracy) == (8, 5 / 8, 4 / 8)
    assert g.gap == -1 / 8
    assert (g.only_base, g.only_perturbed) == (2, 1)
    assert g.p_value == 1.0  # 2 * P[X <= 1], X ~ Bin(3, 1/2) = 2 * 4 / 8
    assert g.low <= g.gap <= g.high
    assert paired_accuracy_gap(base, perturbed, n_boot=500, seed=1) == g
    assert g.as_dict()["gap"] == -1 / 8


def test_paired_accuracy_gap_of_identical_outcomes_is_exactly_zero() -> None:
    outcomes = [True, False, True]
    g = paired_accuracy_gap(outcomes, outcomes, n_boot=50)
    assert (g.gap, g.low, g.high, g.p_value) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("base", "perturbed", "kwargs", "message"),
    [
        ([1, 0], [1], {}, "perturbed"),
        ([], [], {}, "no examples"),
        ([2], [1], {}, "0/1"),
        ([1], [1], {"n_boot": 0}, "n_boot"),
        ([1], [1], {"level": 0.0}, "level"),
    ],
)
def test_paired_accuracy_gap_rejects_bad_input(
    base: list[int], perturbed: list[int], kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        paired_accuracy_gap(base, perturbed, **kwargs)
