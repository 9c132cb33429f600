"""DPO: log 2 at initialisation, hand-computed sigmoid / IPO / conservative losses, the KL
estimate, reference log-probabilities computed once equal to those computed on the fly, parity
with trl 1.16's DPOTrainer on a tiny Llama, and a margin that grows through the engine."""

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from groundwork.align.dpo import (
    DPOObjective,
    dpo_loss,
    precompute_reference_logps,
)
from groundwork.align.preference import PreferenceData, PreferenceExample, collate_preferences
from groundwork.errors import ConfigError
from groundwork.train import read_metrics
from groundwork.train.engine import train
from helpers import tiny_llama, tiny_train
from helpers import toy_preference_pairs as _pairs

LOG2 = math.log(2)


@pytest.mark.parametrize("seed", range(5))
def test_loss_is_log_2_when_the_policy_is_the_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = -20 * torch.rand(7, generator=g), -20 * torch.rand(7, generator=g)
    losses, rc, rr = dpo_loss(chosen, rejected, chosen, rejected, beta=0.3)
    torch.testing.assert_close(losses, torch.full((7,), LOG2), rtol=0, atol=1e-7)
    assert torch.equal(rc, torch.zeros(7)) and torch.equal(rr, torch.zeros(7))
    # IPO at initialisation: (0 - 1/(2 beta))^2
    lengths = torch.randint(1, 9, (7,), generator=g)
    ipo, _, _ = dpo_loss(
        chosen, rejected, chosen, rejected, beta=0.1, loss_type="ipo",
        chosen_lengths=lengths, rejected_lengths=lengths,
    )  # fmt: skip
    torch.testing.assert_close(ipo, torch.full((7,), 25.0))


def test_objective_at_initialisation_on_a_model() -> None:
    policy = tiny_llama()
    objective = DPOObjective(beta=0.1, reference_model=copy.deepcopy(policy))
    out = objective(policy.train(), collate_preferences(_pairs(6, seed=0)))
    assert out.loss.item() == pytest.approx(LOG2, abs=1e-6)
    assert out.items == 6
    for name in ("rewards_chosen", "rewards_rejected", "reward_margin"):
        assert float(out.metrics[name]) == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_losses() -> None:
    # policy log-ratios: chosen +1, rejected -1; beta 0.5 -> beta * h = 1
    args = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    losses, rc, rr = dpo_loss(*args, beta=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1)))  # -log sigmoid(1)
    assert (rc.item(), rr.item()) == (0.5, -0.5)
    smoothed, _, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.exp(1))
    assert smoothed.item() == pytest.approx(expected)
    # IPO: per-token log-ratios 1/2 and -1/4, h' = 0.75; (0.75 - 1/(2 * 0.25))^2
    ipo, _, _ = dpo_loss(
        *args, beta=0.25, loss_type="ipo",
        chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([4]),
    )  # fmt: skip
    assert ipo.item() == pytest.approx(1.5625)
    # the gradient pushes the chosen log-probability up and the rejected one down
    policy = torch.tensor([-1.0, -3.0], requires_grad=True)
    loss, _, _ = dpo_loss(policy[:1], policy[1:], torch.tensor([-2.0]), torch.tensor([-2.0]))
    loss.sum().backward()
    assert policy.grad is not None and policy.grad[0] < 0 < policy.grad[1]


