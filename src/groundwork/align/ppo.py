r"""RLHF with PPO: a policy language model trained to maximise a reward model's score while a
per-token KL penalty keeps it near a frozen reference (Schulman et al. 2017, "Proximal Policy
Optimization Algorithms"; Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences"; Ouyang et al. 2022, "Training language models to follow instructions with human
feedback"; GAE from Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation"). Chapter 14.

Each completion is an episode whose actions are its tokens. Token :math:`t`'s reward is
:math:`-\beta\,\mathrm{KL}_t` (:math:`\log \pi(y_t) - \log \pi_\text{ref}(y_t)`, Schulman's
``k1``), plus the reward model's score on the last token (:func:`per_token_rewards`). A value
head on the policy's final hidden states (:class:`PolicyWithValue`) estimates the return; GAE
turns rewards and values into advantages (:func:`gae`), whitened over the rollout
(:func:`whiten`). The policy is trained with the clipped surrogate (:func:`ppo_policy_loss`),
the value head with the clipped value loss (:func:`ppo_value_loss`), for ``ppo_epochs`` passes
over the rollout in ``num_minibatches`` minibatches; :math:`\beta` is fixed or follows Ziegler
et al.'s adaptive controller (:class:`AdaptiveKLController`), updated once per rollout.

Where choices arise we follow trl's PPO trainer and Huang et al. 2024 ("The N+ Implementation
Details of RLHF with PPO"): log-probabilities of the temperature-scaled logits; rewards and
values 0 past the completion (its last token is terminal); token-level masked means; advantages
whitened, rewards optionally; ``0.5 *`` the larger clipped or unclipped squared value error;
``approx_kl`` :math:`= \tfrac12 \overline{(\log r)^2}`; an optional ``missing_eos_penalty`` (the
"EOS trick"); trl's defaults (``kl_coef`` 0.05, ``vf_coef`` 0.1, clip ranges 0.2,
:math:`\gamma = 1`, :math:`\lambda = 0.95`, 4 epochs). Unlike trl, which adds the score one
position *after* the last token, the last token itself gets it, as in Ziegler et al.; value and
policy share one body (Ziegler et al.'s code; trl keeps a separate value model). Dropout should
be off, so that the first minibatch's ratio is exactly 1.

**With the engine**, one engine step is one minibatch update; see :class:`PPOObjective`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import torch
from torch import nn

from groundwork.adapt.features import hidden_size, last_hidden_state
from groundwork.align.logprobs import token_logprobs
from groundwork.align.rollout import (
    KLKind,
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
from groundwork.checks import in_range, positive_int, positive_number
from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.train.objectives import LossOutput

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "PPOObjective",
    "PolicyLoss",
    "PolicyWithValue",
    "ValueLoss",
    "gae",
    "per_token_rewards",
    "ppo_policy_loss",
    "ppo_value_loss",
    "whiten",
]


class PolicyWithValue(nn.Module):
    """A causal LM (``GPT`` or ``Llama``) with a value head: ``Linear(d_model, 1)`` on the final
    hidden states, zero-initialised (the first values are 0).

    ``forward(ids)`` runs the body once and returns ``(logits (B, T, V), values (B, T))``, the
    logits exactly the policy's own. The engine trains (and checkpoints) the pair; sample with
    ``.policy``, and keep ``.policy`` as the aligned model.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        if not isinstance(getattr(policy, "lm_head", None), nn.Module):
            name = type(policy).__name__
            raise ConfigError(f"PolicyWithValue needs a causal LM with an lm_head, got {name}")
        self.policy = policy
        self.value_head = nn.Linear(hidden_size(policy), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self) -> Any:
        """The policy's config (so that the engine's FLOPs count reads its shape)."""
        return self.policy.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = last_hidden_state(self.policy, input_ids, attention_mask)  # (B, T, d_model)
        lm_head = cast(nn.Module, self.policy.lm_head)
        logits = lm_head(hidden)  # (B, T, V)
        values = self.value_head(hidden).squeeze(-1).float()  # (B, T)
        return logits, values


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``x`` normalised to mean 0 and variance 1 over the masked positions (trl's
    ``masked_whiten``: unbiased variance, ``+ 1e-8`` under the root); with ``shift_mean=False``
    the mean is added back (only the scale changes). Masked-out positions become 0."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * (n / (n - 1).clamp(min=1))  # unbiased
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def per_token_rewards(
    score: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kind: KLKind = "k1",
) -> torch.Tensor:
    r"""``(N, L)`` rewards: :math:`-\beta\,\mathrm{KL}_t` on every completion token, plus
    ``score`` on each row's last one (Ziegler et al. 2019, eq. 2, spread over tokens).

    Args:
        score: ``(N,)`` the reward model's scores.
        logps: ``(N, L)`` the policy's per-token log-probabilities at sampling.
        ref_logps: ``(N, L)`` the reference's.
        mask: ``(N, L)`` 1 on completion tokens (one contiguous run per row).
        kl_coef: :math:`\beta`.
        kind: The per-token KL estimator (:func:`~groundwork.align.rollout.kl_estimate`).
    """
    rewards = -kl_coef * kl_estimate(logps, ref_logps, kind) * mask  # (N, L)
    positions = torch.arange(mask.shape[1], device=mask.device)  # (L,)
    last = (positions * mask).argmax(-1)  # (N,) each row's last completion token
    has_tokens = mask.sum(-1) > 0  # (N,)
    rows = torch.arange(mask.shape[0], device=mask.device)  # (N,)
    rewards[rows, last] += torch.where(has_tokens, score.to(rewards.dtype), 0.0)
    return rewards


