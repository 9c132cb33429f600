r"""Knowledge distillation: a small *student* trained to match a large *teacher*'s next-token
distributions (Hinton logit distillation), as an objective of the training engine.

**Soft targets** (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
Network"). A one-hot target says which token came next; the teacher's distribution says also
how plausible every other token was ("dark knowledge"). Both distributions are softened by a
temperature :math:`\tau`,

$$ p_T^\tau = \mathrm{softmax}(z_T / \tau), \qquad p_S^\tau = \mathrm{softmax}(z_S / \tau), $$

and the student minimises, at every real (non-ignored) position, a mix of the soft loss and the
ordinary cross-entropy with the true next token :math:`y`:

$$ \mathcal{L} = \alpha\,\tau^2\,\mathrm{KL}(p_T^\tau \,\|\, p_S^\tau)
   + (1 - \alpha)\,\mathrm{CE}(\mathrm{softmax}(z_S), y). $$

The gradient of the soft term with respect to the student's logits is

$$ \frac{\partial}{\partial z_S}\,\tau^2\,\mathrm{KL}(p_T^\tau \,\|\, p_S^\tau)
   = \tau^2 \cdot \frac{1}{\tau}\,(p_S^\tau - p_T^\tau) = \tau\,(p_S^\tau - p_T^\tau) $$

(the KL is the cross-entropy :math:`-\sum_i p_{T,i}^\tau \log p_{S,i}^\tau` less the teacher's
entropy, which does not depend on :math:`z_S`, and a softmax cross-entropy's gradient with
respect to its input :math:`z_S/\tau` is :math:`p_S^\tau - p_T^\tau`). Without the
:math:`\tau^2` the gradient would be :math:`(p_S^\tau - p_T^\tau)/\tau`, and at a high
temperature, where :math:`p^\tau \approx (1 + z/\tau)/V` for zero-mean logits, that is
:math:`(z_S - z_T)/(V\tau^2)`: the soft gradients shrink as :math:`1/\tau^2`. Multiplying by
:math:`\tau^2` (Hinton et al.) keeps the soft and hard terms of comparable size whatever the
temperature, so :math:`\alpha` means the same at every :math:`\tau`. Both terms are means over
the real tokens (targets ``!= ignore_index``); padding and masked positions contribute nothing
to either.

**Sequence-level distillation** (Kim and Rush 2016, "Sequence-Level Knowledge Distillation")
needs no objective of its own: the teacher *generates* (greedy or beam search) and the student
is trained with the ordinary :class:`~groundwork.train.objectives.CausalLMObjective` on the
teacher's outputs. Generation is layer 4 and this module is layer 3, so the data side
(:func:`~groundwork.compress.distill_data.teacher_sequences`) lives in
:mod:`groundwork.compress.distill_data`.

The teacher is held by the objective, never by the student: it is run in eval mode under
``torch.no_grad()``, its parameters have ``requires_grad`` off, and since the engine builds the
optimizer from the student's parameters and saves the student's state dict, the teacher is
neither trained nor written to the run directory. Teacher and student must share a vocabulary
(the same tokenizer): the KL compares their distributions id by id.

Chapter 18 (Efficient inference and compression: distillation).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.train.objectives import IGNORE_INDEX, LossOutput

__all__ = [
    "DistillationLoss",
    "HintonDistillationObjective",
    "check_distillation_settings",
    "check_same_vocabulary",
    "distillation_loss",
]


def check_distillation_settings(temperature: float, alpha: float) -> None:
    """Refuse a temperature that is not positive and finite, or an ``alpha`` outside [0, 1].

    Raises:
        ConfigError: naming the bad setting.
    """
    if not 0 < temperature < float("inf"):
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ConfigError(
            f"alpha (the weight of the soft loss) must be in [0, 1], got {alpha!r}; "
            "0 is plain cross-entropy, 1 the soft loss alone"
        )


def _vocab_of(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None)
    return None if size is None else int(size)


def check_same_vocabulary(teacher: nn.Module | int, student: nn.Module | int) -> None:
    """Refuse a teacher and a student whose vocabulary sizes differ (models, or the sizes).

    Raises:
        ConfigError: the sizes differ; distillation needs the same tokenizer for both.
    """
    t = teacher if isinstance(teacher, int) else _vocab_of(teacher)
    s = student if isinstance(student, int) else _vocab_of(student)
    if t is not None and s is not None and t != s:
        raise ConfigError(
            f"teacher and student vocabularies differ: the teacher has {t} token ids, the "
            f"student {s}. Distillation compares their next-token distributions id by id, so "
            "the student must use the teacher's tokenizer (vocab_size = the teacher's)"
        )


@dataclass
class DistillationLoss:
    """What :func:`distillation_loss` returns."""

    loss: torch.Tensor
    """``alpha * soft + (1 - alpha) * hard``, the scalar to backpropagate."""
    soft: torch.Tensor
    """``tau^2 KL(p_T^tau || p_S^tau)``, the mean over the real tokens."""
    hard: torch.Tensor
    """Cross-entropy of the student with the true next tokens, the mean over the real tokens."""
    tokens: int
    """The number of real (non-ignored) positions the means are over."""


# --8<-- [start:hinton]
def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    ignore_index: int = IGNORE_INDEX,
) -> DistillationLoss:
    r"""Hinton et al.'s distillation loss: :math:`\alpha\,\tau^2\,\mathrm{KL}(p_T^\tau \|
    p_S^\tau) + (1-\alpha)\,\mathrm{CE}(z_S, y)`, each a mean over the real tokens.

    Args:
        student_logits: ``(..., V)`` the student's next-token scores (e.g. ``(B, T, V)``).
        teacher_logits: ``(..., V)`` the teacher's, same shape (no gradient flows into them).
        targets: ``(...)`` the true next tokens, ``ignore_index`` where no loss is wanted.
        temperature: :math:`\tau > 0`; 1 compares the plain distributions.
        alpha: Weight of the soft loss in [0, 1] (0: plain cross-entropy).
        ignore_index: Target value whose positions are skipped by both terms.

    Returns:
        The total, the soft and hard parts (scalars, computed in fp32), and the number of real
        tokens. With no real token the three are 0, still attached to the student's graph.

    Raises:
        ConfigError: bad ``temperature`` or ``alpha``; the logits' vocabularies differ; the
            shapes do not match.
    """
    check_distillation_settings(temperature, alpha)
    check_same_vocabulary(teacher_logits.shape[-1], student_logits.shape[-1])
    if student_logits.shape != teacher_logits.shape or student_logits.shape[:-1] != targets.shape:
        raise ConfigError(
            f"shapes differ: student logits {tuple(student_logits.shape)}, teacher logits "
            f"{tuple(teacher_logits.shape)}, targets {tuple(targets.shape)}"
        )
    keep = targets != ignore_index  # (...)
    z_s = student_logits[keep].float()  # (N, V): only the real positions
    z_t = teacher_logits[keep].detach().float()  # (N, V)
    y = targets[keep]  # (N,)
    n = y.numel()
    if n == 0:
        zero = student_logits.sum().float() * 0.0
        return DistillationLoss(loss=zero, soft=zero.detach(), hard=zero.detach(), tokens=0)
    tau = float(temperature)
    log_p_s = F.log_softmax(z_s / tau, dim=-1)  # (N, V) log p_S^tau
    log_p_t = F.log_softmax(z_t / tau, dim=-1)  # (N, V) log p_T^tau
    # KL(p_T || p_S) = sum_i p_T,i (log p_T,i - log p_S,i), summed over the vocabulary
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (N,)
    soft = tau**2 * kl.mean()  # tau^2 keeps the soft gradients' scale independent of tau
    hard = F.cross_entropy(z_s, y)  # (1/N) sum -log p_S(y)
    loss = alpha * soft + (1 - alpha) * hard
    return DistillationLoss(loss=loss, soft=soft, hard=hard, tokens=n)


class HintonDistillationObjective:
    """Logit distillation for the engine: batches ``(x, y)`` of ``(B, T)`` token ids and next
    tokens (as :class:`~groundwork.train.objectives.CausalLMObjective`'s); the loss is
    :func:`distillation_loss` of the student's and the teacher's logits on ``x``.

    Args:
        teacher: A causal LM with the student's vocabulary. Put in eval mode with its
            gradients off; moved to the batches' device on first use. Not the student itself.
        temperature: :math:`\\tau` softening both distributions (Hinton et al. used 1-20; 2 is
            common for language models).
        alpha: Weight of the soft loss; ``1 - alpha`` weighs the cross-entropy with the data.

    Logs the metrics ``soft_loss`` (:math:`\\tau^2` KL) and ``hard_loss`` (the cross-entropy,
    the plain language-modelling loss). ``items`` is the number of real target tokens.
    """

    def __init__(self, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5) -> None:
        check_distillation_settings(temperature, alpha)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's ``(B, T, V)`` logits on ``x``, in eval mode, without gradients."""
        if self.teacher.training:  # something called .train() on it: dropout must stay off
            self.teacher.eval()
        param = next(self.teacher.parameters(), None)
        if param is not None and param.device != x.device:
            self.teacher.to(x.device)  # where the engine put the student and the batch
        return self.teacher(x)

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
        if model is self.teacher or _unwrapped(model) is self.teacher:
            raise ConfigError("the teacher is the model being trained: pass a separate student")
        x, y = batch
        logits = model(x)  # (B, T, V) the student's, with gradients
        out = distillation_loss(
            logits, self.teacher_logits(x), y, temperature=self.temperature, alpha=self.alpha
        )
        return LossOutput(
            loss=out.loss,
            items=out.tokens,
            tokens=x.numel(),
            metrics={"soft_loss": out.soft.detach(), "hard_loss": out.hard.detach()},
        )


# --8<-- [end:hinton]


def _unwrapped(model: nn.Module) -> Any:
    """The module inside a DDP or compiled wrapper (``module`` / ``_orig_mod``), else ``model``."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))
