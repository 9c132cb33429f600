"""PPO: GAE, whitening, the clipped losses, the KL controllers and the per-token rewards against
hand computations; the value head leaves the policy's logits exactly as they were; PPO through
the training engine raises a toy reward; bad configurations and data are refused."""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from groundwork.align.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PolicyWithValue,
    PPOObjective,
    gae,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from groundwork.align.rollout import PromptData, mean_reward
from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.models.llama import Llama
from groundwork.train.engine import train
from helpers import tiny_gpt, tiny_llama, tiny_train

# ---------------------------------------------------------------------------------------------
# GAE and whitening


def test_gae_matches_a_hand_computation_with_a_prompt_and_padding() -> None:
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.1, -0.2, 1.0, 5.0], [9.0, 0.5, 2.0, 7.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 2.0], [3.0, 1.0, 0.5, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])  # padding; prompt + pad
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # row 0, backwards: delta_2 = 1.0 + 0 - 0.3 (the step after the last token is terminal)
    a2 = 0.7
    a1 = (-0.2 + 0.9 * 0.3 - 0.4) + 0.72 * a2
    a0 = (0.1 + 0.9 * 0.4 - 0.5) + 0.72 * a1
    # row 1: positions 0 and 3 are no actions; their rewards and values are ignored
    b2 = 2.0 - 0.5
    b1 = (0.5 + 0.9 * 0.5 - 1.0) + 0.72 * b2
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0], [0.0, b1, b2, 0.0]]))
    torch.testing.assert_close(
        ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0], [0.0, b1 + 1.0, b2 + 0.5, 0.0]])
    )


def test_gae_with_lambda_one_is_the_monte_carlo_return_minus_the_value() -> None:
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1.0] * 5, [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = (rewards * mask).flip(-1).cumsum(-1).flip(-1)  # sum of this and later rewards
    torch.testing.assert_close(adv, (to_go - values) * mask)
    torch.testing.assert_close(ret, to_go * mask)


def test_whiten_gives_zero_mean_unit_variance_on_the_mask() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    # shift_mean=False: the mean (3) stays, the deviations are divided by the std (2)
    y = torch.tensor([[1.0, 3.0, 5.0, 7.0]])
    torch.testing.assert_close(
        whiten(y, mask, shift_mean=False), torch.tensor([[2.0, 3.0, 4.0, 0.0]])
    )


# ---------------------------------------------------------------------------------------------
# the clipped losses


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "clipped"),
    [
        (1.1, 2.0, -2.2, False),  # inside the clip range
        (1.5, 1.0, -1.2, True),  # too far up with A > 0: clipped, no gradient
        (1.5, -1.0, 1.5, False),  # up with A < 0: the unclipped (worse) term
        (0.5, -1.0, 0.8, True),  # too far down with A < 0: clipped
        (0.5, 1.0, -0.5, False),  # down with A > 0: the unclipped term
    ],
)
def test_clipped_surrogate(ratio: float, advantage: float, loss: float, clipped: bool) -> None:
    old = torch.tensor([[-1.0, -2.0]])
    logps = (old + torch.log(torch.tensor(ratio))).requires_grad_()
    mask = torch.tensor([[1.0, 0.0]])  # the second token is padding
    out = ppo_policy_loss(logps, old, torch.tensor([[advantage, 50.0]]), mask, clip_range=0.2)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.clipfrac.item() == float(clipped)
    assert out.approx_kl.item() == pytest.approx(0.5 * torch.log(torch.tensor(ratio)).item() ** 2)
    out.loss.backward()
    assert logps.grad is not None
    want = 0.0 if clipped else -advantage * ratio  # d(-A r)/d log p = -A r
    assert logps.grad[0, 0].item() == pytest.approx(want, rel=1e-5)
    assert logps.grad[0, 1].item() == 0.0


def test_clipped_value_loss_takes_the_larger_error_and_halves_it() -> None:
    values = torch.tensor([[1.0, 0.1, -1.0, 3.0]])
    old = torch.zeros(1, 4)
    returns = torch.tensor([[2.0, 0.5, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = ppo_value_loss(values, old, returns, mask, clip_range_value=0.2)
    # (1 - 2)^2 = 1 vs clip -> 0.2: 3.24; inside: 0.16; (-1 - 2)^2 = 9 vs -0.2: 4.84
    assert out.loss.item() == pytest.approx(0.5 * (3.24 + 0.16 + 9.0) / 3)
    assert out.clipfrac.item() == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# KL controllers and rewards


def test_adaptive_kl_controller_follows_ziegler_et_al() -> None:
    kl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    kl.update(9.0, n_steps=10)  # error 0.5, clipped to 0.2
    assert kl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    kl.update(5.4, n_steps=10)  # error -0.1
    assert kl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 10 / 100))
    kl.update(0.0, n_steps=50)  # error -1, clipped to -0.2
    assert kl.value == pytest.approx(0.1 * 1.02 * 0.99 * 0.9)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, n_steps=10)
    assert fixed.value == 0.05
    with pytest.raises(ConfigError):
        AdaptiveKLController(0.0, target=6.0, horizon=100)


def test_per_token_rewards_put_the_score_on_the_last_completion_token() -> None:
    logps = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -0.5, 0.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    rewards = per_token_rewards(torch.tensor([3.0, -1.0]), logps, ref, mask, kl_coef=0.1)
    # KL_t = log p - log p_ref: 0.5 and -1.0 on row 0
    want = torch.tensor([[0.0, -0.05, 0.1 + 3.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, want)


# ---------------------------------------------------------------------------------------------
# the value head


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt])
def test_policy_with_value_keeps_the_policys_logits_exactly(make: Callable[[], nn.Module]) -> None:
    policy = make()
    model = PolicyWithValue(policy).eval()
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    logits, values = model(ids)
    with torch.no_grad():
        assert torch.equal(logits, policy(ids))
    assert values.shape == (2, 9) and values.abs().sum() == 0  # zero-initialised head
    torch.nn.init.normal_(model.value_head.weight)
    _, values = model(ids)
    assert values.abs().sum() > 0
    with pytest.raises(ConfigError, match="lm_head"):
        PolicyWithValue(torch.nn.Linear(3, 3))


