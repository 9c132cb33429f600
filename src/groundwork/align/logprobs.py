r"""Log-probabilities of completions under a causal language model: what DPO, PPO and GRPO
compare between the policy and the reference.

A completion :math:`y` after a prompt :math:`x` has

$$ \log \pi(y \mid x) = \sum_{t \in y} \log \pi(y_t \mid x, y_{<t}), $$

the sum of the per-token log-probabilities over the completion's tokens only. Both functions
take ``labels`` as supervised fine-tuning does (:mod:`groundwork.align.sft`): ``labels[t]`` is
the token at position ``t`` where it counts and :data:`IGNORE_INDEX` elsewhere (the prompt,
padding); position ``t``'s logits predict ``labels[t + 1]``. Computed in float32 as
``logit - logsumexp(logits)``, without materialising the whole log-softmax. Chapter 14.
"""

import torch
from torch import nn

from groundwork.align.sft import IGNORE_INDEX

__all__ = ["sequence_logprobs", "token_logprobs"]


# --8<-- [start:token_logprobs]
def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token log-probabilities of the labelled next tokens.

    Args:
        logits: ``(B, T, V)`` the model's scores at every position.
        labels: ``(B, T)`` token ids, :data:`IGNORE_INDEX` where no token counts.

    Returns:
        ``(logps, mask)``, both ``(B, T - 1)``: ``logps[:, t]`` is
        :math:`\log p(\text{labels}[t+1] \mid \le t)` (0 where masked) and ``mask`` is 1.0
        where ``labels[:, t + 1]`` counts.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    scores = logits[:, :-1].float()  # (B, T-1, V)
    picked = scores.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    logps = (picked - torch.logsumexp(scores, dim=-1)) * mask
    return logps, mask.float()


# --8<-- [end:token_logprobs]


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":math:`\log \pi(y \mid x)` for each row: the summed log-probabilities of the labelled
    tokens of ``input_ids`` ``(B, T)`` under ``model`` (called as ``model(input_ids,
    attention_mask=...)``, giving ``(B, T, V)`` logits). Returns ``(B,)``."""
    logits = model(input_ids, attention_mask=attention_mask)  # (B, T, V)
    logps, _ = token_logprobs(logits, labels)
    return logps.sum(-1)  # (B,)
