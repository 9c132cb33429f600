r"""Rollouts for reinforcement learning on a language model: sample completions of prompts with the
policy, score them with a reward function, and keep the per-token log-probabilities that PPO and
GRPO compare (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"; Ouyang
et al. 2022; Shao et al. 2024, "DeepSeekMath"). Chapter 14.

A *rollout* of :math:`N` prompts is their completions :math:`y_i \sim \pi_\text{old}(\cdot \mid
x_i)` drawn with :func:`~groundwork.generate.decode.generate` (in eval mode, without gradients),
laid out as one right-padded batch::

    input_ids        x x x y y y y <pad>      prompt x, completion y (its stop id included)
    completion_mask    0 0 1 1 1 1 0          (N, T - 1): 1 where input_ids[:, t + 1] is y's

``completion_mask`` is aligned with :func:`~groundwork.align.logprobs.token_logprobs`: position
``t`` holds :math:`\log \pi(\text{input\_ids}_{t+1} \mid \le t)`. Right padding needs no attention
mask: attention is causal, so no real token ever reads a pad after it. Logits are divided by the
sampling temperature before the log-softmax, so the log-probabilities are those of the
distribution the tokens were drawn from (trl's PPO and GRPO trainers; Huang et al. 2024, "The N+
Implementation Details of RLHF with PPO"); sampling must therefore be plain (no top-k, top-p,
min-p, repetition penalty or beams), else the ratio :math:`\pi/\pi_\text{old}` would compare
different distributions.

Also here: the :class:`RewardFn` protocol, the KL estimators of Schulman ("Approximating KL
Divergence", 2020) in :func:`kl_estimate`, :class:`PromptData` (the engine's data for RL: prompt
batches, each served ``repeats`` times) and :class:`RolloutBuffer`, the minibatch plan that
PPOObjective and GRPOObjective share. The module is long because it is that whole shared path,
from the engine's prompt batches through sampling and scoring to the minibatches trained on.
"""

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import torch
from torch import nn

from groundwork.align.logprobs import token_logprobs
from groundwork.align.sft import IGNORE_INDEX
from groundwork.checks import positive_int
from groundwork.errors import ConfigError, TrainingError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import context_window, generate
from groundwork.runtime import eval_mode
from groundwork.train.data import encode_rng_state, restore_rng_state

__all__ = [
    "KLKind",
    "PromptData",
    "RewardFn",
    "Rollout",
    "RolloutBuffer",
    "check_batch",
    "check_rollout_config",
    "completion_labels",
    "completion_logprobs",
    "compute_rewards",
    "kl_estimate",
    "make_rollout",
    "masked_mean",
    "mean_reward",
    "pack",
    "prepare_reference",
    "sample_completions",
    "unwrap",
    "with_seed",
]

KLKind = Literal["k1", "k2", "k3"]


class RewardFn(Protocol):
    """Scores completions: ``reward_fn(prompts, completions, texts) -> (N,)``.

    ``prompts[i]`` and ``completions[i]`` are token ids (a completion keeps the stop id that
    ended it); ``texts[i]`` is the completion decoded without that stop id, or ``texts`` is
    ``None`` when no ``decode`` was given. Returns a tensor or a sequence of ``N`` floats.
    """

    def __call__(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        texts: list[str] | None,
    ) -> torch.Tensor | Sequence[float]: ...


@dataclass
class Rollout:
    """``N`` prompts with one sampled completion each, laid out for a forward pass, with what
    the policy, the reference and the reward function said about them."""

    prompts: list[list[int]]
    completions: list[list[int]]
    """New tokens of each row, the stop id included when one ended it."""
    texts: list[str] | None
    """The completions decoded (without their stop id); ``None`` without ``decode``."""
    input_ids: torch.Tensor
    """``(N, T)`` prompt + completion, right-padded."""
    attention_mask: torch.Tensor
    """``(N, T)`` 1 on real tokens, 0 on padding."""
    completion_mask: torch.Tensor
    """``(N, T - 1)`` float, 1 where ``input_ids[:, t + 1]`` is a completion token."""
    finished: torch.Tensor
    """``(N,)`` bool: the completion ended with a stop id (not cut at ``max_new_tokens``)."""
    old_logps: torch.Tensor
    """``(N, T - 1)`` per-token log-probabilities under the policy at sampling (0 off-mask)."""
    ref_logps: torch.Tensor | None
    """``(N, T - 1)`` the same under the frozen reference (``None``: no reference)."""
    scores: torch.Tensor
    """``(N,)`` float32, the reward function's scores."""
    values: torch.Tensor | None = None
    """``(N, T)`` the value head's estimates, when the model gives them (PPO)."""

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def completion_lengths(self) -> torch.Tensor:
        """``(N,)`` tokens in each completion."""
        return self.completion_mask.sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


