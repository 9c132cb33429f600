"""Numbers shared by training and evaluation: nats, bits, bytes and perplexity.

A language model's summed loss in nats over a text, divided by ``ln 2`` and by the text's UTF-8
bytes, is its bits per byte: a measure that compares models with different tokenizers
(chapter 1, Language models; chapter 8, Training; chapter 11, Evaluation).
"""

import math


def bits_per_byte(total_nats: float, n_bytes: float) -> float:
    """Convert a summed loss in nats over some text to bits per UTF-8 byte of that text.

    >>> round(bits_per_byte(math.log(2) * 100, 100), 6)
    1.0
    """
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return total_nats / math.log(2) / n_bytes


def loss_to_bits_per_byte(loss_per_token: float, bytes_per_token: float | None) -> float | None:
    """Mean nats per token and mean UTF-8 bytes per token -> bits per byte (``None`` if the bytes
    per token are unknown).

    >>> loss_to_bits_per_byte(math.log(2) * 4, 2.0)
    2.0
    """
    if not bytes_per_token:
        return None
    return bits_per_byte(loss_per_token, bytes_per_token)
