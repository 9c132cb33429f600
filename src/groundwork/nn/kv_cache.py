"""A preallocated key/value cache for incremental decoding.

When a decoder generates token ``t``, the keys and values of tokens ``0..t-1`` do not change
(causal attention never lets earlier tokens see later ones). Storing them turns each decoding step
from O(t) forward passes into one: only the new token's query, key and value are computed, and the
query attends over the stored keys. Chapter 5 of the docs introduces the cache; chapter 10 uses it.

The cache here is allocated once, at its full size, so decoding never reallocates memory (which
also makes it friendly to CUDA graphs and ``torch.compile``).
"""

import torch


# --8<-- [start:kv_cache]
class KVCache:
    """Keys and values of every layer, preallocated: ``(n_layers, batch, n_kv_heads, S, d_head)``.

    Attention layers call :meth:`update` with the keys and values of the new tokens and the
    position they start at; the model advances :attr:`seq_len` once all layers have written.

    Args:
        batch: Number of sequences decoded together.
        n_layers: Number of attention layers.
        n_kv_heads: Key/value heads per layer (fewer than query heads with GQA/MQA).
        max_seq_len: Longest sequence the cache can hold (``S``).
        d_head: Size of one head.
        dtype: Storage dtype.
        device: Storage device.
    """

    def __init__(
        self,
        batch: int,
        n_layers: int,
        n_kv_heads: int,
        max_seq_len: int,
        d_head: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, max_seq_len, d_head)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_seq_len = max_seq_len
        self.seq_len = 0
        """Number of positions already filled (the start position of the next tokens)."""

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` ``(B, H_kv, T, D)`` of ``layer`` at ``start_pos..start_pos+T-1``.

        Returns:
            The keys and values of positions ``0..start_pos+T-1``, ``(B, H_kv, start_pos+T, D)``:
            views into the cache, not copies.
        """
        end = start_pos + k.shape[2]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache overflow: position {end} > max_seq_len {self.max_seq_len}")
        self.k[layer, :, :, start_pos:end] = k
        self.v[layer, :, :, start_pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reset(self) -> None:
        """Forget every stored position (the memory stays allocated)."""
        self.seq_len = 0


# --8<-- [end:kv_cache]