def test_bad_settings_and_inputs() -> None:
    x = torch.zeros(3)
    with pytest.raises(ConfigError, match="beta must be a positive number"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ConfigError, match="unknown DPO loss_type 'ipo2': did you mean 'ipo'"):
        dpo_loss(x, x, x, x, loss_type="ipo2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"label_smoothing must be in \[0.0, 0.5\)"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ConfigError, match="IPO has none"):
        DPOObjective(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="pass chosen_lengths and rejected_lengths"):
        dpo_loss(x, x, x, x, loss_type="ipo")
    with pytest.raises(ConfigError, match=r"must all be \(batch,\)"):
        dpo_loss(x, x, x, torch.zeros(4))
    policy = tiny_llama()
    batch = collate_preferences(_pairs(2, seed=1))
    with pytest.raises(ConfigError, match="precompute them"):
        DPOObjective()(policy, batch)
    with pytest.raises(ConfigError, match="the reference model is the policy"):
        DPOObjective(reference_model=policy)(policy, batch)


def test_precomputed_reference_equals_the_reference_on_the_fly() -> None:
    policy, reference = tiny_llama(), tiny_llama(d_model=32)  # another model as reference
    reference.train()
    pairs = _pairs(5, seed=2)
    data = PreferenceData(pairs, batch_size=5, val_pairs=_pairs(3, seed=3), pad_id=1)
    done = precompute_reference_logps(reference, data, batch_size=2)
    assert reference.training  # its mode is restored
    assert isinstance(done, PreferenceData) and done.pad_id == 1 and len(done.val_pairs) == 3
    assert all(p.ref_chosen_logp is None for p in data.pairs)  # the input is unchanged
    batch = collate_preferences(done.pairs)
    assert batch["ref_chosen_logps"].shape == (5,)
    stored = DPOObjective(beta=0.2)(policy, batch)
    on_the_fly = DPOObjective(beta=0.2, reference_model=reference)(
        policy, collate_preferences(pairs)
    )
    assert not any(p.requires_grad for p in reference.parameters())  # frozen
    torch.testing.assert_close(stored.loss, on_the_fly.loss, rtol=1e-5, atol=1e-6)
    for name in ("rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected"):
        torch.testing.assert_close(stored.metrics[name], on_the_fly.metrics[name])
    assert abs(float(stored.metrics["reward_margin"])) > 1e-3  # two different models


def test_margin_grows_through_the_engine(tmp_path: Path) -> None:
    policy = tiny_llama()
    data = PreferenceData(_pairs(16, seed=4), batch_size=4, val_pairs=_pairs(4, seed=5))
    data = precompute_reference_logps(copy.deepcopy(policy), data)
    config = tiny_train(max_steps=12, lr=3e-3, warmup_steps=1, log_every=1, eval_every=12)
    train(policy, data, DPOObjective(beta=0.5), config, tmp_path / "run")
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward_margin" in r]
    first, last = rows[0], rows[-1]
    assert first["loss"] == pytest.approx(LOG2, abs=1e-4)  # the policy starts as the reference
    assert abs(first["reward_margin"]) < 1e-4
    assert last["reward_margin"] > 0.5 and last["reward_accuracy"] == 1.0
    assert last["loss"] < 0.5 * LOG2
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_loss" in r]
    assert evals[-1]["val_loss"] < LOG2  # the preference generalises to held-out prompts


# ---------------------------------------------------------------------------------------------
# parity with trl

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "fast", "good", "bad"]
WORDS += ["yes", "no", "why", "what", "is", "it", "very"]
ROWS = {
    "prompt": ["the cat", "what is a dog", "why is it"],
    "chosen": [" sat on a mat", " good", " very fast"],
    "rejected": [" ran", " bad dog ran far", " no"],
}


@pytest.fixture(scope="module")
def hf_tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", *WORDS])}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>"
    )


@pytest.mark.parity
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_matches_trl_dpo_trainer(hf_tokenizer: Any, loss_type: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from groundwork.interop.hf import to_hf

    policy, reference = tiny_llama(), tiny_llama()
    torch.manual_seed(5)
    with torch.no_grad():  # a reference near the policy, so rewards are not zero
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        beta=0.5,
        loss_type=[loss_type],
        max_length=None,
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=to_hf(policy),
        ref_model=to_hf(reference),
        args=args,
        train_dataset=Dataset.from_dict(ROWS),
        processing_class=hf_tokenizer,
    )
    rows = [trainer.train_dataset[i] for i in range(3)]
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    # ours on the very token ids trl made (prompt, answers + EOS)
    pairs = [
        PreferenceExample.from_ids(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"])
        for r in rows
    ]
    pairs = precompute_reference_logps(reference, pairs, batch_size=2)
    out = DPOObjective(beta=0.5, loss_type=loss_type)(  # type: ignore[arg-type]
        policy.train(), collate_preferences(pairs, pad_id=hf_tokenizer.pad_token_id)
    )
    close = {"rel": 1e-5, "abs": 1e-5}
    assert out.loss.item() == pytest.approx(loss.item(), **close)
    assert float(out.metrics["rewards_chosen"]) == pytest.approx(theirs["rewards/chosen"], **close)
    assert float(out.metrics["rewards_rejected"]) == pytest.approx(
        theirs["rewards/rejected"], **close
    )
    assert float(out.metrics["reward_margin"]) == pytest.approx(theirs["rewards/margins"], **close)
    assert float(out.metrics["reward_accuracy"]) == theirs["rewards/accuracies"]
    assert abs(theirs["rewards/margins"]) > 1e-3  # the comparison is not of zeros
