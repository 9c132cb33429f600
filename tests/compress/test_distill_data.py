"""Sequence-level distillation's data (chapter 18): the teacher's greedy continuations equal a
hand-written argmax loop (prompts of different lengths batched), stop at an end id, beam search
keeps the best hypothesis, and the sequences become token shards the engine reads."""

from pathlib import Path

import pytest
import torch

from groundwork.compress.distill_data import sample_prompts, teacher_sequences, write_sequences
from groundwork.corpus import TokenShards, read_meta
from groundwork.errors import ConfigError, DataError
from groundwork.generate import GenerationConfig, beam_search
from groundwork.models.llama import Llama, LlamaConfig

PROMPTS = [[5, 9, 2], [7], [1, 2, 3, 4, 5, 6], [40, 41]]


def teacher() -> Llama:
    torch.manual_seed(0)
    config = LlamaConfig.from_name("tiny", vocab_size=97, n_heads=4, n_kv_heads=2)
    return Llama(config).eval()


@torch.no_grad()
def greedy_by_hand(model: Llama, prompt: list[int], n: int) -> list[int]:
    """Argmax of the last position, appended, n times (no cache, no batching)."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


def test_greedy_continuations_equal_an_argmax_loop() -> None:
    model = teacher()
    got = teacher_sequences(model, PROMPTS, 6, batch_size=3)  # batches of 3 and 1, left-padded
    assert got == [greedy_by_hand(model, p, 6) for p in PROMPTS]
    new_only = teacher_sequences(model, PROMPTS, 6, include_prompt=False)
    assert new_only == [s[len(p) :] for s, p in zip(got, PROMPTS, strict=True)]


def test_a_continuation_stops_after_an_end_id() -> None:
    model = teacher()
    full = greedy_by_hand(model, PROMPTS[0], 6)
    end = full[len(PROMPTS[0]) + 2]  # the third new token
    first = full.index(end, len(PROMPTS[0]))
    (got,) = teacher_sequences(model, PROMPTS[:1], 6, eos_ids=[end])
    assert got == full[: first + 1]


def test_beam_search_keeps_the_best_hypothesis() -> None:
    model = teacher()
    got = teacher_sequences(model, PROMPTS[:2], 5, num_beams=3)
    config = GenerationConfig(max_new_tokens=5, num_beams=3)
    for prompt, seq in zip(PROMPTS[:2], got, strict=True):
        best, _ = beam_search(model, prompt, config)[0]
        assert seq == [*prompt, *best]


def test_the_teacher_keeps_its_mode_and_weights() -> None:
    model = teacher().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_sequences(model, PROMPTS, 3)
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_sequences_become_token_shards(tmp_path: Path) -> None:
    seqs = [[5, 6, 7], [8, 0], [9]]  # 0 is the end of text: not doubled
    meta = write_sequences(seqs, tmp_path, vocab_size=97, eot_id=0, n_bytes=12)
    assert meta["splits"]["train"] == {"tokens": 8, "documents": 3, "bytes": 12}
    shards = TokenShards(tmp_path, "train")
    assert shards.tokens.tolist() == [5, 6, 7, 0, 8, 0, 9, 0]
    assert shards.bytes == 12 and read_meta(tmp_path)["dtype"] == "uint16"
    write_sequences([[1, 2]], tmp_path, vocab_size=97, eot_id=0, split="val")
    assert set(read_meta(tmp_path)["splits"]) == {"train", "val"}  # the other split is kept
    x, y = shards.random_batch(2, 3, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3) and bool((x[:, 1:] == y[:, :-1]).all())


def test_sample_prompts_are_windows_of_the_stream(tmp_path: Path) -> None:
    write_sequences([list(range(1, 60))], tmp_path, vocab_size=97, eot_id=None)
    shards = TokenShards(tmp_path, "train")
    prompts = sample_prompts(shards, 5, 4, seed=3)
    assert prompts == sample_prompts(shards, 5, 4, seed=3)  # reproducible
    assert len(prompts) == 5
    for p in prompts:
        assert len(p) == 4 and p == list(range(p[0], p[0] + 4))


def test_bad_input() -> None:
    model = teacher()
    with pytest.raises(ConfigError, match="at least one prompt"):
        teacher_sequences(model, [], 4)
    with pytest.raises(ConfigError, match="batch_size"):
        teacher_sequences(model, PROMPTS, 4, batch_size=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        teacher_sequences(model, PROMPTS, 0)
    with pytest.raises(ConfigError, match="empty"):
        teacher_sequences(model, [[]], 4)


def test_bad_sequences_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="outside the vocabulary"):
        write_sequences([[1, 97]], tmp_path, vocab_size=97, eot_id=0)
    with pytest.raises(DataError, match="no tokens"):
        write_sequences([[], []], tmp_path, vocab_size=97, eot_id=None)