# --8<-- [start:gae]
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimation (Schulman et al. 2016), backwards over the tokens:

    $$ \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad
       \hat A_t = \delta_t + \gamma \lambda \hat A_{t+1}, \qquad \hat R_t = \hat A_t + V_t. $$

    Positions outside ``mask`` hold no action: their rewards and values count as 0 and their
    advantages are 0, so the step after a row's last token is terminal (:math:`V = 0`).

    Args:
        rewards: ``(N, L)`` per-token rewards.
        values: ``(N, L)`` value estimates :math:`V_t` of the state before token ``t``.
        mask: ``(N, L)`` 1 on actions (one contiguous run per row: right padding, a prompt).
        gamma: Discount :math:`\gamma`.
        lam: GAE's :math:`\lambda` (0: one-step TD error; 1: Monte Carlo return minus value).

    Returns:
        ``(advantages, returns)``, both ``(N, L)`` and 0 off the mask.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)  # (N, L)
    running = torch.zeros_like(rewards[:, 0])  # (N,) the advantage of the next step
    L = rewards.shape[1]
    for t in reversed(range(L)):
        next_value = values[:, t + 1] if t + 1 < L else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return advantages, returns


# --8<-- [end:gae]


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    """The clipped surrogate loss (a scalar, to minimise)."""
    clipfrac: torch.Tensor
    """The fraction of tokens whose clipped term was the one used."""
    approx_kl: torch.Tensor
    r""":math:`\tfrac12 \overline{(\log \pi - \log \pi_\text{old})^2}` (detached)."""


# --8<-- [start:ppo_policy_loss]
def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> PolicyLoss:
    r"""PPO's clipped surrogate (Schulman et al. 2017, eq. 7), a token-level masked mean of

    $$ \max\bigl(-\hat A_t\, \rho_t,\; -\hat A_t\, \mathrm{clip}(\rho_t, 1 - \epsilon,
       1 + \epsilon)\bigr), \qquad \rho_t = \frac{\pi(y_t)}{\pi_\text{old}(y_t)}: $$

    a ratio that moved past :math:`1 \pm \epsilon` in the advantage's direction gets no more
    gradient. All inputs are ``(N, L)``.
    """
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask).detach()
    approx_kl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
    return PolicyLoss(loss, clipfrac, approx_kl)


# --8<-- [end:ppo_policy_loss]


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    """The clipped value loss (a scalar)."""
    clipfrac: torch.Tensor
    """The fraction of tokens where the clipped error was the larger."""


# --8<-- [start:ppo_value_loss]
def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> ValueLoss:
    r"""The clipped value loss (trl, after OpenAI's baselines), a masked mean of

    $$ \tfrac12 \max\bigl((V - \hat R)^2,\; (\mathrm{clip}(V, V_\text{old} - \epsilon_v,
       V_\text{old} + \epsilon_v) - \hat R)^2\bigr): $$

    the value may not profit from moving more than :math:`\epsilon_v` from the rollout's
    estimate. All inputs are ``(N, L)``.
    """
    clipped_values = torch.clamp(
        values, old_values - clip_range_value, old_values + clip_range_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask).detach()
    return ValueLoss(loss, clipfrac)


# --8<-- [end:ppo_value_loss]


