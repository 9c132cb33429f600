"""A preallocated key/value cache for incremental decoding.

When a decoder generates token ``t``, the keys and values of tokens ``0..t-1`` do not change
(causal attention never lets earlier tokens see later ones). Storing them turns each decoding step
from O(t) forward passes into one: only the new token's query, key and value are computed, and the
query attends over the stored keys. Chapter 5 of the docs introduces the cache; chapter 10 uses it.

The cache here is allocated once, at its full size, so decoding never reallocates memory (which
also makes it friendly to CUDA graphs and ``torch.compile``). :class:`StaticKVCache` goes one
step further for compiled decoding (:mod:`groundwork.generate.static`): after the prompt, every
step has the same shapes: the new keys are written at a position held in a tensor and attention
reads all ``S`` slots with a mask of the filled ones.
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
        n_kv_heads: Key/value heads per layer (fewer than query heads with GQA/MQA); where
            layers differ (heads pruned), the most of any layer.
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
        keys, values = self.tensors(layer)  # (B, H_kv, S, D)
        end, heads = start_pos + k.shape[2], self.heads(layer, k)
        if end > self.max_seq_len:
            raise ValueError(f"KV cache overflow: position {end} > max_seq_len {self.max_seq_len}")
        keys[:, :heads, start_pos:end] = k
        values[:, :heads, start_pos:end] = v
        return keys[:, :heads, :end], values[:, :heads, :end]

    def tensors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole storage of ``layer``'s keys and values, ``(B, H_kv, S, D)`` each."""
        return self.k[layer], self.v[layer]

    def heads(self, layer: int, k: torch.Tensor) -> int:
        """The key/value heads ``k`` ``(B, H_kv, T, D)`` brings to ``layer``: the cache holds
        the most any layer has, and a layer with fewer (its heads pruned) uses the first
        ``H_kv`` of them.

        Raises:
            ValueError: more heads than the cache holds.
        """
        heads, held = k.shape[1], self.tensors(layer)[0].shape[1]
        if heads > held:
            raise ValueError(
                f"layer {layer} has {heads} key/value heads but the KV cache holds {held}: make "
                "the cache with the model's new_kv_cache"
            )
        return heads

    def reset(self) -> None:
        """Forget every stored position (the memory stays allocated)."""
        self.seq_len = 0


# --8<-- [end:kv_cache]


# --8<-- [start:static_kv_cache]
class StaticKVCache(KVCache):
    """A :class:`KVCache` whose decoding steps all have the same shapes, for ``torch.compile``.

    The prompt is written as in :class:`KVCache` (:meth:`update` at ``start_pos``, returning the
    filled prefix). :meth:`start_decoding` then switches to *decode mode*: each step writes its
    one new key and value at :attr:`index`, a ``(1,)`` tensor (``index_copy_``), and
    :meth:`update` returns the whole ``(B, H_kv, S, D)`` cache; :meth:`key_mask` gives attention
    the ``(B, 1, 1, S)`` mask of the slots filled so far (:attr:`filled`; padding and unwritten
    slots are hidden). Nothing in a step depends on a Python number that changes, so one
    compiled graph (or one CUDA graph) serves every step. In decode mode :attr:`seq_len` stays
    ``max_seq_len - 1`` for the models, which read it as "the new token comes after the
    ``seq_len`` keys before it": with ``T = 1`` they attend over all ``S`` slots. The position
    ids must then be given to the model (the default ``seq_len..`` would be wrong).

    Args: as :class:`KVCache`.
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
        # One tensor per layer, not KVCache's one stacked tensor: a compiled step that writes
        # into a view of a shared buffer gets a copy of that whole buffer for every layer that
        # writes (functionalisation of a mutated alias), 30 layers of cache copied 30 times on
        # SmolLM2; a tensor of its own is written in place.
        shape = (batch, n_kv_heads, max_seq_len, d_head)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        """Per layer, ``(B, H_kv, S, D)``."""
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        """Per layer, ``(B, H_kv, S, D)``."""
        self.max_seq_len = max_seq_len
        self.seq_len = 0
        self.filled = torch.zeros((batch, max_seq_len), dtype=torch.bool, device=device)
        """``(B, S)``: True where a slot holds a key a query may attend to."""
        self.index = torch.zeros((1,), dtype=torch.long, device=device)
        """``(1,)``: the slot the next decoding step writes."""
        self.decoding = False
        """Whether the cache is in decode mode (see the class docstring)."""
        mark_static = getattr(getattr(torch, "_dynamo", None), "mark_static_address", None)
        if mark_static is not None:  # CUDA graphs may then keep these buffers in place
            for t in (*self.keys, *self.values, self.filled, self.index):
                mark_static(t)

    def start_decoding(self, attention_mask: torch.Tensor | None = None) -> None:
        """Switch to decode mode after the prompt's ``seq_len`` positions were written.

        Args:
            attention_mask: ``(B, seq_len)`` 1 for the prompt's tokens, 0 for (left) padding;
                None: every position is a token.
        """
        n = self.seq_len
        self.filled.zero_()
        if attention_mask is None:
            self.filled[:, :n] = True
        else:
            self.filled[:, :n] = attention_mask[:, :n].bool()
        self.index.fill_(n)
        self.decoding = True
        self.seq_len = self.max_seq_len - 1

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`KVCache.update` before :meth:`start_decoding`; in decode mode, write the
        step's ``k, v`` ``(B, H_kv, 1, D)`` at :attr:`index` (``start_pos`` is ignored) and
        return the whole cache ``(B, H_kv, S, D)`` of ``layer``."""
        if not self.decoding:
            return super().update(layer, k, v, start_pos)
        keys, values = self.tensors(layer)  # (B, H_kv, S, D)
        heads = self.heads(layer, k)
        if heads < keys.shape[1]:  # a layer with pruned heads uses the first ones
            keys, values = keys[:, :heads], values[:, :heads]
        keys.index_copy_(2, self.index, k.to(keys.dtype))
        values.index_copy_(2, self.index, v.to(values.dtype))
        return keys, values

    def tensors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`KVCache.tensors`: this cache's per-layer tensors."""
        return self.keys[layer], self.values[layer]

    def key_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask attention uses with what :meth:`update` returned: the model's ``mask``
        before decoding, the ``(B, 1, 1, S)`` filled slots in decode mode (where the model's
        own mask must be None: a bias such as ALiBi's is not supported)."""
        if not self.decoding:
            return mask
        if mask is not None:
            raise ValueError(
                "a static KV cache decodes models whose attention needs no mask of its own "
                "(no ALiBi bias); use groundwork.generate.generate for this model"
            )
        return self.filled[:, None, None, :]  # (B, 1, 1, S)

    def advance(self) -> None:
        """Mark the slot at :attr:`index` filled (before a step) — in place, shapes fixed."""
        self.filled.index_fill_(1, self.index, True)

    def step_done(self) -> None:
        """Move :attr:`index` to the next slot (after a step) and keep ``seq_len`` fixed."""
        self.index.add_(1)
        self.seq_len = self.max_seq_len - 1

    def reset(self) -> None:
        """Forget every stored position and leave decode mode (the memory stays allocated)."""
        super().reset()
        self.decoding = False
        self.filled.zero_()
        self.index.zero_()


# --8<-- [end:static_kv_cache]
