r"""Direct Preference Optimization: a policy trained on preference pairs directly, without a
reward model or reinforcement learning (Rafailov et al. 2023, "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model"); with the IPO loss (Azar et al. 2023, "A
General Theoretical Paradigm to Understand Learning from Human Preferences") and conservative
DPO's label smoothing (Mitchell 2023, "A note on DPO with noisy preferences & relationship to
IPO").

RLHF maximises a reward under a KL penalty to a reference policy :math:`\pi_\text{ref}` (the SFT
model); the optimum of that problem is
:math:`\pi^*(y \mid x) \propto \pi_\text{ref}(y \mid x) \exp(r(x, y) / \beta)`, so a policy
defines its own *implicit reward* :math:`r_\theta(x, y) = \beta \log \frac{\pi_\theta(y \mid
x)}{\pi_\text{ref}(y \mid x)}` (up to a term of :math:`x` alone, which cancels in a comparison).
Putting it into the Bradley-Terry model of preferences gives a classification loss on pairs
:math:`(x, y_w, y_l)`, with :math:`h = \log \frac{\pi_\theta(y_w|x)}{\pi_\text{ref}(y_w|x)} -
\log \frac{\pi_\theta(y_l|x)}{\pi_\text{ref}(y_l|x)}`:

* ``"sigmoid"`` (DPO, Eq. 7): :math:`-\log \sigma(\beta h)`; with label smoothing
  :math:`\varepsilon` (the chance that a label is flipped; conservative DPO),
  :math:`-(1 - \varepsilon) \log \sigma(\beta h) - \varepsilon \log \sigma(-\beta h)`;
* ``"ipo"`` (IPO, Eq. 17, :math:`\tau = \beta`): :math:`(h' - \frac{1}{2\beta})^2`, a squared loss
  that does not push :math:`h` to infinity on deterministic preferences. As ``trl``, :math:`h'`
  uses each answer's log-ratio *per token* (divided by its number of answer tokens), which the
  IPO authors confirmed is what their results use.

At initialisation (:math:`\pi_\theta = \pi_\text{ref}`) :math:`h = 0` and the sigmoid loss is
:math:`\log 2` for every pair. The reference is frozen; its log-probabilities do not change, so
:func:`precompute_reference_logps` computes them once, before training, and the reference model
need not stay in memory (``trl``'s ``precompute_ref_log_probs``). :class:`DPOObjective` plugs the
loss into the training engine. ``trl`` 1.16's ``DPOTrainer`` is the reference implementation
(``tests/align/test_dpo.py``); its ``"sigmoid"`` loss ignores ``label_smoothing`` (used only by
its ``"robust"`` and ``"exo_pair"`` losses), so conservative DPO follows Mitchell's note and
``trl``'s earlier ``"sigmoid"``.

Chapter 14.
"""

from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.align.logprobs import sequence_logprobs
from groundwork.align.preference import (
    PreferenceData,
    PreferenceExample,
    collate_preferences,
    stack_pairs,
)
from groundwork.align.sft import IGNORE_INDEX
from groundwork.checks import in_range, positive_int, positive_number
from groundwork.errors import ConfigError, did_you_mean
from groundwork.train.objectives import LossOutput

__all__ = [
    "LOSS_TYPES",
    "DPOObjective",
    "LossType",
    "concatenated_logps",
    "dpo_loss",
    "precompute_reference_logps",
]