# --8<-- [start:kl_estimate]
def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    r"""Per-token estimates of :math:`\mathrm{KL}(\pi \,\|\, \pi_\text{ref})` from tokens drawn
    from :math:`\pi` (Schulman 2020, "Approximating KL Divergence"), with
    :math:`r = \pi_\text{ref}(y_t) / \pi(y_t)`:

    * ``k1`` :math:`= -\log r` (unbiased, can be negative; PPO's per-token penalty in Ziegler
      et al. 2019 and trl);
    * ``k2`` :math:`= \tfrac12 (\log r)^2` (biased, low variance, non-negative);
    * ``k3`` :math:`= (r - 1) - \log r` (unbiased, low variance, non-negative; GRPO's,
      DeepSeekMath eq. 4).

    Args:
        logps: ``(...)`` :math:`\log \pi(y_t)`.
        ref_logps: ``(...)`` :math:`\log \pi_\text{ref}(y_t)`.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.
    """
    log_r = ref_logps - logps
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r  # expm1: exact near r = 1
    raise ConfigError(f"kl estimator must be 'k1', 'k2' or 'k3', got {kind!r}")


# --8<-- [end:kl_estimate]


def check_rollout_config(config: GenerationConfig) -> None:
    """Refuse sampling settings under which the tokens are not drawn from the policy's own
    (temperature-scaled) distribution.

    Raises:
        ConfigError: greedy decoding, beams, top-k, top-p, min-p or a repetition penalty.
    """
    if config.temperature <= 0:
        raise ConfigError(
            "RL rollouts sample: set a temperature > 0 (greedy completions have no "
            "exploration and no probability ratio)"
        )
    changed = [
        name
        for name, value in (
            ("num_beams", config.num_beams != 1),
            ("top_k", config.top_k is not None),
            ("top_p", config.top_p not in (None, 1.0)),
            ("min_p", config.min_p not in (None, 0.0)),
            ("repetition_penalty", config.repetition_penalty not in (None, 1.0)),
        )
        if value
    ]
    if changed:
        raise ConfigError(
            f"RL rollouts must sample from the policy itself: unset {', '.join(changed)} (the "
            "log-probabilities compared in the loss are those of the temperature-scaled policy)"
        )


def check_batch(batch: Any, who: str) -> list[list[int]]:
    """The engine's batch as prompts: a non-empty list of non-empty token-id lists.

    Raises:
        ConfigError: anything else (``who`` names the objective in the message).
    """
    ok = isinstance(batch, list | tuple) and len(batch) > 0
    ok = ok and all(
        isinstance(p, list | tuple) and p and all(isinstance(t, int) for t in p) for p in batch
    )
    if not ok:
        raise ConfigError(
            f"{who} reads batches of prompts (non-empty lists of token ids), as PromptData "
            f"gives them; got {type(batch).__name__}"
        )
    return [list(p) for p in batch]


def sample_completions(
    policy: nn.Module,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    pad_id: int,
    eos_ids: Sequence[int] = (),
    decode: Callable[[list[int]], str] | None = None,
) -> list[list[int]]:
    """One sampled completion per prompt, in eval mode without gradients.

    Raises:
        ConfigError: sampling settings refused by :func:`check_rollout_config`; a prompt that,
            with ``max_new_tokens`` more, does not fit the model's context (the rollout is
            scored in one forward pass, without a sliding window); the errors of
            :func:`~groundwork.generate.decode.generate`.
    """
    check_rollout_config(config)
    limit = context_window(policy)
    for i, prompt in enumerate(prompts):
        if limit is not None and len(prompt) + config.max_new_tokens > limit:
            raise ConfigError(
                f"prompt {i} has {len(prompt)} tokens: with max_new_tokens="
                f"{config.max_new_tokens} it needs {len(prompt) + config.max_new_tokens} "
                f"positions, more than the model's context of {limit}; shorten the prompts or "
                "generate fewer tokens"
            )
    with eval_mode(policy), torch.no_grad():
        out = generate(policy, prompts, config, pad_id=pad_id, eos_ids=eos_ids, decode=decode)
    return out.sequences


