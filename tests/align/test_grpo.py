"""GRPO: group advantages and the three loss normalisations against hand computations, the
number-matching reward, GRPO through the training engine raising a verifiable reward, and bad
configurations refused."""

import copy
import json
import math
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from groundwork.align.grpo import (
    GRPOObjective,
    LossType,
    group_advantages,
    grpo_loss,
    number_match_reward,
    number_reward,
)
from groundwork.align.rollout import PromptData, RewardFn, kl_estimate, mean_reward
from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.models.llama import Llama
from groundwork.train.engine import train
from helpers import tiny_llama, tiny_train


def test_group_advantages_standardise_within_each_group() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=4)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased
    half = 0.5 / (std + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([half, -half, -half, half, 0, 0, 0, 0]))
    assert torch.isfinite(adv).all()  # the equal group gives zeros, not NaN
    centred = group_advantages(rewards, group_size=4, scale=False)  # Dr. GRPO
    torch.testing.assert_close(centred, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    with pytest.raises(ConfigError, match="group_size"):
        group_advantages(rewards, group_size=1)
    with pytest.raises(ConfigError, match="divide"):
        group_advantages(rewards, group_size=3)


def _two_sequences() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -1.0, -3.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # lengths 1 and 3
    return logps, mask, torch.tensor([2.0, -1.0])


@pytest.mark.parametrize(
    ("loss_type", "want"),
    [
        ("grpo", (-2.0 + 1.0) / 2),  # each sequence's token mean, then the mean
        ("bnpo", (-2.0 + 3 * 1.0) / 4),  # the mean over the 4 tokens
        ("dr_grpo", (-2.0 + 3 * 1.0) / (2 * 5)),  # the sum over sequences * max length 5
    ],
)
def test_grpo_loss_normalisations(loss_type: str, want: float) -> None:
    logps, mask, adv = _two_sequences()
    out = grpo_loss(
        logps.clone().requires_grad_(),
        logps,  # ratio 1: the surrogate is -A per token
        None,
        adv,
        mask,
        beta=0.0,
        loss_type=cast(LossType, loss_type),
        max_completion_length=5,
    )
    assert out.loss.item() == pytest.approx(want)
    assert out.clipfrac.item() == 0.0 and out.kl.item() == 0.0


def test_grpo_loss_gradient_and_kl_term() -> None:
    logps, mask, adv = _two_sequences()
    ref = logps + torch.tensor([[0.3, 9.0, 9.0], [-0.2, 0.1, 0.0]])  # 9: masked out
    current = logps.clone().requires_grad_()
    out = grpo_loss(current, logps, ref, adv, mask, beta=0.5, loss_type="grpo")
    k3 = kl_estimate(logps, ref, "k3")
    want_kl = (k3 * mask).sum() / mask.sum()
    assert out.kl.item() == pytest.approx(want_kl.item())
    surrogate = (-2.0 + 1.0) / 2
    kl_part = (k3[0, 0] + k3[1].sum() / 3) / 2
    assert out.loss.item() == pytest.approx(surrogate + 0.5 * kl_part.item(), rel=1e-5)
    out.loss.backward()
    assert current.grad is not None
    # d/d log p of -A r / |o| / G at r = 1, plus beta * (1 - exp(ref - log p)) / |o| / G
    dk3 = 1 - torch.exp(ref - logps)
    want = torch.stack([(-adv[0] + 0.5 * dk3[0]) / 2, (-adv[1] + 0.5 * dk3[1]) / 6]) * mask
    torch.testing.assert_close(current.grad, want)


def test_grpo_loss_clips_the_ratio() -> None:
    old = torch.tensor([[-1.0]])
    logps = old + math.log(1.5)  # ratio 1.5 > 1.2
    up = grpo_loss(logps, old, None, torch.tensor([1.0]), torch.ones(1, 1), beta=0.0)
    down = grpo_loss(logps, old, None, torch.tensor([-1.0]), torch.ones(1, 1), beta=0.0)
    assert up.loss.item() == pytest.approx(-1.2) and up.clipfrac.item() == 1.0
    assert down.loss.item() == pytest.approx(1.5) and down.clipfrac.item() == 0.0
    with pytest.raises(ConfigError, match="loss_type"):
        bad = cast(LossType, "x")
        grpo_loss(logps, old, None, torch.ones(1), torch.ones(1, 1), beta=0.0, loss_type=bad)


def test_number_match_reward_reads_the_first_number_as_asdiv_does() -> None:
    assert number_match_reward(" 1,200 apples, not 3", "1200") == 1.0
    assert number_match_reward("it is 12 or 7", "7") == 0.0  # the first number counts
    assert number_match_reward("-4.5 degrees", "-4.5") == 1.0
    assert number_match_reward("no idea", "0") == 0.0
    with pytest.raises(ConfigError, match="holds no number"):
        number_match_reward("3", "three")
    reward = number_reward({(1, 2): "3", (4,): "10"})
    assert reward([[1, 2], [4], [4]], [[], [], []], ["3 cats", "10", "1 0"]) == [1.0, 1.0, 0.0]
    # the last number, as reasoning answers end
    assert number_match_reward("it is 12 or 7", "7", which="last") == 1.0
    assert number_match_reward("6 + 9 = 15 balls.", "15", which="last") == 1.0
    assert number_match_reward("15 balls, then 6", "15", which="last") == 0.0
    last = number_reward({(1,): "15"}, which="last")
    assert last([[1], [1]], [[], []], ["6 + 9 = 15", "15 or 16"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="first' or 'last"):
        number_match_reward("3", "3", which="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="decode"):
        reward([[1, 2]], [[5]], None)
    with pytest.raises(ConfigError, match="no answer"):
        reward([[9]], [[5]], ["3"])


# ---------------------------------------------------------------------------------------------
# GRPO through the engine


def digits(ids: list[int]) -> str:
    """The toy tokenizer: ids 0-9 are digits, every other id a space."""
    return "".join(str(i) if i < 10 else " " for i in ids)


def grpo_setup(
    **kwargs: Any,
) -> tuple[Llama, GRPOObjective, list[list[int]], RewardFn]:
    policy = tiny_llama(vocab_size=16)
    g = torch.Generator().manual_seed(0)
    prompts = sorted({tuple(torch.randint(10, 16, (4,), generator=g).tolist()) for _ in range(16)})
    reward = number_reward({p: "3" for p in prompts})  # the answer is always 3
    generation = GenerationConfig(max_new_tokens=4, temperature=1.0)
    objective = GRPOObjective(
        copy.deepcopy(policy), reward, generation, pad_id=0, decode=digits, **kwargs
    )
    return policy, objective, [list(p) for p in prompts], reward


def test_grpo_raises_a_verifiable_reward_through_the_engine(tmp_path: Path) -> None:
    policy, objective, prompts, reward = grpo_setup(group_size=8, beta=0.04, seed=0)
    data = PromptData(prompts, 4, repeats=objective.steps_per_rollout)
    measure = GenerationConfig(max_new_tokens=4, temperature=1.0, seed=123)
    before = mean_reward(policy, prompts * 8, reward, measure, pad_id=0, decode=digits)
    config = tiny_train(max_steps=30, eval_every=30, lr=3e-3, log_every=1)
    train(policy, data, objective, config, tmp_path)
    after = mean_reward(policy, prompts * 8, reward, measure, pad_id=0, decode=digits)
    assert before < 0.1 and after > 0.25, (before, after)  # measured: 0.047 -> 0.484
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    steps = [r for r in logs if "reward" in r]
    for key in ("reward_std", "kl", "clipfrac", "accuracy", "completion_length"):
        assert key in steps[0]
    assert steps[0]["kl"] < 1e-6  # the policy starts as the reference
    assert steps[-1]["kl"] > 0.0


def test_grpo_objective_refuses_bad_configurations() -> None:
    policy = tiny_llama()
    ref = copy.deepcopy(policy)
    gen = GenerationConfig(max_new_tokens=4)
    reward = number_reward({})
    sizes: list[Any] = [1, 0, 2.5]
    for size in sizes:
        with pytest.raises(ConfigError, match="group_size"):
            GRPOObjective(ref, reward, gen, pad_id=0, group_size=size)
    with pytest.raises(ConfigError, match="reference"):
        GRPOObjective(None, reward, gen, pad_id=0, beta=0.1)
    with pytest.raises(ConfigError, match="loss_type"):
        GRPOObjective(ref, reward, gen, pad_id=0, loss_type=cast(LossType, "dapo"))
    with pytest.raises(ConfigError, match="num_iterations"):
        GRPOObjective(ref, reward, gen, pad_id=0, num_iterations=0)
    with pytest.raises(ConfigError, match="top_p"):
        GRPOObjective(ref, reward, GenerationConfig(top_p=0.5), pad_id=0)
    assert GRPOObjective(None, reward, gen, pad_id=0, beta=0.0).reference is None


def test_grpo_objective_refuses_uneven_minibatches_and_long_prompts() -> None:
    policy, objective, prompts, _ = grpo_setup(group_size=3, num_minibatches=2)
    with pytest.raises(ConfigError, match="num_minibatches=2 must divide the rollout's 9"):
        objective(policy.train(), prompts[:3])  # 3 prompts x 3 samples
    policy, objective, prompts, _ = grpo_setup(group_size=2)
    with pytest.raises(ConfigError, match="126 tokens"):
        objective(policy.train(), [[11] * 126])
