"""Reward models: Bradley-Terry by hand, the reward read at the last real token (equal to
transformers' LlamaForSequenceClassification), loss and metrics equal to trl's RewardTrainer, a
tiny model trained to separate pairs it has not seen, and tokenizers compared."""

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from groundwork import tokenize
from groundwork.align.preference import PreferenceData, PreferenceExample, collate_preferences
from groundwork.align.reward import (
    RewardModel,
    RewardObjective,
    bradley_terry_loss,
    check_same_tokenizer,
    pairwise_accuracy,
    tokenizer_fingerprint,
)
from groundwork.errors import ConfigError
from groundwork.train.engine import train
from helpers import tiny_llama, tiny_train
from helpers import toy_preference_pairs as _pairs


def test_bradley_terry_by_hand() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    expected = [math.log1p(math.exp(-d)) for d in (1.0, 0.0, -2.0)]  # -log sigmoid(d)
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(sum(expected) / 3)
    margin = torch.tensor([0.5, 0.0, 1.0])
    with_margin = [math.log1p(math.exp(-d)) for d in (0.5, 0.0, -3.0)]
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(
        sum(with_margin) / 3
    )
    with pytest.raises(ConfigError, match="differ in shape"):
        bradley_terry_loss(chosen, rejected[:2])


def test_the_reward_is_read_at_the_last_real_token() -> None:
    model = RewardModel(tiny_llama())
    batch = collate_preferences(_pairs(4, seed=0))
    rewards = model(batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"])
    assert rewards.shape == (4,)
    for i in range(4):
        n = int(batch["chosen_attention_mask"][i].sum())
        alone = model(batch["chosen_input_ids"][i : i + 1, :n])  # no padding at all
        torch.testing.assert_close(alone, rewards[i : i + 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="all padding"):
        model(batch["chosen_input_ids"], attention_mask=torch.zeros_like(batch["chosen_input_ids"]))


def _hf_reward_model(model: RewardModel, pad_id: int) -> Any:
    """transformers' LlamaForSequenceClassification (one label) with ``model``'s weights."""
    transformers = pytest.importorskip("transformers")
    from groundwork.interop.hf import to_hf

    causal = to_hf(model.backbone)
    config = causal.config
    config.num_labels, config.pad_token_id = 1, pad_id
    hf = transformers.LlamaForSequenceClassification(config)
    hf.model.load_state_dict(causal.model.state_dict())
    with torch.no_grad():
        hf.score.weight.copy_(model.score.weight)
    return hf.eval()


@pytest.mark.parity
def test_matches_transformers_sequence_classifier() -> None:
    model = RewardModel(tiny_llama())
    hf = _hf_reward_model(model, pad_id=0)  # pad id 0 never occurs in these pairs' tokens
    batch = collate_preferences(_pairs(5, seed=1), pad_id=0)
    ids, mask = batch["rejected_input_ids"], batch["rejected_attention_mask"]
    theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    torch.testing.assert_close(model(ids, attention_mask=mask), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
def test_matches_trl_reward_trainer(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model = RewardModel(tiny_llama())
    with torch.no_grad():  # rewards spread enough that some pairs are ordered each way
        model.score.weight.normal_(std=1.0)
    pairs = _pairs(6, seed=2)
    margins = [0.0, 0.5, 1.0, 0.0, 0.25, 2.0]
    rows = {
        "chosen_ids": [p.chosen.input_ids for p in pairs],
        "rejected_ids": [p.rejected.input_ids for p in pairs],
        "margin": margins,
    }
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<eos>": 1}, "<pad>"))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>"
    )
    args = RewardConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=6,
        center_rewards_coefficient=0.01,
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=_hf_reward_model(model, pad_id=0),
        args=args,
        train_dataset=Dataset.from_dict(rows),
        processing_class=tokenizer,
    )
    trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    loss = trainer.compute_loss(trainer.model, batch)
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    ours_batch = collate_preferences(pairs)
    ours_batch["margin"] = torch.tensor(margins)
    out = RewardObjective(center_rewards_coefficient=0.01)(model.train(), ours_batch)
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-5)
    assert float(out.metrics["accuracy"]) == pytest.approx(theirs["accuracy"])
    assert float(out.metrics["margin"]) == pytest.approx(theirs["margin"], rel=1e-5, abs=1e-5)
    assert 0 < theirs["accuracy"] < 1  # both orders occur: the comparison can fail


def test_a_reward_model_learns_to_rank_pairs_it_has_not_seen(tmp_path: Path) -> None:
    model = RewardModel(tiny_llama())
    data = PreferenceData(_pairs(32, seed=3), batch_size=8, val_pairs=_pairs(32, seed=4))
    config = tiny_train(max_steps=25, lr=3e-3, warmup_steps=2, eval_every=25, log_every=5)
    result = train(model, data, RewardObjective(), config, tmp_path / "run")
    assert result.stopped == "finished"
    assert pairwise_accuracy(model, data) >= 0.9  # chance is 0.5
    assert pairwise_accuracy(model, data.val_pairs, batch_size=5) == pairwise_accuracy(model, data)
    assert model.training  # its mode is restored
    with pytest.raises(ConfigError, match="no held-out pairs"):
        pairwise_accuracy(model, PreferenceData(_pairs(2, seed=5), batch_size=2))


def test_objective_metrics_by_hand() -> None:
    class Fixed(torch.nn.Module):
        """Rewards = the last real token's id / 10."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            last = attention_mask.sum(-1) - 1  # (B,)
            return self.w * ids[torch.arange(len(ids)), last].float() / 10

    pairs = [
        PreferenceExample.from_ids([1], [30], [20]),
        PreferenceExample.from_ids([1], [5], [25]),
    ]
    out = RewardObjective()(Fixed(), collate_preferences(pairs))
    assert out.items == 2 and out.tokens == 8
    assert float(out.metrics["accuracy"]) == 0.5
    assert float(out.metrics["margin"]) == pytest.approx((1.0 - 2.0) / 2)
    assert out.loss.item() == pytest.approx(
        (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2
    )
    with pytest.raises(ConfigError, match="center_rewards_coefficient must be in"):
        RewardObjective(center_rewards_coefficient=-1.0)


# ---------------------------------------------------------------------------------------------
# the reward model must read the policy's tokens


@pytest.fixture(scope="module")
def bpe() -> tokenize.Tokenizer:
    texts = ["the reward model must read the policy's tokens, café 東京 3.14"]
    return tokenize.train_tokenizer("bpe", texts, 300, special_tokens=["<eos>"])


def test_same_tokenizer_passes(bpe: tokenize.Tokenizer, tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    check_same_tokenizer(bpe, bpe)
    # the same tokenizer.json read by tokenizers and transformers: the same tokenizer
    raw = tokenizers.Tokenizer.from_file(str(bpe.save(tmp_path / "tokenizer.json")))
    check_same_tokenizer(bpe, raw)
    check_same_tokenizer(bpe, transformers.PreTrainedTokenizerFast(tokenizer_object=raw))
    assert tokenizer_fingerprint(bpe) == tokenizer_fingerprint(raw)


def test_different_tokenizers_are_refused(bpe: tokenize.Tokenizer) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    other = tokenize.train_tokenizer("bpe", ["something else entirely"], 280)
    sizes = f"has {bpe.vocab_size} tokens and the reward model's {other.vocab_size}"
    with pytest.raises(ConfigError, match=sizes):
        check_same_tokenizer(bpe, other)
    assert tokenizer_fingerprint(bpe) != tokenizer_fingerprint(other)

    def word_level(vocab: dict[str, int], split: Any) -> Any:
        tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="?"))
        tok.pre_tokenizer = split
        return tok

    vocab = {"?": 0, "Hello,": 1, "Hello": 2, ",": 3}
    swapped = {"?": 0, "Hello,": 2, "Hello": 1, ",": 3}
    ws = tokenizers.pre_tokenizers.WhitespaceSplit()
    with pytest.raises(
        ConfigError, match="token 'Hello,' has id 1 for the policy and 2 for the reward"
    ):
        check_same_tokenizer(word_level(vocab, ws), word_level(swapped, ws))
    # one vocabulary, other pre-tokenization: "Hello," is one token or two
    punct = tokenizers.pre_tokenizers.Whitespace()
    with pytest.raises(ConfigError, match="one vocabulary but encode 'Hello, world"):
        check_same_tokenizer(word_level(vocab, ws), word_level(vocab, punct))
    with pytest.raises(ConfigError, match="cannot read the vocabulary of a list"):
        check_same_tokenizer([], bpe)