# ---------------------------------------------------------------------------------------------
# PPO through the engine

TARGET = 3


def target_fraction(
    prompts: list[list[int]], completions: list[list[int]], texts: list[str] | None
) -> list[float]:
    """The toy reward: the fraction of completion tokens that are TARGET."""
    return [sum(t == TARGET for t in c) / len(c) for c in completions]


def toy_prompts(n: int = 32, vocab: int = 16) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 6, (n,), generator=g).tolist()
    return [torch.randint(4, vocab, (k,), generator=g).tolist() for k in lengths]


def ppo_setup(**kwargs: Any) -> tuple[Llama, PPOObjective]:
    policy = tiny_llama(vocab_size=16)
    generation = GenerationConfig(max_new_tokens=8, temperature=1.0)
    objective = PPOObjective(copy.deepcopy(policy), target_fraction, generation, pad_id=0, **kwargs)
    return policy, objective


def test_ppo_raises_the_score_through_the_engine(tmp_path: Path) -> None:
    policy, objective = ppo_setup(ppo_epochs=4, num_minibatches=1, seed=0)
    prompts = toy_prompts()
    data = PromptData(prompts, 16, repeats=objective.steps_per_rollout, val_prompts=prompts[:8])
    measure = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=123)
    before = mean_reward(policy, prompts, target_fraction, measure, pad_id=0)
    config = tiny_train(max_steps=32, eval_every=32, lr=1e-3, min_lr=0.0, log_every=1)
    train(PolicyWithValue(policy), data, objective, config, tmp_path)
    after = mean_reward(policy, prompts, target_fraction, measure, pad_id=0)
    assert before < 0.1 and after > 0.2, (before, after)  # measured: 0.062 -> 0.254
    assert objective.buffer.rollouts == 8  # 32 steps, 4 minibatches per rollout
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    steps = [r for r in logs if "score" in r]
    for key in ("kl", "kl_coef", "policy_loss", "value_loss", "clipfrac", "approx_kl"):
        assert key in steps[0]
    assert steps[0]["approx_kl"] < 1e-8 and steps[0]["clipfrac"] == 0  # ratio 1 at first
    assert steps[-1]["kl"] > 0.1  # the policy has moved away from the reference
    evals = [r for r in logs if "val_loss" in r]
    assert evals and evals[-1]["val_loss"] <= 0  # minus the mean score


def test_ppo_objective_refuses_bad_configurations() -> None:
    policy = tiny_llama()
    ref = copy.deepcopy(policy)
    gen = GenerationConfig(max_new_tokens=4)
    with pytest.raises(ConfigError, match="temperature"):
        PPOObjective(ref, target_fraction, GenerationConfig(temperature=0.0), pad_id=0)
    with pytest.raises(ConfigError, match="clip_range"):
        PPOObjective(ref, target_fraction, gen, pad_id=0, clip_range=0.0)
    with pytest.raises(ConfigError, match="lam"):
        PPOObjective(ref, target_fraction, gen, pad_id=0, lam=1.5)
    with pytest.raises(ConfigError, match="ppo_epochs"):
        PPOObjective(ref, target_fraction, gen, pad_id=0, ppo_epochs=0)
    with pytest.raises(ConfigError, match="kl_coef"):
        PPOObjective(ref, target_fraction, gen, pad_id=0, kl_coef=-0.1)


def test_ppo_objective_refuses_bad_models_batches_and_data() -> None:
    policy, objective = ppo_setup(num_minibatches=3)
    model = PolicyWithValue(policy).train()
    with pytest.raises(ConfigError, match="PolicyWithValue"):
        objective(policy, [[4, 5]])
    with pytest.raises(ConfigError, match="batches of prompts"):
        objective(model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="num_minibatches=3 must divide the rollout's 4"):
        objective(model, [[4, 5], [6], [7, 8], [9]])
    _, objective = ppo_setup(ppo_epochs=2)
    objective(model, [[4, 5], [6]])  # the first rollout: may be cut short
    objective(model, [[7], [8]])  # the second rollout
    with pytest.raises(ConfigError, match="repeats=2"):
        objective(model, [[9], [10]])  # new prompts before its two minibatches are used
    _, objective = ppo_setup()
    with pytest.raises(ConfigError, match="prompt 0 has 125 tokens"):
        objective(model, [[4] * 125, [5]])


def test_ppo_evaluation_is_minus_the_mean_score_and_leaves_the_rollout_alone() -> None:
    policy, objective = ppo_setup(seed=4)
    prompts = toy_prompts(6)
    seeded = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=4)
    with torch.no_grad():
        out = objective(PolicyWithValue(policy), prompts)
    assert out.items == 6
    want = mean_reward(policy, prompts, target_fraction, seeded, pad_id=0)
    assert want > 0 and out.loss.item() == pytest.approx(-want)
    assert objective.buffer.rollouts == 0


def test_a_reference_that_shares_the_policys_weights_is_refused() -> None:
    policy = tiny_llama(vocab_size=16)
    gen = GenerationConfig(max_new_tokens=4)
    objective = PPOObjective(policy, target_fraction, gen, pad_id=0)
    with pytest.raises(ConfigError, match="shares weights"):
        objective(PolicyWithValue(policy), [[4, 5]])
