"""Rollouts: KL estimators against their formulas (and the true KL), the right-padded layout
against unpadded forward passes, the scored log-probabilities against the sampling distribution,
the prompt data's repeats, epochs and resume, the minibatch plan, and bad input refused."""

import copy
import math
from typing import cast

import pytest
import torch

from groundwork.align.logprobs import token_logprobs
from groundwork.align.rollout import (
    KLKind,
    PromptData,
    RewardFn,
    RolloutBuffer,
    check_rollout_config,
    completion_labels,
    compute_rewards,
    kl_estimate,
    make_rollout,
    mean_reward,
    pack,
    sample_completions,
)
from groundwork.errors import ConfigError, TrainingError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import generate
from helpers import tiny_llama

PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]


def count_token(token: int) -> RewardFn:
    def reward(
        prompts: list[list[int]], completions: list[list[int]], texts: list[str] | None
    ) -> list[float]:
        return [float(sum(t == token for t in c)) for c in completions]

    return reward


# ---------------------------------------------------------------------------------------------
# KL estimators


def test_kl_estimators_match_their_formulas() -> None:
    logps = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    r = torch.exp(ref - logps)  # p_ref / p_policy
    torch.testing.assert_close(kl_estimate(logps, ref, "k1"), -torch.log(r))
    torch.testing.assert_close(kl_estimate(logps, ref, "k2"), 0.5 * torch.log(r) ** 2)
    torch.testing.assert_close(kl_estimate(logps, ref, "k3"), (r - 1) - torch.log(r))
    assert kl_estimate(logps, ref, "k1")[0].item() == pytest.approx(0.5)  # log p - log p_ref
    assert kl_estimate(logps, ref, "k3")[2].item() == 0.0  # equal log-probs: no divergence


def test_k3_and_k2_are_non_negative_and_k1_k3_are_unbiased() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(6, generator=g), -1)  # the policy
    p = torch.softmax(torch.randn(6, generator=g), -1)  # the reference
    true_kl = float((q * (q / p).log()).sum())
    x = torch.multinomial(q, 200_000, replacement=True, generator=g)  # samples of the policy
    logps, ref = q.log()[x], p.log()[x]
    non_negative: tuple[KLKind, ...] = ("k2", "k3")
    for kind in non_negative:
        assert bool((kl_estimate(logps, ref, kind) >= 0).all())
    unbiased: tuple[KLKind, ...] = ("k1", "k3")
    for kind in unbiased:
        assert kl_estimate(logps, ref, kind).mean().item() == pytest.approx(true_kl, rel=0.03)
    with pytest.raises(ConfigError, match="k1"):
        kl_estimate(logps, ref, cast(KLKind, "k4"))


# ---------------------------------------------------------------------------------------------
# layout and scoring


