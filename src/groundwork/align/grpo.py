r"""GRPO, group relative policy optimisation (Shao et al. 2024, "DeepSeekMath: Pushing the Limits
of Mathematical Reasoning in Open Language Models", §4.1): PPO without a value model, the
baseline of a completion being the mean reward of other completions of the same prompt.
Chapter 14.

Each prompt is completed :math:`G` times (``group_size``); completion :math:`i`'s advantage is
its reward standardised within the group, :math:`\hat A_i = (r_i - \mathrm{mean}(r)) /
(\mathrm{std}(r) + \epsilon)` (:func:`group_advantages`), the same for all of its tokens. The
loss (:func:`grpo_loss`, DeepSeekMath eq. 3) is PPO's clipped surrogate with that advantage plus
:math:`\beta` times the ``k3`` estimate of :math:`\mathrm{KL}(\pi \,\|\, \pi_\text{ref})` on
every token (eq. 4), the KL in the loss rather than in the reward:

$$ \mathcal{L} = -\frac{1}{G} \sum_{i=1}^{G} \frac{1}{|o_i|} \sum_{t=1}^{|o_i|} \Bigl[
   \min\bigl(\rho_{i,t} \hat A_i, \mathrm{clip}(\rho_{i,t}, 1 - \epsilon, 1 + \epsilon)
   \hat A_i\bigr) - \beta\, \mathbb{D}_{\mathrm{KL}}^{(i,t)} \Bigr]. $$

The per-sequence mean :math:`1/|o_i|` is the paper's (trl's ``loss_type="grpo"``); it favours
short correct answers and long wrong ones, so two alternatives are offered under trl's names:
``"bnpo"``, the mean over all tokens of the minibatch (with ``train.grad_accum = 1`` this is
DAPO's token-level loss, trl's default ``"dapo"``, which normalises over the whole accumulated
batch), and ``"dr_grpo"`` (Liu et al. 2025, "Understanding R1-Zero-Like Training"), a sum
divided by the constant ``sequences * max_new_tokens``. ``scale_rewards=False`` only centres the
rewards (Dr. GRPO). A rollout is reused for ``num_iterations`` passes (the paper's :math:`\mu`),
each in ``num_minibatches`` minibatches, as :class:`~groundwork.align.ppo.PPOObjective` does.

Rewards are often *verifiable*: :func:`number_match_reward` checks the number a completion
gives against the answer, as the ``asdiv`` evaluation task does.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from groundwork.align.logprobs import token_logprobs
from groundwork.align.rollout import (
    RewardFn,
    Rollout,
    RolloutBuffer,
    check_batch,
    check_rollout_config,
    completion_labels,
    kl_estimate,
    make_rollout,
    masked_mean,
    mean_reward,
    prepare_reference,
    unwrap,
    with_seed,
)
from groundwork.checks import positive_int
from groundwork.errors import ConfigError
from groundwork.evaluate.tasks import NUMBER, normalize_number
from groundwork.generate.config import GenerationConfig
from groundwork.train.objectives import LossOutput

__all__ = [
    "GRPOLoss",
    "GRPOObjective",
    "LossType",
    "group_advantages",
    "grpo_loss",
    "number_match_reward",
    "number_reward",
]

LossType = Literal["grpo", "bnpo", "dr_grpo"]
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


# --8<-- [start:group_advantages]
def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    r"""Each reward relative to its group: :math:`(r_i - \bar r) / (s + \epsilon)`, with
    :math:`\bar r` and :math:`s` the mean and (unbiased) standard deviation of the group;
    ``scale=False`` only centres (Dr. GRPO). A group whose rewards are all equal gives 0.

    Args:
        rewards: ``(N,)``, groups of ``group_size`` consecutive rows (one prompt each).
        group_size: :math:`G \ge 2`.
        scale: Divide by the group's standard deviation.
        eps: Added to the standard deviation (trl's ``1e-4``).
    """
    if group_size < 2 or rewards.numel() % group_size:
        raise ConfigError(
            f"group_size must be >= 2 and divide the {rewards.numel()} rewards, got {group_size}"
        )
    grouped = rewards.float().view(-1, group_size)  # (N / G, G)
    centred = grouped - grouped.mean(-1, keepdim=True)  # (N / G, G)
    if scale:
        centred = centred / (grouped.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)  # (N,)


# --8<-- [end:group_advantages]


class GRPOLoss(NamedTuple):
    loss: torch.Tensor
    """The GRPO loss (a scalar, to minimise)."""
    clipfrac: torch.Tensor
    """The fraction of tokens whose clipped term was the one used."""
    kl: torch.Tensor
    """The mean per-token ``k3`` KL to the reference (detached; 0 without one)."""


# --8<-- [start:grpo_loss]
def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float = 0.2,
    beta: float = 0.04,
    loss_type: LossType = "grpo",
    max_completion_length: int | None = None,
) -> GRPOLoss:
    r"""DeepSeekMath's eq. 3 as a loss: the clipped surrogate with one advantage per sequence,
    plus ``beta`` times the ``k3`` KL per token, aggregated by ``loss_type``.

    Args:
        logps: ``(n, L)`` the policy's per-token log-probabilities (with gradient).
        old_logps: ``(n, L)`` those at sampling.
        ref_logps: ``(n, L)`` the reference's (``None`` when ``beta == 0``).
        advantages: ``(n,)`` one per sequence (:func:`group_advantages`).
        mask: ``(n, L)`` 1 on completion tokens.
        clip_range: :math:`\epsilon`.
        beta: The KL coefficient :math:`\beta`.
        loss_type: ``"grpo"`` (per-sequence mean, then mean), ``"bnpo"`` (mean over all tokens)
            or ``"dr_grpo"`` (sum over ``n * max_completion_length``).
        max_completion_length: ``"dr_grpo"``'s constant (``max_new_tokens``).
    """
    ratio = torch.exp(logps - old_logps)  # (n, L)
    adv = advantages[:, None]  # (n, 1): every token gets its sequence's advantage
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * adv
    per_token = -torch.min(unclipped, clipped)  # (n, L)
    kl = torch.zeros_like(per_token)
    if beta != 0.0:
        if ref_logps is None:
            raise ConfigError("beta > 0 needs the reference's log-probabilities")
        kl = kl_estimate(logps, ref_logps, "k3")  # (n, L)
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (n,)
        loss = per_sequence.mean()
    elif loss_type == "bnpo":
        loss = masked_mean(per_token, mask)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ConfigError("loss_type 'dr_grpo' needs max_completion_length")
        loss = (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)
    else:
        raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    clipfrac = masked_mean((clipped < unclipped).float(), mask).detach()
    return GRPOLoss(loss, clipfrac, masked_mean(kl.detach(), mask))


# --8<-- [end:grpo_loss]


@dataclass
class _GRPORollout:
    rollout: Rollout
    advantages: torch.Tensor  # (N,)
    metrics: dict[str, float]


class GRPOObjective:
    """GRPO for the training engine: one call is one minibatch of the current rollout.

    Batches are lists of ``B`` prompts (:class:`~groundwork.align.rollout.PromptData` with
    ``repeats=objective.steps_per_rollout``); a rollout completes each ``group_size`` times
    (``N = B * group_size`` rows, each prompt's group consecutive) and serves
    ``num_iterations * num_minibatches`` minibatches, exactly as
    :class:`~groundwork.align.ppo.PPOObjective` (see there for the data contract, the
    evaluation path, and resuming). The engine trains the plain policy LM; ``reference`` may be
    ``None`` when ``beta == 0`` (then no reference pass is run, as in trl).

    Metrics: ``reward`` and ``reward_std`` (the mean within-group standard deviation) of the
    rollout, ``accuracy`` when every reward is 0 or 1, ``completion_length``, and per minibatch
    ``kl`` (mean per-token ``k3``) and ``clipfrac``.
    """

    def __init__(
        self,
        reference: nn.Module | None,
        reward_fn: RewardFn,
        generation: GenerationConfig,
        *,
        pad_id: int,
        eos_ids: Sequence[int] = (),
        decode: Callable[[list[int]], str] | None = None,
        group_size: int = 8,
        beta: float = 0.04,
        clip_range: float = 0.2,
        num_iterations: int = 1,
        num_minibatches: int = 1,
        loss_type: LossType = "grpo",
        scale_rewards: bool = True,
        seed: int = 0,
    ) -> None:
        check_rollout_config(generation)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
            raise ConfigError(
                f"group_size must be an integer >= 2 (the baseline is the group's mean), got "
                f"{group_size!r}"
            )
        if not 0 <= beta < float("inf"):
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if beta > 0 and reference is None:
            raise ConfigError("beta > 0 needs a reference model (or set beta=0)")
        if not 0 < clip_range < float("inf"):
            raise ConfigError(f"clip_range must be a positive number, got {clip_range}")
        if loss_type not in LOSS_TYPES:
            raise ConfigError(
                f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}"
            )
        positive_int("num_iterations", num_iterations)
        self.reference = None
        if reference is not None and beta > 0:
            self.reference = reference.eval().requires_grad_(False)
        self.reward_fn, self.generation = reward_fn, generation
        self.pad_id, self.eos_ids, self.decode = pad_id, tuple(eos_ids), decode
        self.group_size, self.beta, self.clip_range = group_size, beta, clip_range
        self.loss_type: LossType = loss_type
        self.scale_rewards, self.seed = scale_rewards, seed
        self.buffer = RolloutBuffer(num_iterations, num_minibatches, seed)
        self._current: _GRPORollout | None = None

    @property
    def steps_per_rollout(self) -> int:
        """Engine calls per rollout: ``num_iterations * num_minibatches``."""
        return self.buffer.steps

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput:
        net = unwrap(model)
        prompts = check_batch(batch, "GRPOObjective")
        device = next(net.parameters()).device
        if self.reference is not None:
            prepare_reference(self.reference, net, device)
        if not torch.is_grad_enabled():  # the engine's evaluation: minus the mean reward
            score = mean_reward(
                net,
                prompts,
                self.reward_fn,
                with_seed(self.generation, self.seed),
                pad_id=self.pad_id,
                eos_ids=self.eos_ids,
                decode=self.decode,
            )
            return LossOutput(torch.tensor(-score, device=device), len(prompts))
        if self.buffer.needs_rollout(prompts):
            self._current = self._rollout(net, prompts)
        assert self._current is not None
        return self._minibatch_loss(model, self._current, self.buffer.next())

    def _rollout(self, net: nn.Module, prompts: list[list[int]]) -> _GRPORollout:
        rows = [p for p in prompts for _ in range(self.group_size)]  # groups consecutive
        seed = self.buffer.fill(prompts, len(rows))
        ro = make_rollout(
            net,
            rows,
            self.reward_fn,
            with_seed(self.generation, seed),
            pad_id=self.pad_id,
            eos_ids=self.eos_ids,
            reference=self.reference,
            decode=self.decode,
        )
        advantages = group_advantages(ro.scores, self.group_size, self.scale_rewards)  # (N,)
        grouped = ro.scores.view(-1, self.group_size)  # (B, G)
        metrics = {
            "reward": float(ro.scores.mean()),
            "reward_std": float(grouped.std(-1).mean()),
            "completion_length": float(ro.completion_lengths.mean()),
        }
        if bool(((ro.scores == 0) | (ro.scores == 1)).all()):
            metrics["accuracy"] = float(ro.scores.mean())
        return _GRPORollout(ro, advantages, metrics)

    def _minibatch_loss(self, model: nn.Module, cur: _GRPORollout, idx: torch.Tensor) -> LossOutput:
        ro = cur.rollout
        idx = idx.to(ro.input_ids.device)
        T = int(ro.attention_mask[idx].sum(-1).max())  # the minibatch's longest row
        ids = ro.input_ids[idx, :T]  # (n, T)
        mask = ro.completion_mask[idx, : T - 1]  # (n, T - 1)
        logits = model(ids).float() / self.generation.temperature  # (n, T, V)
        logps, _ = token_logprobs(logits, completion_labels(ids, mask))  # (n, T - 1)
        ref = None if ro.ref_logps is None else ro.ref_logps[idx, : T - 1]
        out = grpo_loss(
            logps,
            ro.old_logps[idx, : T - 1],
            ref,
            cur.advantages[idx],
            mask,
            clip_range=self.clip_range,
            beta=self.beta,
            loss_type=self.loss_type,
            max_completion_length=self.generation.max_new_tokens,
        )
        return LossOutput(
            loss=out.loss,
            items=int(mask.sum()),
            tokens=int(ro.attention_mask[idx].sum()),
            metrics={**cur.metrics, "kl": out.kl, "clipfrac": out.clipfrac},
        )


# ---------------------------------------------------------------------------------------------
# verifiable rewards


NumberPosition = Literal["first", "last"]


def number_match_reward(
    completion_text: str, target: str, *, which: NumberPosition = "first"
) -> float:
    """1.0 when the ``which`` (first or last) number in ``completion_text`` equals ``target``'s,
    else 0.0.

    ``"first"`` reads the answer as the ``asdiv`` evaluation task does
    (:func:`~groundwork.evaluate.tasks.normalize_number`: the first number, commas dropped);
    ``"last"`` as reasoning answers end ("..., so Ellen has 15 balls"; lm-evaluation-harness's
    flexible extraction for GSM8K). A completion without a number scores 0.

    >>> number_match_reward(" 1,200 apples, not 3", "1200"), number_match_reward("none", "0")
    (1.0, 0.0)
    >>> number_match_reward("6 + 9 = 15", "15", which="last")
    1.0

    Raises:
        ConfigError: ``target`` holds no number, or ``which`` is neither first nor last.
    """
    if which not in ("first", "last"):
        raise ConfigError(f"which must be 'first' or 'last', got {which!r}")
    if not NUMBER.search(target):
        raise ConfigError(f"the target {target!r} holds no number")
    found = NUMBER.findall(completion_text)
    if not found:
        return 0.0
    number = found[0] if which == "first" else found[-1]
    return 1.0 if normalize_number(number) == normalize_number(target) else 0.0


def number_reward(
    answers: Mapping[tuple[int, ...], str], *, which: NumberPosition = "first"
) -> RewardFn:
    """A :class:`~groundwork.align.rollout.RewardFn` scoring each completion with
    :func:`number_match_reward` (its ``which`` number) against its prompt's answer, looked up
    by the prompt's token ids (``answers[tuple(prompt_ids)]``); the objective needs ``decode``.

    Raises:
        ConfigError: (when called) no texts (no ``decode``), or a prompt without an answer.
    """
    for target in answers.values():
        if not NUMBER.search(target):
            raise ConfigError(f"the answer {target!r} holds no number")
    if which not in ("first", "last"):
        raise ConfigError(f"which must be 'first' or 'last', got {which!r}")

    def reward(
        prompts: list[list[int]], completions: list[list[int]], texts: list[str] | None
    ) -> list[float]:
        if texts is None:
            raise ConfigError("number_reward reads the completions' text: pass decode=...")
        scores = []
        for prompt, text in zip(prompts, texts, strict=True):
            target = answers.get(tuple(prompt))
            if target is None:
                raise ConfigError(f"no answer for the prompt {prompt[:8]}...")
            scores.append(number_match_reward(text, target, which=which))
        return scores

    return reward