LossType = Literal["sigmoid", "ipo"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo")


def _check_settings(beta: float, loss_type: str, label_smoothing: float) -> None:
    positive_number("beta", beta)
    if loss_type not in LOSS_TYPES:
        raise ConfigError(
            f"unknown DPO loss_type {loss_type!r}: {did_you_mean(loss_type, LOSS_TYPES)}"
        )
    in_range("label_smoothing", label_smoothing, 0.0, 0.5, high_inclusive=False)
    if loss_type == "ipo" and label_smoothing:
        raise ConfigError(
            "label_smoothing is conservative DPO's, for the sigmoid loss; IPO has none: set "
            "label_smoothing=0, or loss_type='sigmoid'"
        )


# --8<-- [start:dpo_loss]
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The DPO (or IPO) loss of each pair, and the implicit rewards of its two answers.

    Args:
        policy_chosen_logps: ``(B,)`` :math:`\log \pi_\theta(y_w \mid x)` (summed over tokens).
        policy_rejected_logps: ``(B,)`` :math:`\log \pi_\theta(y_l \mid x)`.
        ref_chosen_logps: ``(B,)`` :math:`\log \pi_\text{ref}(y_w \mid x)`.
        ref_rejected_logps: ``(B,)`` :math:`\log \pi_\text{ref}(y_l \mid x)`.
        beta: :math:`\beta`, how far the policy may move from the reference (IPO's
            :math:`\tau`): larger keeps it closer.
        loss_type: ``"sigmoid"`` (DPO) or ``"ipo"``.
        label_smoothing: :math:`\varepsilon \in [0, 0.5)`, the assumed chance that a
            preference is flipped (sigmoid only).
        chosen_lengths: ``(B,)`` answer tokens of each chosen answer (IPO only).
        rejected_lengths: ``(B,)`` answer tokens of each rejected answer (IPO only).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(B,)``; the rewards are
        :math:`\beta (\log \pi_\theta - \log \pi_\text{ref})`, detached.

    Raises:
        ConfigError: ``beta <= 0``, an unknown ``loss_type``, ``label_smoothing`` outside
            ``[0, 0.5)`` or with IPO, IPO without lengths, or inputs of different shapes.
    """
    _check_settings(beta, loss_type, label_smoothing)
    shape = policy_chosen_logps.shape
    for t in (policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
        if t.shape != shape or len(shape) != 1:
            raise ConfigError(
                f"the four log-probability tensors must all be (batch,), got {tuple(shape)} and "
                f"{tuple(t.shape)}"
            )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    if loss_type == "sigmoid":
        h = chosen_logratios - rejected_logratios  # (B,)
        losses = -F.logsigmoid(beta * h)
        if label_smoothing:
            losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-beta * h)
    else:
        if chosen_lengths is None or rejected_lengths is None:
            raise ConfigError(
                "the IPO loss averages each answer's log-ratio over its tokens: pass "
                "chosen_lengths and rejected_lengths"
            )
        h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / (
            rejected_lengths.clamp(min=1)
        )  # (B,): per-token log-ratios
        losses = (h - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# --8<-- [end:dpo_loss]


def concatenated_logps(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\log \\pi(y_w \\mid x)` and :math:`\\log \\pi(y_l \\mid x)` ``(B,)`` of a preference
    batch, from one forward of the chosen and rejected sequences stacked into ``2B`` rows (as
    ``trl``; padded to one length if they are not). ``model(ids, attention_mask=...)`` gives
    ``(2B, T, V)`` logits."""
    stacked = stack_pairs(batch)  # (2B, T) each
    logps = sequence_logprobs(
        model, stacked["input_ids"], stacked["labels"], attention_mask=stacked["attention_mask"]
    )  # (2B,)
    chosen, rejected = logps.chunk(2)  # (B,), (B,)
    return chosen, rejected


def _reference_logps_of(
    model: nn.Module, pairs: Sequence[PreferenceExample], batch_size: int, pad_id: int
) -> list[PreferenceExample]:
    device = next(model.parameters()).device
    out: list[PreferenceExample] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = {
            k: v.to(device)
            for k, v in collate_preferences(
                [PreferenceExample(p.chosen, p.rejected) for p in chunk], pad_id
            ).items()
        }
        chosen, rejected = concatenated_logps(model, batch)  # (b,), (b,)
        for p, c, r in zip(chunk, chosen.tolist(), rejected.tolist(), strict=True):
            out.append(PreferenceExample(p.chosen, p.rejected, c, r))
    return out


@overload
def precompute_reference_logps(
    reference_model: nn.Module,
    pairs: PreferenceData,
    *,
    batch_size: int = 8,
    pad_id: int | None = None,
) -> PreferenceData: ...


@overload
def precompute_reference_logps(
    reference_model: nn.Module,
    pairs: Sequence[PreferenceExample],
    *,
    batch_size: int = 8,
    pad_id: int | None = None,
) -> list[PreferenceExample]: ...


def precompute_reference_logps(
    reference_model: nn.Module,
    pairs: PreferenceData | Sequence[PreferenceExample],
    *,
    batch_size: int = 8,
    pad_id: int | None = None,
) -> PreferenceData | list[PreferenceExample]:
    """The pairs with the reference model's log-probabilities of both answers filled in
    (``ref_chosen_logp``, ``ref_rejected_logp``), computed once, in eval mode and without
    gradients, ``batch_size`` pairs at a time on the model's device. After this the reference
    model is needed no more: free it before training.

    Args:
        reference_model: The frozen reference (the SFT model), ``model(ids,
            attention_mask=...) -> (B, T, V)``. Its train/eval mode is restored afterwards.
        pairs: Pairs, or :class:`PreferenceData` (training and validation pairs both done; a
            new ``PreferenceData`` with the same settings is returned).
        batch_size: Pairs per forward pass.
        pad_id: Padding id (default: the ``PreferenceData``'s, else 0); padding is masked, so
            it does not change the result.

    Returns:
        New pairs (or data); the inputs are unchanged.
    """
    positive_int("batch_size", batch_size)
    was_training = reference_model.training
    reference_model.eval()
    try:
        with torch.no_grad():
            if isinstance(pairs, PreferenceData):
                pad = pairs.pad_id if pad_id is None else pad_id
                train = _reference_logps_of(reference_model, pairs.pairs, batch_size, pad)
                val = _reference_logps_of(reference_model, pairs.val_pairs, batch_size, pad)
                return pairs.replace_pairs(train, val)
            return _reference_logps_of(reference_model, pairs, batch_size, pad_id or 0)
    finally:
        reference_model.train(was_training)


class DPOObjective:
    """The DPO loss for the training engine (``objective(model, batch) -> LossOutput``), on the
    batches of :class:`~groundwork.align.preference.PreferenceData`.

    The policy (the engine's model) reads chosen and rejected sequences as one batch of ``2B``
    rows. The reference log-probabilities come from the batch (``ref_chosen_logps``,
    ``ref_rejected_logps``: :func:`precompute_reference_logps`, the reference then no longer in
    memory) or, for batches without them, from ``reference_model`` run without gradients.

    The loss is the mean over pairs; ``items`` is the number of pairs and ``tokens`` the real
    tokens read. Metrics (means over the batch): ``rewards_chosen`` and ``rewards_rejected``
    (the implicit rewards :math:`\\beta \\log \\pi_\\theta / \\pi_\\text{ref}`), ``reward_margin``
    (their difference), ``reward_accuracy`` (the share of pairs whose chosen answer has the
    higher reward), and ``logps_chosen`` and ``logps_rejected`` (the policy's own log-probabilities
    of the answers, which DPO often lowers for both). The KL to the reference is not measurable on
    these answers (they are not the policy's samples): ``groundwork align dpo`` estimates it from
    the policy's samples after training.

    Args:
        beta: See :func:`dpo_loss`.
        loss_type: ``"sigmoid"`` (DPO) or ``"ipo"``.
        label_smoothing: See :func:`dpo_loss`.
        reference_model: A frozen reference for batches without reference log-probabilities;
            put in eval mode with its gradients off, and moved to the batches' device. Not the
            policy itself (a copy of it before training).

    Raises:
        ConfigError: Bad settings (:func:`dpo_loss`), or a batch without reference
            log-probabilities and no ``reference_model``.
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: LossType = "sigmoid",
        label_smoothing: float = 0.0,
        *,
        reference_model: nn.Module | None = None,
    ) -> None:
        _check_settings(beta, loss_type, label_smoothing)
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.reference_model = reference_model
        if reference_model is not None:
            reference_model.eval().requires_grad_(False)

    def _reference(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in batch and "ref_rejected_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        if self.reference_model is None:
            raise ConfigError(
                "the batch has no reference log-probabilities and the objective no reference "
                "model: precompute them (precompute_reference_logps) or pass reference_model"
            )
        if self.reference_model is model:
            raise ConfigError(
                "the reference model is the policy being trained: pass a frozen copy, or "
                "precompute the reference log-probabilities before training"
            )
        device = batch["chosen_input_ids"].device
        if next(self.reference_model.parameters()).device != device:
            self.reference_model.to(device)  # where the engine put the policy and the batch
        with torch.no_grad():
            return concatenated_logps(self.reference_model, batch)

    # --8<-- [start:dpo_objective]
    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        ref_chosen, ref_rejected = self._reference(model, batch)  # (B,), (B,)
        chosen, rejected = concatenated_logps(model, batch)  # (B,), (B,): one forward of 2B
        losses, rewards_chosen, rewards_rejected = dpo_loss(
            chosen,
            rejected,
            ref_chosen.to(chosen.dtype),
            ref_rejected.to(chosen.dtype),
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            chosen_lengths=(batch["chosen_labels"] != IGNORE_INDEX).sum(-1),  # (B,)
            rejected_lengths=(batch["rejected_labels"] != IGNORE_INDEX).sum(-1),  # (B,)
        )
        margin = rewards_chosen - rewards_rejected  # (B,)
        correct = (rewards_chosen > rewards_rejected).float()  # (B,)
        tokens = batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum()
        return LossOutput(
            loss=losses.mean(),
            items=len(losses),
            tokens=int(tokens),
            metrics={
                "rewards_chosen": rewards_chosen.mean(),
                "rewards_rejected": rewards_rejected.mean(),
                "reward_margin": margin.mean(),
                "reward_accuracy": correct.mean(),
                "logps_chosen": chosen.detach().mean(),
                "logps_rejected": rejected.detach().mean(),
            },
        )

    # --8<-- [end:dpo_objective]