def test_pack_puts_completion_mask_on_the_positions_that_predict_completion_tokens() -> None:
    ids, attn, cmask = pack([[5, 6], [7]], [[8, 9], [1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 8, 9], [7, 1, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert cmask.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    labels = completion_labels(ids, cmask)
    assert labels.tolist() == [[-100, -100, 8, 9], [-100, 1, -100, -100]]


def test_rollout_logprobs_equal_unpadded_forward_passes_and_the_reference_copy() -> None:
    policy = tiny_llama()
    config = GenerationConfig(max_new_tokens=6, temperature=1.0, seed=3)
    ro = make_rollout(
        policy, PROMPTS, count_token(4), config, pad_id=0, reference=copy.deepcopy(policy)
    )
    N, T = ro.input_ids.shape
    assert ro.old_logps.shape == ro.completion_mask.shape == (N, T - 1)
    assert ro.ref_logps is not None
    torch.testing.assert_close(ro.ref_logps, ro.old_logps)  # the reference is the policy
    assert ro.completion_lengths.tolist() == [len(c) for c in ro.completions]
    for i, (prompt, completion) in enumerate(zip(PROMPTS, ro.completions, strict=True)):
        row = torch.tensor([prompt + completion])
        assert ro.input_ids[i, : row.shape[1]].tolist() == row[0].tolist()
        with torch.no_grad():
            logp = torch.log_softmax(policy(row)[0, :-1].float(), -1)  # (L - 1, V)
        want = logp[torch.arange(len(prompt) - 1, row.shape[1] - 1), completion]
        got = ro.old_logps[i][ro.completion_mask[i].bool()]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert ro.old_logps[i][~ro.completion_mask[i].bool()].abs().sum() == 0
    assert ro.scores.tolist() == [float(sum(t == 4 for t in c)) for c in ro.completions]


def test_scored_logprobs_are_those_of_the_temperature_scaled_sampling_distribution() -> None:
    policy = tiny_llama()
    config = GenerationConfig(max_new_tokens=5, temperature=0.7, seed=11)
    ro = make_rollout(policy, PROMPTS, count_token(4), config, pad_id=0)
    out = generate(policy, PROMPTS, config, pad_id=0, return_logits=True)
    assert out.sequences == ro.completions  # the same seed draws the same tokens
    assert out.logits is not None
    for i, completion in enumerate(ro.completions):
        sampled = torch.log_softmax(out.logits[i, : len(completion)] / 0.7, -1)  # (L, V)
        want = sampled[torch.arange(len(completion)), completion]
        got = ro.old_logps[i][ro.completion_mask[i].bool()]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_stop_ids_end_completions_and_texts_leave_them_out() -> None:
    policy = tiny_llama()
    config = GenerationConfig(max_new_tokens=12, temperature=1.5, seed=0)
    eos = list(range(80, 97))  # many stop ids: some rows end early
    ro = make_rollout(policy, PROMPTS, count_token(4), config, pad_id=0, eos_ids=eos, decode=str)
    assert ro.texts is not None
    for c, text, finished in zip(ro.completions, ro.texts, ro.finished.tolist(), strict=True):
        assert finished == (c[-1] in eos)
        assert text == str(c[:-1] if finished else c)
    assert ro.finished.any()


def test_samples_follow_the_seed() -> None:
    policy = tiny_llama()
    a, b, c = (
        sample_completions(policy, PROMPTS, GenerationConfig(max_new_tokens=6, seed=s), pad_id=0)
        for s in (1, 1, 2)
    )
    assert a == b and a != c


def test_mean_reward_is_the_mean_score_of_the_samples() -> None:
    policy = tiny_llama()
    config = GenerationConfig(max_new_tokens=6, seed=5)
    reward = count_token(4)
    completions = sample_completions(policy, PROMPTS, config, pad_id=0)
    want = sum(reward(PROMPTS, completions, None)) / len(PROMPTS)
    assert mean_reward(policy, PROMPTS, reward, config, pad_id=0) == pytest.approx(want)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(temperature=0.0),
        GenerationConfig(top_k=5),
        GenerationConfig(top_p=0.9),
        GenerationConfig(repetition_penalty=1.2),
    ],
)
def test_sampling_that_is_not_the_policy_is_refused(config: GenerationConfig) -> None:
    with pytest.raises(ConfigError):
        check_rollout_config(config)


def test_prompts_that_leave_no_room_for_the_completion_are_refused() -> None:
    policy = tiny_llama()  # max_seq_len 128
    config = GenerationConfig(max_new_tokens=8)
    with pytest.raises(ConfigError, match=r"prompt 1 has 125 tokens.*context of 128"):
        sample_completions(policy, [[1, 2], [3] * 125], config, pad_id=0)
    with pytest.raises(ConfigError, match="empty"):
        sample_completions(policy, [[]], config, pad_id=0)


def test_reward_functions_must_give_one_finite_score_per_completion() -> None:
    with pytest.raises(ConfigError, match="2 scores for 3"):
        compute_rewards(lambda p, c, t: [1.0, 2.0], [[1]] * 3, [[2]] * 3, None)
    with pytest.raises(TrainingError, match="non-finite"):
        compute_rewards(lambda p, c, t: [1.0, math.nan], [[1]] * 2, [[2]] * 2, None)
    scores = compute_rewards(lambda p, c, t: torch.tensor([1, 0]), [[1]] * 2, [[2]] * 2, None)
    assert scores.dtype == torch.float32 and scores.tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# prompt data and the minibatch plan


def test_prompt_data_serves_each_batch_repeats_times_and_covers_an_epoch() -> None:
    prompts = [[i, i + 1] for i in range(10)]
    data = PromptData(prompts, 3, repeats=2, val_prompts=prompts[:5], val_batch_size=2)
    g = torch.Generator().manual_seed(0)
    assert data.steps_per_epoch == 6  # 3 full batches (the 10th prompt waits), twice each
    calls = [data.next_batch(g) for _ in range(6)]
    assert calls[0] == calls[1] and calls[2] == calls[3] and calls[4] == calls[5]
    seen = [tuple(p) for batch in calls[::2] for p in batch]
    assert len(set(seen)) == 9 and set(seen) <= {tuple(p) for p in prompts}
    assert calls[0] != calls[2]
    assert [len(b) for b in data.val_batches()] == [2, 2, 1]
    assert list(data.val_batches()) == list(data.val_batches())


def test_prompt_data_resumes_where_it_was() -> None:
    prompts = [[i] for i in range(1, 8)]
    g = torch.Generator().manual_seed(1)
    data = PromptData(prompts, 2, repeats=3)
    for _ in range(4):
        data.next_batch(g)
    state, g_state = data.state_dict(), g.get_state()
    ahead = [data.next_batch(g) for _ in range(12)]
    resumed, g2 = PromptData(prompts, 2, repeats=3), torch.Generator()
    g2.set_state(g_state)
    resumed.load_state_dict(state, g2)
    assert [resumed.next_batch(g2) for _ in range(12)] == ahead


def test_prompt_data_refuses_what_cannot_be_served() -> None:
    with pytest.raises(ConfigError, match="cannot fill one batch"):
        PromptData([[1], [2]], 3)
    with pytest.raises(ConfigError, match="empty prompt"):
        PromptData([[1], []], 1)
    with pytest.raises(ConfigError, match="repeats"):
        PromptData([[1]], 1, repeats=0)


def test_rollout_buffer_plans_shuffled_epochs_of_equal_minibatches() -> None:
    buffer = RolloutBuffer(epochs=2, num_minibatches=3, seed=0)
    assert buffer.steps == 6 and buffer.needs_rollout([[1]])
    buffer.fill([[1]], 12)
    parts = [buffer.next() for _ in range(6)]
    assert all(p.numel() == 4 for p in parts)
    for epoch in (parts[:3], parts[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(12))
    assert torch.cat(parts[:3]).tolist() != torch.cat(parts[3:]).tolist()
    assert buffer.needs_rollout([[1]])  # used up
    again = RolloutBuffer(epochs=2, num_minibatches=3, seed=0)
    again.fill([[1]], 12)
    assert [again.next().tolist() for _ in range(6)] == [p.tolist() for p in parts]


def test_rollout_buffer_refuses_uneven_minibatches_and_early_new_prompts() -> None:
    buffer = RolloutBuffer(epochs=1, num_minibatches=3, seed=0)
    with pytest.raises(ConfigError, match="num_minibatches=3 must divide the rollout's 8"):
        buffer.fill([[1]], 8)
    buffer.fill([[1]], 6)
    buffer.next()
    assert not buffer.needs_rollout([[1]])  # the same prompts continue the rollout
    assert buffer.needs_rollout([[2]])  # the first rollout may be cut short (a resume)
    buffer.fill([[2]], 6)
    buffer.next()
    with pytest.raises(ConfigError, match=r"after 1 of the rollout's 3 .*repeats=3"):
        buffer.needs_rollout([[3]])


def test_token_logprobs_of_the_labels_only_count_completion_tokens() -> None:
    ids, _, cmask = pack([[5, 6]], [[8, 9]], pad_id=0)
    logits = torch.randn(1, 4, 12)
    logps, mask = token_logprobs(logits, completion_labels(ids, cmask))
    torch.testing.assert_close(mask, cmask)
    assert logps[0, 0] == 0 and logps[0, 1] != 0
