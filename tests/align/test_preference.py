"""Preference pairs: labels on the final answer only, the prompt shared, truncation as trl's
keep_start; batches padded alike with their masks; epochs that visit every pair once and resume
where they stopped; bad pairs refused."""

import pytest
import torch

from groundwork import tokenize
from groundwork.align import IGNORE_INDEX, PLAIN_TEMPLATE
from groundwork.align.preference import (
    PreferenceData,
    PreferenceExample,
    collate_preferences,
    stack_pairs,
    tokenize_preference,
)
from groundwork.errors import ConfigError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPT = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
]


@pytest.fixture(scope="module")
def tokenizer() -> tokenize.Tokenizer:
    texts = ["What is the capital of France? Paris. And of Italy? Rome, the city. Milan, no."]
    specials = ["<|im_start|>", "<|im_end|>", "<eos>"]
    return tokenize.train_tokenizer("bpe", texts, 320, special_tokens=specials)


def _labelled_text(tokenizer: tokenize.Tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label >= 0])


@pytest.mark.parametrize(
    ("template", "chosen", "rejected"),
    [
        (CHATML, "Rome, the city.<|im_end|>\n", "Milan, no.<|im_end|>\n"),
        (PLAIN_TEMPLATE, " Rome, the city.<eos>\n", " Milan, no.<eos>\n"),
    ],
)
def test_labels_are_the_final_answer_and_the_prompt_is_shared(
    tokenizer: tokenize.Tokenizer, template: str, chosen: str, rejected: str
) -> None:
    pair = tokenize_preference(
        tokenizer, template, PROMPT, "Rome, the city.", "Milan, no.", eos_token="<eos>"
    )
    c, r, p = pair.chosen, pair.rejected, pair.prompt_length
    # the earlier assistant turn ("Paris") is context: only the final answer is labelled
    assert _labelled_text(tokenizer, c.input_ids, c.labels) == chosen
    assert _labelled_text(tokenizer, r.input_ids, r.labels) == rejected
    assert c.input_ids[:p] == r.input_ids[:p]
    assert all(label == IGNORE_INDEX for label in c.labels[:p] + r.labels[:p])
    assert c.labels[p:] == c.input_ids[p:] and r.labels[p:] == r.input_ids[p:]
    assert "Paris" in tokenizer.decode(c.input_ids[:p])
    assert pair.ref_chosen_logp is None and pair.ref_rejected_logp is None


def test_max_tokens_keeps_the_start(tokenizer: tokenize.Tokenizer) -> None:
    full = tokenize_preference(tokenizer, CHATML, PROMPT, "Rome, the city.", "Milan, no.")
    n = full.prompt_length + 2
    cut = tokenize_preference(
        tokenizer, CHATML, PROMPT, "Rome, the city.", "Milan, no.", max_tokens=n
    )
    assert cut.chosen.input_ids == full.chosen.input_ids[:n]
    assert cut.rejected.labels == full.rejected.labels[:n]


def test_bad_pairs(tokenizer: tokenize.Tokenizer) -> None:
    def make(prompt: list[dict[str, str]], chosen: str, rejected: str, **kw: int) -> object:
        return tokenize_preference(tokenizer, CHATML, prompt, chosen, rejected, **kw)

    with pytest.raises(ConfigError, match="same text"):
        make(PROMPT, "Rome", "Rome")
    with pytest.raises(ConfigError, match="ends in an assistant turn"):
        make(PROMPT[:2], "Rome", "Milan")
    with pytest.raises(ConfigError, match="the rejected answer is empty"):
        make(PROMPT, "Rome", "  ")
    with pytest.raises(ConfigError, match="prompt is empty"):
        make([], "Rome", "Milan")
    prompt_len = make(PROMPT, "Rome", "Milan").prompt_length  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="leaves no room for the answers"):
        make(PROMPT, "Rome", "Milan", max_tokens=prompt_len)
    with pytest.raises(ConfigError, match="same in their first 1 tokens"):
        make(PROMPT, "Rome, the city.", "Rome, no.", max_tokens=prompt_len + 1)
    with pytest.raises(ConfigError, match="max_tokens must be a positive integer"):
        make(PROMPT, "Rome", "Milan", max_tokens=0)


def test_pairs_from_ids_and_their_checks() -> None:
    pair = PreferenceExample.from_ids([1, 2], [3, 4], [5])
    assert pair.prompt_length == 2
    assert pair.chosen.labels == [IGNORE_INDEX, IGNORE_INDEX, 3, 4]
    with pytest.raises(ConfigError, match="same tokens"):
        PreferenceExample.from_ids([1, 2], [3], [3])
    with pytest.raises(ConfigError, match="an answer is empty"):
        PreferenceExample.from_ids([1, 2], [], [3])
    a, b = (
        PreferenceExample.from_ids([1, 2], [3], [4]),
        PreferenceExample.from_ids([1, 9], [3], [4]),
    )
    with pytest.raises(ConfigError, match="different prompt tokens"):
        PreferenceExample(a.chosen, b.rejected)
    longer = PreferenceExample.from_ids([1, 2, 3], [3], [4])
    with pytest.raises(ConfigError, match="start at different positions"):
        PreferenceExample(a.chosen, longer.rejected)