def pack(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + completion rows, right-padded: ``(input_ids (N, T), attention_mask (N, T),
    completion_mask (N, T - 1))``.

    >>> ids, attn, cm = pack([[5, 6], [7]], [[8, 9], [1]], pad_id=0)
    >>> ids.tolist(), cm.tolist()
    ([[5, 6, 8, 9], [7, 1, 0, 0]], [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    """
    rows = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (N, T)
    attn = torch.zeros((len(rows), T), dtype=torch.long)  # (N, T)
    cmask = torch.zeros((len(rows), T - 1))  # (N, T - 1)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        attn[i, : len(rows[i])] = 1
        cmask[i, len(p) - 1 : len(p) + len(c) - 1] = 1.0  # predicts completion tokens
    return ids, attn, cmask


def completion_labels(input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` labels for :func:`~groundwork.align.logprobs.token_logprobs`: the completion's
    tokens, :data:`~groundwork.align.sft.IGNORE_INDEX` elsewhere."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)  # (N, T)
    labels[:, 1:] = torch.where(completion_mask.bool(), input_ids[:, 1:], IGNORE_INDEX)
    return labels


def completion_logprobs(
    model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass: ``(logps (N, T - 1), values (N, T) or None)``.

    ``model(input_ids)`` gives logits ``(N, T, V)``, or a ``(logits, values)`` pair as
    :class:`~groundwork.align.ppo.PolicyWithValue` does; the logits are divided by
    ``temperature`` (the sampling one) before the log-softmax.
    """
    out = model(input_ids)
    logits, values = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
    logps, _ = token_logprobs(logits.float() / temperature, labels)  # (N, T - 1)
    return logps, values


def compute_rewards(
    reward_fn: RewardFn,
    prompts: list[list[int]],
    completions: list[list[int]],
    texts: list[str] | None,
) -> torch.Tensor:
    """The reward function's scores as a ``(N,)`` float32 tensor (on the CPU).

    Raises:
        ConfigError: not ``N`` scores.
        TrainingError: a score is NaN or infinite.
    """
    raw = reward_fn(prompts, completions, texts)
    scores = torch.as_tensor(raw, dtype=torch.float32).detach().cpu().reshape(-1)  # (N,)
    if scores.numel() != len(prompts):
        raise ConfigError(
            f"the reward function returned {scores.numel()} scores for {len(prompts)} "
            "completions: it must return one score per completion"
        )
    if not torch.isfinite(scores).all():
        raise TrainingError(f"the reward function returned non-finite scores: {scores.tolist()}")
    return scores


def _decode_all(
    decode: Callable[[list[int]], str] | None, completions: list[list[int]], stops: set[int]
) -> list[str] | None:
    if decode is None:
        return None
    return [decode(c[:-1] if c and c[-1] in stops else c) for c in completions]


@torch.no_grad()
def make_rollout(
    model: nn.Module,
    prompts: list[list[int]],
    reward_fn: RewardFn,
    config: GenerationConfig,
    *,
    pad_id: int,
    eos_ids: Sequence[int] = (),
    reference: nn.Module | None = None,
    decode: Callable[[list[int]], str] | None = None,
    generate_with: nn.Module | None = None,
) -> Rollout:
    """Sample one completion per prompt, score it, and keep the log-probabilities.

    Args:
        model: Scores the rollout (``model(ids)`` gives logits, or ``(logits, values)``).
        prompts: Token ids, one row each (repeat a prompt for several samples of it).
        reward_fn: Scores the completions (:class:`RewardFn`).
        config: Sampling settings (:func:`check_rollout_config`); ``seed`` fixes the samples.
        pad_id: Id of padding (masked everywhere).
        eos_ids: Ids that end a completion, besides ``config.stop_ids``.
        reference: The frozen reference model (``None``: no ``ref_logps``).
        decode: ids -> text, for the reward function's ``texts`` and stop strings.
        generate_with: The model that samples, when ``model`` cannot (a policy with a value
            head samples with its policy).
    """
    sampler = model if generate_with is None else generate_with
    completions = sample_completions(
        sampler, prompts, config, pad_id=pad_id, eos_ids=eos_ids, decode=decode
    )
    device = next(model.parameters()).device
    ids, attn, cmask = pack(prompts, completions, pad_id)  # (N, T), (N, T), (N, T - 1)
    ids, attn, cmask = ids.to(device), attn.to(device), cmask.to(device)
    labels = completion_labels(ids, cmask)  # (N, T)
    with eval_mode(model):
        old_logps, values = completion_logprobs(model, ids, labels, temperature=config.temperature)
    ref_logps = None
    if reference is not None:
        with eval_mode(reference):
            ref_logps, _ = completion_logprobs(
                reference, ids, labels, temperature=config.temperature
            )
    stops = {*config.stop_ids, *eos_ids}
    finished = [bool(c) and (c[-1] in stops or len(c) < config.max_new_tokens) for c in completions]
    texts = _decode_all(decode, completions, stops)
    return Rollout(
        prompts=prompts,
        completions=completions,
        texts=texts,
        input_ids=ids,
        attention_mask=attn,
        completion_mask=cmask,
        finished=torch.tensor(finished, dtype=torch.bool, device=device),
        old_logps=old_logps,
        ref_logps=ref_logps,
        scores=compute_rewards(reward_fn, prompts, completions, texts).to(device),
        values=None if values is None else values.float(),
    )


@torch.no_grad()
def mean_reward(
    policy: nn.Module,
    prompts: list[list[int]],
    reward_fn: RewardFn,
    config: GenerationConfig,
    *,
    pad_id: int,
    eos_ids: Sequence[int] = (),
    decode: Callable[[list[int]], str] | None = None,
    batch_size: int = 64,
) -> float:
    """The mean score of one sampled completion per prompt (``config.seed`` fixes them): what an
    ``evaluate`` callback of the engine reports, e.g. ``{"val_score": mean_reward(...)}``."""
    positive_int("batch_size", batch_size)
    stops = {*config.stop_ids, *eos_ids}
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        part = prompts[start : start + batch_size]
        completions = sample_completions(
            policy, part, config, pad_id=pad_id, eos_ids=eos_ids, decode=decode
        )
        texts = _decode_all(decode, completions, stops)
        total += float(compute_rewards(reward_fn, part, completions, texts).sum())
    return total / max(len(prompts), 1)


def prepare_reference(reference: nn.Module, policy: nn.Module, device: torch.device) -> None:
    """Move the frozen reference to the policy's device.

    Raises:
        ConfigError: the reference shares weights with the policy (it must be a frozen copy,
            ``copy.deepcopy(policy)`` before training, or it would move with the policy).
    """
    trained = {id(p) for p in policy.parameters()}
    if any(id(p) in trained for p in reference.parameters()):
        raise ConfigError(
            "the reference model shares weights with the policy: pass a frozen copy "
            "(copy.deepcopy(policy) before training)"
        )
    reference.to(device)


def with_seed(config: GenerationConfig, seed: int) -> GenerationConfig:
    """``config`` with another sampling seed (each rollout draws new samples)."""
    return dataclasses.replace(config, seed=seed)


class RolloutBuffer:
    """The minibatches of the current rollout, in the order the objective trains on them.

    A rollout of ``n`` rows is used ``epochs`` times; each epoch is a new permutation of the
    rows (drawn with a generator seeded by ``seed`` and the rollout's number, so runs repeat)
    split into ``num_minibatches`` equal minibatches. An objective asks :meth:`needs_rollout`
    for each engine batch: a new rollout is due when the buffer is empty or the prompts
    changed. Prompts that change before the buffer is used up are an error (the data does not
    repeat each batch ``steps`` times: :class:`PromptData` ``repeats``), except for the first
    rollout of an objective, which may follow a resumed run into the middle of a repeat.
    """

    def __init__(self, epochs: int, num_minibatches: int, seed: int) -> None:
        self.epochs = positive_int("epochs", epochs)
        self.num_minibatches = positive_int("num_minibatches", num_minibatches)
        self.seed = seed
        self.rollouts = 0
        self.prompts: list[list[int]] | None = None
        self._queue: list[torch.Tensor] = []

    @property
    def steps(self) -> int:
        """Engine calls (minibatches) per rollout: ``epochs * num_minibatches``."""
        return self.epochs * self.num_minibatches

    def needs_rollout(self, prompts: list[list[int]]) -> bool:
        """Whether ``prompts`` start a new rollout.

        Raises:
            ConfigError: new prompts arrive while minibatches of the last rollout are left.
        """
        if not self._queue:
            return True
        if prompts == self.prompts:
            return False
        if self.rollouts > 1:
            used = self.steps - len(self._queue)
            raise ConfigError(
                f"new prompts arrived after {used} of the rollout's {self.steps} minibatches: "
                f"the data must serve each prompt batch {self.steps} times in a row "
                f"(PromptData(..., repeats={self.steps}))"
            )
        return True  # the first rollout after a resume: its repeats were partly served

    def fill(self, prompts: list[list[int]], n: int) -> int:
        """Plan the minibatches of a new rollout of ``n`` rows; returns the seed it is to be
        sampled with.

        Raises:
            ConfigError: ``num_minibatches`` does not divide ``n``.
        """
        if n % self.num_minibatches:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} must divide the rollout's {n} "
                "completions (the prompts per batch, times group_size for GRPO)"
            )
        seed = self.seed + self.rollouts
        generator = torch.Generator().manual_seed(seed)
        size = n // self.num_minibatches
        self._queue = []
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=generator)  # (n,)
            self._queue += list(perm.split(size))  # num_minibatches x (size,)
        self.prompts = prompts
        self.rollouts += 1
        return seed

    def next(self) -> torch.Tensor:
        """The row indices of the next minibatch."""
        return self._queue.pop(0)


