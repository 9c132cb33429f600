r"""Training objectives: causal language modelling with teacher forcing.

A causal LM is trained to predict token ``t+1`` from tokens ``<= t``. With teacher forcing every
position of a sequence is a training example at once: the model reads the true prefix (never its own
samples), and the targets are the inputs shifted left by one. The loss is the mean cross-entropy

$$ \mathcal{L} = -\frac{1}{N} \sum_{t} \log p_\theta(x_{t+1} \mid x_{\le t}) $$

in nats per token; dividing the summed nats by ``ln 2`` and by the number of UTF-8 bytes of the
text gives bits per byte, which compares models with different tokenizers.

Chapter 8 (Training) derives this; chapter 1 (Language models) relates it to perplexity.

**Objectives for the engine.** The training engine (:func:`groundwork.train.engine.train`) knows
nothing of what is learned: it hands each batch to an *objective*, a callable
``objective(model, batch) -> LossOutput`` that runs the model and returns the mean loss (a scalar
tensor), how many items the mean is over, and optionally the input tokens read and extra metrics
to log. Two are here:

* :class:`CausalLMObjective`: batches ``(x, y)`` of ``(B, T)`` token ids and next tokens; the
  model maps ``x`` to ``(B, T, V)`` logits; the loss is :func:`causal_lm_loss`.
* :class:`ClassificationObjective`: batches ``(ids (B, L), lengths (B,), labels (B,))``; the
  model is called as ``model(ids, lengths)`` and gives ``(B, C)`` logits; the loss is the mean
  cross-entropy over the examples.

Adding an objective (masked LM, span corruption, SFT, a reward model, DPO, distillation, an MoE
auxiliary loss) is one small class with a ``__call__`` like these, plus, if its batches are of a
new kind, a :class:`groundwork.train.data.TrainData`; the loop itself is not copied. An objective
that needs more than the model (a frozen reference model for DPO, a teacher for distillation)
holds it as an attribute.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.numerics import bits_per_byte

__all__ = [
    "IGNORE_INDEX",
    "CausalLMObjective",
    "ClassificationObjective",
    "LossOutput",
    "Objective",
    "bits_per_byte",
    "causal_lm_loss",
    "shift_for_causal_lm",
]

IGNORE_INDEX = -100
"""Targets equal to this value (padding, masked prompt tokens) contribute nothing to the loss."""


# --8<-- [start:causal_lm_loss]
def causal_lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy in nats per (non-ignored) target token.

    Args:
        logits: ``(B, T, V)`` scores for the next token at every position.
        targets: ``(B, T)`` the true next tokens (inputs shifted left by one), ``ignore_index``
            where no loss is wanted.
        ignore_index: Target value that is skipped.

    Returns:
        A scalar tensor, computed in fp32 whatever the logits' dtype.
    """
    B, T, V = logits.shape
    return F.cross_entropy(
        logits.reshape(B * T, V).float(),  # (B*T, V)
        targets.reshape(B * T),  # (B*T,)
        ignore_index=ignore_index,
    )


# --8<-- [end:causal_lm_loss]


def shift_for_causal_lm(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a ``(B, T+1)`` block of tokens into inputs ``[:, :-1]`` and targets ``[:, 1:]``.

    >>> x, y = shift_for_causal_lm(torch.tensor([[5, 6, 7, 8]]))
    >>> x.tolist(), y.tolist()
    ([[5, 6, 7]], [[6, 7, 8]])
    """
    return tokens[:, :-1], tokens[:, 1:]


@dataclass
class LossOutput:
    """What an objective returns for one batch."""

    loss: torch.Tensor
    """The mean loss over the batch's items, a scalar tensor (backpropagated by the engine)."""
    items: int
    """What the mean is over (predicted tokens, examples, pairs): weights validation means."""
    tokens: int | None = None
    """Input tokens read, for tokens/s and MFU (None: the same as ``items``)."""
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    """Extra scalars to log with the training loss (e.g. an auxiliary loss, accuracy)."""


class Objective(Protocol):
    """A training objective: runs ``model`` on ``batch`` and returns the loss to minimise."""

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput: ...


# --8<-- [start:objectives]
class CausalLMObjective:
    """Next-token prediction with teacher forcing: batches ``(x, y)`` of shape ``(B, T)``."""

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
        x, y = batch
        logits = model(x)  # (B, T, V)
        return LossOutput(loss=causal_lm_loss(logits, y), items=y.numel())


class ClassificationObjective:
    """One label per sequence: batches ``(ids (B, L), lengths (B,), labels (B,))``, the model
    called as ``model(ids, lengths)`` giving ``(B, C)`` logits; mean cross-entropy."""

    def __call__(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> LossOutput:
        ids, lengths, labels = batch
        logits = model(ids, lengths)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels)
        return LossOutput(loss=loss, items=labels.numel(), tokens=int(lengths.sum()))


# --8<-- [end:objectives]