class KLController(Protocol):
    """The KL coefficient :math:`\\beta`: ``value``, updated once per rollout."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...


class FixedKLController:
    """A constant :math:`\\beta` (trl's PPO)."""

    def __init__(self, kl_coef: float) -> None:
        if not kl_coef >= 0:
            raise ConfigError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing changes."""


# --8<-- [start:adaptive_kl]
class AdaptiveKLController:
    r"""Ziegler et al. 2019's adaptive :math:`\beta` (§2.2), steering the KL to a target:

    $$ e = \mathrm{clip}\Bigl(\frac{\mathrm{KL}}{\mathrm{KL}_\text{target}} - 1,
       -0.2, 0.2\Bigr), \qquad \beta \leftarrow \beta\,\Bigl(1 + e\,\frac{n}{H}\Bigr), $$

    with :math:`n` the samples of the rollout and :math:`H` the horizon (their code:
    ``target=6, horizon=10000``). ``KL`` is the mean, over sequences, of the summed per-token KL.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if not init_kl_coef > 0 or not target > 0:
            raise ConfigError(
                f"init_kl_coef and target must be > 0, got {init_kl_coef} and {target}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = positive_int("horizon", horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# --8<-- [end:adaptive_kl]


@dataclass
class _PPORollout:
    """A rollout with its advantages, as the minibatches read it."""

    rollout: Rollout
    old_values: torch.Tensor  # (N, T - 1)
    advantages: torch.Tensor  # (N, T - 1)
    returns: torch.Tensor  # (N, T - 1)
    metrics: dict[str, float]


class PPOObjective:
    """PPO for the training engine: one call is one minibatch of the current rollout.

    **Batches and data.** A batch is a list of prompts (token-id lists) from
    :class:`~groundwork.align.rollout.PromptData`. A new batch starts a rollout: its prompts are
    completed by the policy, scored and turned into advantages, split into ``ppo_epochs *
    num_minibatches`` minibatches (:attr:`steps_per_rollout`), and each engine call trains on the
    next one. The data serves each batch that many times in a row (``PromptData(...,
    repeats=objective.steps_per_rollout)``), so every call reads the prompts it trains on and the
    data's epochs count real passes; new prompts before the minibatches are used up raise a
    ``ConfigError`` (rather than the objective silently ignoring the batches while its buffer
    is full). ``train.grad_accum = num_minibatches`` makes one optimizer step per epoch of the
    rollout. The buffer is not checkpointed: a resumed run samples its first rollout afresh.

    **Model.** The engine trains a :class:`PolicyWithValue`; its ``.policy`` samples, in eval
    mode without gradients. **Evaluation.** Called without gradients (the engine's default
    evaluation), it samples completions of the batch's prompts with the seed ``seed``; the loss,
    so ``val_loss``, is minus their mean score (no KL term).

    Metrics: ``score`` (the rollout's mean reward), ``kl`` (mean summed KL per sequence to the
    reference), ``kl_coef``, ``completion_length``, and per minibatch ``policy_loss``,
    ``value_loss``, ``clipfrac``, ``value_clipfrac``, ``approx_kl``, ``entropy``.
    """

    def __init__(
        self,
        reference: nn.Module,
        reward_fn: RewardFn,
        generation: GenerationConfig,
        *,
        pad_id: int,
        eos_ids: Sequence[int] = (),
        decode: Callable[[list[int]], str] | None = None,
        ppo_epochs: int = 4,
        num_minibatches: int = 1,
        kl_coef: float | KLController = 0.05,
        kl_estimator: KLKind = "k1",
        vf_coef: float = 0.1,
        clip_range: float = 0.2,
        clip_range_value: float = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        whiten_rewards: bool = False,
        missing_eos_penalty: float | None = None,
        seed: int = 0,
    ) -> None:
        check_rollout_config(generation)
        if kl_estimator not in ("k1", "k2", "k3"):
            raise ConfigError(f"kl_estimator must be 'k1', 'k2' or 'k3', got {kl_estimator!r}")
        positive_int("ppo_epochs", ppo_epochs)
        positive_number("clip_range", clip_range)
        positive_number("clip_range_value", clip_range_value)
        for name, value in (("vf_coef", vf_coef), ("gamma", gamma), ("lam", lam)):
            in_range(name, value, 0, float("inf") if name == "vf_coef" else 1)
        self.reference = reference.eval().requires_grad_(False)
        self.reward_fn, self.generation = reward_fn, generation
        self.pad_id, self.eos_ids, self.decode = pad_id, tuple(eos_ids), decode
        self.kl = FixedKLController(kl_coef) if isinstance(kl_coef, int | float) else kl_coef
        self.kl_estimator: KLKind = kl_estimator
        self.vf_coef, self.clip_range, self.clip_range_value = vf_coef, clip_range, clip_range_value
        self.gamma, self.lam = gamma, lam
        self.whiten_advantages, self.whiten_rewards = whiten_advantages, whiten_rewards
        self.missing_eos_penalty, self.seed = missing_eos_penalty, seed
        self.buffer = RolloutBuffer(ppo_epochs, num_minibatches, seed)
        self._current: _PPORollout | None = None

    @property
    def steps_per_rollout(self) -> int:
        """Engine calls per rollout: ``ppo_epochs * num_minibatches``."""
        return self.buffer.steps

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput:
        net = unwrap(model)
        if not isinstance(net, PolicyWithValue):
            name = type(net).__name__
            raise ConfigError(f"PPOObjective trains a PolicyWithValue (policy + value), got {name}")
        prompts = check_batch(batch, "PPOObjective")
        device = next(net.parameters()).device
        prepare_reference(self.reference, net.policy, device)
        if not torch.is_grad_enabled():  # the engine's evaluation
            score = mean_reward(
                net.policy,
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

    def _rollout(self, net: PolicyWithValue, prompts: list[list[int]]) -> _PPORollout:
        seed = self.buffer.fill(prompts, len(prompts))
        ro = make_rollout(
            net,
            prompts,
            self.reward_fn,
            with_seed(self.generation, seed),
            pad_id=self.pad_id,
            eos_ids=self.eos_ids,
            reference=self.reference,
            decode=self.decode,
            generate_with=net.policy,
        )
        assert ro.values is not None and ro.ref_logps is not None
        mask = ro.completion_mask  # (N, T - 1)
        score = ro.scores
        if self.missing_eos_penalty is not None:
            score = score - self.missing_eos_penalty * (~ro.finished).float()
        kl = kl_estimate(ro.old_logps, ro.ref_logps, self.kl_estimator) * mask  # (N, T - 1)
        kl_coef = self.kl.value
        rewards = per_token_rewards(
            score, ro.old_logps, ro.ref_logps, mask, kl_coef, self.kl_estimator
        )
        if self.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        old_values = ro.values[:, :-1] * mask  # (N, T - 1): V of the state before each token
        advantages, returns = gae(rewards, old_values, mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = whiten(advantages, mask)
        mean_kl = float(kl.sum(-1).mean())
        self.kl.update(mean_kl, n_steps=len(prompts))
        metrics = {
            "score": float(ro.scores.mean()),
            "kl": mean_kl,
            "kl_coef": kl_coef,
            "completion_length": float(ro.completion_lengths.mean()),
        }
        return _PPORollout(ro, old_values, advantages, returns, metrics)

    def _minibatch_loss(self, model: nn.Module, cur: _PPORollout, idx: torch.Tensor) -> LossOutput:
        ro = cur.rollout
        idx = idx.to(ro.input_ids.device)
        T = int(ro.attention_mask[idx].sum(-1).max())  # the minibatch's longest row
        ids = ro.input_ids[idx, :T]  # (n, T)
        mask = ro.completion_mask[idx, : T - 1]  # (n, T - 1)
        logits, values = model(ids)  # (n, T, V), (n, T)
        logits = logits.float() / self.generation.temperature
        logps, _ = token_logprobs(logits, completion_labels(ids, mask))  # (n, T - 1)
        policy = ppo_policy_loss(
            logps, ro.old_logps[idx, : T - 1], cur.advantages[idx, : T - 1], mask, self.clip_range
        )
        value = ppo_value_loss(
            values[:, :-1],
            cur.old_values[idx, : T - 1],
            cur.returns[idx, : T - 1],
            mask,
            self.clip_range_value,
        )
        with torch.no_grad():
            log_p = torch.log_softmax(logits[:, :-1], dim=-1)  # (n, T - 1, V)
            entropy = -(log_p.exp() * log_p).sum(-1)  # (n, T - 1)
        return LossOutput(
            loss=policy.loss + self.vf_coef * value.loss,
            items=int(mask.sum()),
            tokens=int(ro.attention_mask[idx].sum()),
            metrics={
                **cur.metrics,
                "policy_loss": policy.loss.detach(),
                "value_loss": value.loss.detach(),
                "clipfrac": policy.clipfrac,
                "value_clipfrac": value.clipfrac,
                "approx_kl": policy.approx_kl,
                "entropy": masked_mean(entropy, mask),
            },
        )