class PromptData:
    """Prompts for RL, as the training engine reads data: shuffled epochs of prompt batches
    (lists of token-id lists), the order drawn with the engine's generator, each batch served
    ``repeats`` times in a row, so that one rollout feeds ``repeats`` engine steps
    (``repeats = objective.steps_per_rollout``). An epoch drops its last, incomplete batch
    (every rollout has the same size, which the minibatches divide).

    Args:
        prompts: Training prompts (non-empty token-id lists).
        batch_size: Prompts per batch.
        repeats: How many engine calls each batch is served for.
        val_prompts: Validation prompts, in order, ``val_batch_size`` at a time (the default
            evaluation of the objectives is minus their mean score).
        val_batch_size: Default ``batch_size``.
    """

    def __init__(
        self,
        prompts: Sequence[Sequence[int]],
        batch_size: int,
        *,
        repeats: int = 1,
        val_prompts: Sequence[Sequence[int]] = (),
        val_batch_size: int | None = None,
    ) -> None:
        positive_int("batch_size", batch_size)
        positive_int("repeats", repeats)
        for name, group in (("prompts", prompts), ("val_prompts", val_prompts)):
            if any(len(p) == 0 for p in group):
                raise ConfigError(f"{name} holds an empty prompt: give at least one token each")
        if len(prompts) < batch_size:
            raise ConfigError(
                f"{len(prompts)} prompts cannot fill one batch of {batch_size} (batch_size)"
            )
        self.prompts = [list(p) for p in prompts]
        self.val_prompts = [list(p) for p in val_prompts]
        self.batch_size, self.repeats = batch_size, repeats
        self.val_batch_size = positive_int("val_batch_size", val_batch_size or batch_size)
        self._perm: list[int] | None = None
        self._epoch_rng: torch.Tensor | None = None
        self._position = 0  # engine calls served in this epoch

    @property
    def steps_per_epoch(self) -> int:
        """Engine calls per pass over the prompts (full batches times ``repeats``)."""
        return len(self.prompts) // self.batch_size * self.repeats

    def _new_epoch(self, generator: torch.Generator) -> None:
        self._epoch_rng = generator.get_state()
        self._perm = torch.randperm(len(self.prompts), generator=generator).tolist()
        self._position = 0

    def next_batch(self, generator: torch.Generator) -> list[list[int]]:
        if self._perm is None or self._position == self.steps_per_epoch:
            self._new_epoch(generator)
        assert self._perm is not None
        b = self._position // self.repeats
        self._position += 1
        rows = self._perm[b * self.batch_size : (b + 1) * self.batch_size]
        return [list(self.prompts[i]) for i in rows]

    def val_batches(self) -> Iterator[list[list[int]]]:
        n = self.val_batch_size
        for start in range(0, len(self.val_prompts), n):
            yield [list(p) for p in self.val_prompts[start : start + n]]

    @property
    def val_description(self) -> str:
        return f"{len(self.val_prompts)} validation prompts"

    def state_dict(self) -> dict[str, Any]:
        """Where in which epoch the data is (for resume)."""
        if self._epoch_rng is None:
            return {}
        return {"epoch_rng": encode_rng_state(self._epoch_rng), "position": self._position}

    def load_state_dict(self, state: dict[str, Any], generator: torch.Generator) -> None:
        """Go back to the saved position: replay the epoch's shuffle."""
        if not state:
            return
        restore_rng_state(generator, state["epoch_rng"])
        self._new_epoch(generator)
        self._position = int(state["position"])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (the engine may hand one over)."""
    return cast(nn.Module, getattr(model, "_orig_mod", model))