def test_collate_pads_both_sides_to_one_length() -> None:
    pairs = [
        PreferenceExample.from_ids([1, 2], [3, 4, 5], [6]),
        PreferenceExample.from_ids([7], [8], [9, 10]),
    ]
    batch = collate_preferences(pairs, pad_id=0)
    assert set(batch) == {
        f"{side}_{key}"
        for side in ("chosen", "rejected")
        for key in ("input_ids", "attention_mask", "labels")
    }
    assert batch["chosen_input_ids"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 0, 0, 0]]
    assert batch["rejected_input_ids"].tolist() == [[1, 2, 6, 0, 0], [7, 9, 10, 0, 0]]
    assert batch["rejected_attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert batch["chosen_labels"].tolist() == [[-100, -100, 3, 4, 5], [-100, 8, -100, -100, -100]]
    with_ref = [PreferenceExample(p.chosen, p.rejected, -1.5, -2.5) for p in pairs]
    batch = collate_preferences(with_ref)
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -1.5]
    assert batch["ref_rejected_logps"].tolist() == [-2.5, -2.5]
    with pytest.raises(ConfigError, match="some pairs have reference log-probabilities"):
        collate_preferences([with_ref[0], pairs[1]])
    with pytest.raises(ConfigError, match="no preference pairs"):
        collate_preferences([])


def test_stack_pairs_puts_chosen_first_and_pads_uneven_sides() -> None:
    batch = collate_preferences([PreferenceExample.from_ids([1], [2, 3], [4])])
    batch["rejected_input_ids"] = batch["rejected_input_ids"][:, :2]  # (1, 2): uneven sides
    batch["rejected_attention_mask"] = batch["rejected_attention_mask"][:, :2]
    batch["rejected_labels"] = batch["rejected_labels"][:, :2]
    stacked = stack_pairs(batch)
    assert stacked["input_ids"].tolist() == [[1, 2, 3], [1, 4, 0]]
    assert stacked["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert stacked["labels"].tolist() == [[-100, 2, 3], [-100, 4, -100]]


def _pairs(n: int, start: int = 0) -> list[PreferenceExample]:
    return [
        PreferenceExample.from_ids([i % 7 + 1] * (1 + i % 3), [50 + i], [90 - i])
        for i in range(start, start + n)
    ]


def test_epochs_visit_every_pair_once_and_resume_where_they_stopped() -> None:
    pairs = _pairs(10)
    gen = torch.Generator().manual_seed(0)
    data = PreferenceData(pairs, batch_size=3)
    answers = []
    for _ in range(data.steps_per_epoch):
        labels = data.next_batch(gen)["chosen_labels"]
        answers += labels[labels != IGNORE_INDEX].tolist()
    assert sorted(answers) == [50 + i for i in range(10)]
    # resume mid-epoch: the same batches as an uninterrupted read
    gen = torch.Generator().manual_seed(1)
    data.next_batch(gen)
    data.next_batch(gen)  # a new epoch starts with this generator state
    state = data.state_dict()
    expected = [data.next_batch(gen)["chosen_input_ids"] for _ in range(5)]
    resumed = PreferenceData(pairs, batch_size=3)
    gen2 = torch.Generator().manual_seed(123)
    resumed.load_state_dict(state, gen2)
    got = [resumed.next_batch(gen2)["chosen_input_ids"] for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_validation_batches_are_fixed() -> None:
    data = PreferenceData(_pairs(6), batch_size=2, val_pairs=_pairs(5, start=30), val_batch_size=2)
    first = [b["rejected_input_ids"] for b in data.val_batches()]
    again = [b["rejected_input_ids"] for b in data.val_batches()]
    assert [len(b) for b in first] == [2, 2, 1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert data.val_description == "5 held-out pairs"
    assert len(data.pairs) == 6 and len(data.val_pairs) == 5


def test_bad_data() -> None:
    with pytest.raises(ConfigError, match="no training sequences"):
        PreferenceData([], batch_size=2)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        PreferenceData(_pairs(2), batch_size=0)
    with pytest.raises(ConfigError, match="holds PreferenceExample pairs, got tuple"):
        PreferenceData([([1], [2], [3])], batch_size=1)  # type: ignore[list-item]
