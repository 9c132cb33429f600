r"""Training objectives: causal language modelling with teacher forcing.

A causal LM is trained to predict token ``t+1`` from tokens ``<= t``. With teacher forcing every
position of a sequence is a training example at once: the model reads the true prefix (never its own
samples), and the targets are the inputs shifted left by one. The loss is the mean cross-entropy

$$ \mathcal{L} = -\frac{1}{N} \sum_{t} \log p_\theta(x_{t+1} \mid x_{\le t}) $$

in nats per token; dividing the summed nats by ``ln 2`` and by the number of UTF-8 bytes of the
text gives bits per byte, which compares models with different tokenizers.

Chapter 8 (Training) derives this; chapter 1 (Language models) relates it to perplexity.
"""

import math

import torch
import torch.nn.functional as F

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


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """Convert a summed loss in nats over some text to bits per UTF-8 byte of that text.

    >>> round(bits_per_byte(math.log(2) * 100, 100), 6)
    1.0
    """
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return total_nats / math.log(2) / n_bytes
