"""SFT batches: packed rows attend only within each conversation (logits equal to running them
one by one, and to ``transformers`` reading the same packed batch), padded and packed batches
give the same loss, and the loss only counts assistant tokens."""

import itertools

import pytest
import torch

from groundwork.align import IGNORE_INDEX, SFTExample
from groundwork.align.packing import SFTData, SFTObjective, pack_examples, pad_examples
from groundwork.errors import ConfigError
from groundwork.train.engine import train
from helpers import tiny_gpt, tiny_llama, tiny_train


def _examples(lengths: list[int], seed: int = 0) -> list[SFTExample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, 97, (n,), generator=g).tolist()
        prompt = n // 2
        out.append(SFTExample(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def test_pack_lays_examples_end_to_end_with_restarting_positions() -> None:
    examples = _examples([5, 3, 4])
    batch = pack_examples(examples, seq_len=8, pad_id=0)
    # First fit by decreasing length: [5, 3] then [4 + 4 padding].
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert batch["input_ids"][0].tolist() == examples[0].input_ids + examples[1].input_ids
    # Each example's labels, but no label on an example's first token, none on padding.
    expected = [IGNORE_INDEX, *examples[0].labels[1:], IGNORE_INDEX, *examples[1].labels[1:]]
    assert batch["labels"][0].tolist() == expected
    assert batch["labels"][1, 4:].tolist() == [IGNORE_INDEX] * 4


def test_pad_masks_and_ignores_the_padding() -> None:
    examples = _examples([5, 3])
    batch = pad_examples(examples, pad_id=0)
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert batch["labels"][1].tolist() == examples[1].labels + [IGNORE_INDEX] * 2


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt])
def test_packed_rows_equal_the_examples_run_one_by_one(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    examples = _examples([7, 5, 6, 3])
    batch = pack_examples(examples, seq_len=16, pad_id=0)
    logits = model(batch["input_ids"], position_ids=batch["position_ids"])
    for row in range(batch["input_ids"].shape[0]):
        positions = batch["position_ids"][row].tolist()
        starts = [t for t, p in enumerate(positions) if p == 0] + [len(positions)]
        for a, b in itertools.pairwise(starts):
            alone = model(batch["input_ids"][row : row + 1, a:b])
            torch.testing.assert_close(logits[row : row + 1, a:b], alone, rtol=1e-5, atol=1e-5)


def test_packed_and_padded_batches_give_the_same_loss() -> None:
    model = tiny_llama()
    examples = _examples([7, 5, 6, 3])
    packed = SFTObjective()(model, pack_examples(examples, 16, 0))
    padded = SFTObjective()(model, pad_examples(examples, 0))
    assert packed.items == padded.items == sum(e.trained_tokens for e in examples)
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-5, atol=1e-5)


def test_the_loss_counts_only_assistant_tokens() -> None:
    model = tiny_llama()
    ex = _examples([8])[0]
    loss = SFTObjective()(model, pad_examples([ex], 0)).loss
    logits = model(torch.tensor([ex.input_ids]))[0]
    logp = torch.log_softmax(logits, -1)
    wanted = [-logp[t - 1, ex.input_ids[t]] for t in range(1, 8) if ex.labels[t] != IGNORE_INDEX]
    torch.testing.assert_close(loss, torch.stack(wanted).mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parity
def test_transformers_reads_a_packed_batch_alike() -> None:
    pytest.importorskip("transformers")
    from groundwork.interop.hf import to_hf

    model = tiny_llama()
    batch = pack_examples(_examples([7, 5, 6, 3]), seq_len=16, pad_id=0)
    ours = model(batch["input_ids"], position_ids=batch["position_ids"])
    hf = to_hf(model, attn_implementation="sdpa").eval()
    with torch.no_grad():
        theirs = hf(batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["pad", "pack"])
def test_sft_training_lowers_the_loss(layout: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = tiny_llama().train()
    examples = _examples([10, 12, 9, 11] * 2)
    data = SFTData(examples, examples[:4], batch_size=4, pad_id=0, layout=layout, seq_len=24)
    config = tiny_train(max_steps=12, eval_every=12, lr=3e-3, warmup_steps=0)
    result = train(model, data, SFTObjective(), config, tmp_path / "run")
    losses = [e["val_loss"] for e in result.evals]
    first = SFTObjective()(tiny_llama(), next(iter(data.val_batches()))).loss.item()
    assert losses[-1] < first - 0.5


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than the packed rows"):
        pack_examples(_examples([9]), seq_len=8, pad_id=0)
    with pytest.raises(ConfigError, match="layout"):
        SFTData(_examples([3]), [], 1, 0, layout="zip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fewer than one batch"):
        SFTData(_examples([3]), [], 2, 0)
    no_answer = SFTExample([1, 2, 3], [IGNORE_INDEX] * 3)
    with pytest.raises(ConfigError, match="without any assistant token"):
        SFTObjective()(tiny_llama(), pad_examples([no_answer], 0))
