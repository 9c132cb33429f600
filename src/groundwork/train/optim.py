r"""AdamW with parameter groups, and gradient clipping by global norm.

AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization") keeps running moments of
the gradient $g_t$,

$$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, $$

and steps $\theta_t = \theta_{t-1} - \eta_t\,(\hat m_t / (\sqrt{\hat v_t} + \epsilon)
+ \lambda \theta_{t-1})$ with bias-corrected $\hat m_t, \hat v_t$. The decay
$\lambda\theta$ is *decoupled* from the adaptive step. As in GPT-2/3 and Llama, we do not decay
biases, norm gains or embeddings: shrinking them to zero is not a sensible prior (norm gains start
at one, embeddings are looked up rather than multiplied). Chapter 8 (Training).
"""

from collections.abc import Iterable

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed group (matrices of linear layers, and the
    stacked ``(E, out, in)`` weights of mixture-of-experts layers) and a group without decay
    (biases, norm weights, embeddings; a stacked bias ``(E, out)`` such as ``up_bias`` is a bias
    by its name though it has two dimensions). Tied parameters appear once.

    Returns:
        Two groups for ``torch.optim.AdamW``, each with ``params``, ``weight_decay`` and ``names``.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    for name, p in model.named_parameters():  # named_parameters() skips tied duplicates
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and id(p) not in embeddings and not name.endswith("bias"):
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; ``fused`` defaults to on for CUDA parameters."""
    groups = parameter_groups(model, weight_decay)
    if fused is None:
        fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=betas,
        eps=eps,
        fused=fused or None,
    )


# --8<-- [start:clip]
def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    r"""Rescale gradients so that their global L2 norm is at most ``max_norm``.

    The global norm is $\lVert g \rVert = \sqrt{\sum_i \lVert g_i \rVert^2}$ over every
    parameter; when it exceeds ``max_norm`` every gradient is multiplied by
    ``max_norm / ||g||``, which keeps the update's direction and bounds its size. Returns the norm
    before clipping (for logging). ``max_norm <= 0`` disables clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    )
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(grads, scale.to(grads[0].device))
    return norm


# --8<-- [end:clip]
