r"""FT-L: constrained fine-tuning of one MLP output projection, the baseline ROME is compared
against (Meng et al. 2022, the FT-L of its comparisons; the constraint is Zhu et al. 2020's).

**The objective.** For edit requests :math:`(p_i, o_i)`, a prompt and the new target's tokens
:math:`o_i = (o_{i,1}, \dots, o_{i,m_i})`, minimise the teacher-forced negative log-likelihood
of the targets averaged over each target's tokens and then over the requests,

.. math:: \mathcal L(W) = \frac1n \sum_i \frac1{m_i} \sum_j
   -\log p_W\bigl(o_{i,j} \mid p_i\, o_{i,<j}\bigr),

over a single matrix: :math:`W`, layer ``layer``'s MLP output projection (``down_proj``, the
matrix ROME rewrites with a rank-one update). Every other parameter stays frozen, so the
comparison with ROME is about *how* the same matrix is changed, not where.

**The constraint.** Zhu et al. (2020) observe that unconstrained fine-tuning on a handful of
facts rewrites far more than those facts; they keep the new weights in an :math:`L_\infty`
ball around the old, :math:`\lVert W - W_0 \rVert_\infty \le \epsilon`, by projecting after
each step: every entry is clamped to :math:`[W_{0,jk} - \epsilon, W_{0,jk} + \epsilon]`.
Adam with learning rate ``lr`` moves each entry by about ``lr`` per step whatever the
gradient's size, so :math:`\epsilon` is what limits the edit: after
:math:`\epsilon / \text{lr}` steps every entry the gradient pushes consistently is at its
bound.

**The defaults.** ROME's FT-L runs 25 Adam steps at lr :math:`5 \times 10^{-4}` without
weight decay, and stops once the loss is below :math:`10^{-2}`, as here. Its :math:`\epsilon`
shrinks as the model grows (``hparams/FT/*_constr.json``: :math:`2 \times 10^{-3}` for GPT-2
medium, :math:`10^{-3}` for GPT-2 large, :math:`5 \times 10^{-4}` for GPT-2 XL, all at layer 0;
:math:`5 \times 10^{-5}` for GPT-J): a wider matrix has more entries to share a change.
SmolLM2-135M is smaller than GPT-2 medium, so the default here is the medium model's
:math:`\epsilon =` ``2e-3`` (:data:`DEFAULT_NORM_CONSTRAINT`); ``norm_constraint=None`` is
plain fine-tuning (FT). On SmolLM2, moving the Eiffel Tower to Rome at layer 0 ("The Eiffel
Tower is located in the city of" -> " Rome", p = 0.006 before), 25 steps reach p(" Rome") =
0.008 at :math:`\epsilon = 5 \times 10^{-5}`, 0.18 at :math:`5 \times 10^{-4}`, 0.93 at
:math:`10^{-3}` and 0.99 at :math:`2 \times 10^{-3}` (0.96 on a paraphrase, while "The
capital of Germany is the city of" -> " Berlin" stays at 0.92); the same :math:`\epsilon` buys
less at deeper layers (0.85 at layer 2, 0.67 at layer 4). The entries of SmolLM2's
``down_proj`` have a standard deviation of about 0.19, so even :math:`2 \times 10^{-3}` is a
1% nudge to each. The bound holds up to the rounding of :math:`W_0 \pm \epsilon` in the
weight's dtype (half a unit in the last place).

Two details differ from the reference. It scores every target token against the
distribution at the prompt's *last* position (no teacher forcing: a multi-token target is
treated as a bag of tokens); here each target token is predicted from the prompt and the
target tokens before it. And it places the edit at layer 0 by default; here the layer is a
required argument (the MLP peak of :mod:`~groundwork.edit.tracing`'s causal trace, or ROME's
layer, makes a like-for-like comparison).

References:
    - Zhu, Rawat, Zaheer, Bhojanapalli, Li, Yu & Kumar 2020, "Modifying Memories in
      Transformer Models" (arXiv 2012.00363): the :math:`L_\infty`-constrained fine-tuning.
    - Meng, Bau, Andonian & Belinkov 2022, "Locating and Editing Factual Associations in GPT"
      (arXiv 2202.05262), the FT and FT-L baselines; reference code kmeng01/rome
      (``baselines/ft/ft_main.py``, ``hparams/FT``).
    - Docs: chapter 19, "Model editing".
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.edit.layers import check_layer, mlp_out_proj
from groundwork.edit.request import EditRequest, as_requests, check_fits
from groundwork.errors import ConfigError
from groundwork.tokenize.base import Tokenizer

DEFAULT_NORM_CONSTRAINT = 2e-3
"""The default :math:`\\epsilon`: ROME's FT-L value for GPT-2 medium, the nearest of its
models to SmolLM2-135M in size (see the module docstring)."""

STOP_LOSS = 1e-2
"""Fine-tuning stops once the average target NLL is below this (ROME's rule)."""


def _batch(
    model: nn.Module, tokenizer: Tokenizer, requests: Sequence[EditRequest]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing inputs for the requests, right-padded: ids ``(n, T)``, the target token
    predicted at each position ``(n, T)`` and a mask of those positions ``(n, T)``. The prompt
    and the target are tokenised separately (the target's leading space is its own)."""
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    rows: list[tuple[list[int], list[int]]] = []
    for r in requests:
        prompt, target = tokenizer.encode(r.prompt), tokenizer.encode(r.target)
        if not target:
            raise ConfigError(f"the target {r.target!r} tokenises to nothing")
        if limit is not None:
            check_fits(len(prompt) + len(target), limit)
        rows.append((prompt, target))
    T = max(len(p) + len(t) - 1 for p, t in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    labels = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T)
    for i, (prompt, target) in enumerate(rows):
        seq = prompt + target[:-1]  # the last target token is predicted, never read
        ids[i, : len(seq)] = torch.tensor(seq)
        first = len(prompt) - 1  # position whose next-token distribution is target[0]
        labels[i, first : first + len(target)] = torch.tensor(target)
        mask[i, first : first + len(target)] = 1.0
    device = next(model.parameters()).device
    return ids.to(device), labels.to(device), mask.to(device)


def _nll(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each request's target NLL averaged over its tokens, ``(n,)``. Right padding needs no
    attention mask: the pad tokens come after every position that is scored."""
    ids, labels, mask = batch
    logits = model(ids).float()  # (n, T, V)
    logp = F.log_softmax(logits, dim=-1).gather(-1, labels[..., None])[..., 0]  # (n, T)
    return -(logp * mask).sum(dim=1) / mask.sum(dim=1)


@torch.no_grad()
def target_nll(
    model: nn.Module, tokenizer: Tokenizer, requests: EditRequest | Sequence[EditRequest]
) -> torch.Tensor:
    """``(n,)``: each request's teacher-forced negative log-likelihood of its target, averaged
    over the target's tokens (what :func:`apply_ft` minimises)."""
    return _nll(model, _batch(model, tokenizer, as_requests(requests))).cpu()


def apply_ft(
    model: nn.Module,
    tokenizer: Tokenizer,
    requests: EditRequest | Sequence[EditRequest],
    *,
    layer: int,
    steps: int = 25,
    lr: float = 5e-4,
    norm_constraint: float | None = DEFAULT_NORM_CONSTRAINT,
) -> tuple[nn.Module, torch.Tensor]:
    """Fine-tune layer ``layer``'s MLP output projection to make the requests' targets likely,
    keeping each entry within ``norm_constraint`` of its original value (FT-L).

    Args:
        model: A decoder LM (Llama, SmolLM2, GPT); edited in place. It is run in eval mode
            (no dropout); its mode and every parameter's ``requires_grad`` are restored.
        tokenizer: Its tokenizer.
        requests: One :class:`~groundwork.edit.request.EditRequest` or several, fitted
            together (one batch, the mean of their NLLs).
        layer: The block whose ``mlp_out_proj`` weight is trained (its bias is not).
        steps: Adam steps at most; fewer once the mean NLL is below :data:`STOP_LOSS`.
        lr: Adam's learning rate (no weight decay).
        norm_constraint: :math:`\\epsilon` of the :math:`L_\\infty` ball around the original
            weight, enforced after every step; ``None``: unconstrained fine-tuning.

    Returns:
        The model (edited in place) and the weight's change ``(d_model, d_ff)`` (new minus
        original, in the weight's dtype).

    Raises:
        ConfigError: no requests, a layer out of range, ``steps < 1``, ``lr <= 0``, a
            ``norm_constraint`` that is not positive, a target with no tokens, or a prompt and
            target longer than the model's context.
    """
    requests = as_requests(requests)
    check_layer(model, layer)
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if norm_constraint is not None and not norm_constraint > 0:
        raise ConfigError(
            f"norm_constraint must be positive (or None for no constraint), got {norm_constraint}"
        )
    batch = _batch(model, tokenizer, requests)
    weight = mlp_out_proj(model, layer).weight
    original = weight.detach().clone()
    grad_before = {p: p.requires_grad for p in model.parameters()}
    old_grad, weight.grad = weight.grad, None
    was_training = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        weight.requires_grad_(True)
        optimizer = torch.optim.Adam([weight], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = _nll(model, batch).mean()
            if loss.item() < STOP_LOSS:
                break
            loss.backward()
            optimizer.step()
            if norm_constraint is not None:
                with torch.no_grad():  # project back onto the L-infinity ball around W_0
                    weight.copy_(
                        torch.clamp(
                            weight, min=original - norm_constraint, max=original + norm_constraint
                        )
                    )
    finally:
        for p, flag in grad_before.items():
            p.requires_grad_(flag)
        weight.grad = old_grad
        model.train(was_training)
    return model, (weight.detach() - original)
