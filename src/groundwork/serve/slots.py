r"""A KV cache with one row ("slot") per running request, for continuous batching.

:class:`~groundwork.nn.KVCache` serves a batch that starts together and grows together: one
``seq_len`` for every row. A server's batch is never like that. Requests arrive at any time,
with prompts of any length, and finish at any time; an *iteration-level* scheduler (Yu et al.
2022, "Orca") lets a request join the running batch between two decoding steps and leave it as
soon as it is done, instead of waiting for the slowest request of a static batch.

So each request gets a row of its own, written and read at its own length:

* **prefill** runs new requests' prompts (right-padded to one length), writing each one's keys
  and values into its row at positions ``0..L-1`` (:meth:`SlotKVCache.prefill`);
* **decode** runs the newest token of every running request as one batch: row ``b`` writes at
  its own position ``p_b`` and attends over columns ``0..p_b``; the columns past ``p_b`` (what a
  longer request has, or stale values a finished one left) are hidden by the padding mask the
  models already take (:meth:`SlotKVCache.decode`)::

        row 0   k0 k1 k2 k3 [k4]          position_ids 4    attention_mask 1 1 1 1 1 0 0
        row 1   k0 k1 [k2]  .  .          position_ids 2                   1 1 1 0 0 0 0
        row 2   k0 k1 k2 k3 k4 k5 [k6]    position_ids 6                   1 1 1 1 1 1 1

* the running requests always occupy rows ``0..B-1``: when one leaves, the last row is moved
  into its place (:meth:`SlotKVCache.move`), so the batch is a slice (a view, not a gather).

The model code does not change: the views below speak :class:`~groundwork.nn.KVCache`'s
protocol (``update(layer, k, v, start_pos)`` and ``seq_len``). Memory is reserved up front,
``slots x max_len`` positions per layer; vLLM's *paged attention* (Kwon et al. 2023) instead
hands out fixed-size blocks on demand, so a short request does not hold a full row — the
price of rows here is that ``max_len`` bounds prompt plus completion. Chapter 10 (Decoding),
section "Serving".
"""

import torch

from groundwork.nn import KVCache


# --8<-- [start:slots]
class SlotKVCache:
    """Keys and values ``(n_layers, slots, n_kv_heads, max_len, d_head)``, one row per request.

    Args:
        storage: An empty :class:`~groundwork.nn.KVCache` of batch ``slots`` (what the model's
            ``new_kv_cache(slots, max_len)`` gives); its tensors are used, not copied.
    """

    def __init__(self, storage: KVCache) -> None:
        self.k, self.v = storage.k, storage.v
        self.slots = storage.k.shape[1]
        self.max_len = storage.max_seq_len

    def prefill(self, slot: int, count: int = 1) -> "PrefillView":
        """A batch-``count`` cache writing rows ``slot..slot+count-1`` from position 0 (new
        requests' prompts)."""
        if not (slot >= 0 and count >= 1 and slot + count <= self.slots):
            raise ValueError(f"rows {slot}..{slot + count - 1} are outside 0..{self.slots - 1}")
        return PrefillView(self, slot, count)

    def decode(self, positions: torch.Tensor) -> tuple["DecodeView", torch.Tensor]:
        """A cache for one decoding step of rows ``0..B-1``, row ``b`` writing at
        ``positions[b]``; returns it with the ``(B, max(positions) + 1)`` attention mask."""
        top = int(positions.max()) + 1
        if top > self.max_len:
            raise ValueError(f"KV cache overflow: position {top} > max_len {self.max_len}")
        columns = torch.arange(top, device=positions.device)
        mask = (columns[None, :] <= positions[:, None]).long()  # (B, top)
        return DecodeView(self, positions), mask

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of row ``src`` into row ``dst`` (every layer)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]


class PrefillView(KVCache):
    """Rows ``slot..slot+count-1`` of a :class:`SlotKVCache` as a :class:`~groundwork.nn.KVCache`
    of batch ``count``, all starting at position 0."""

    def __init__(self, cache: SlotKVCache, slot: int, count: int) -> None:  # shares memory
        self.cache, self.rows = cache, slice(slot, slot + count)
        self.max_seq_len = cache.max_len
        self.seq_len = 0

    def tensors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of ``layer``'s keys and values, ``(count, H_kv, max_len, D)`` views: what
        :meth:`KVCache.update` writes into and returns."""
        return self.cache.k[layer, self.rows], self.cache.v[layer, self.rows]


class DecodeView(KVCache):
    """Rows ``0..B-1`` of a :class:`SlotKVCache`, each writing one token at its own position.

    ``seq_len`` is the longest row's length, so the model reads ``max(positions) + 1`` columns
    (its ``start_pos``); the attention mask from :meth:`SlotKVCache.decode` hides, in each row,
    the columns past its own position.
    """

    def __init__(self, cache: SlotKVCache, positions: torch.Tensor) -> None:
        self.cache, self.positions = cache, positions
        self.rows = torch.arange(len(positions), device=positions.device)
        self.max_seq_len = cache.max_len
        self.seq_len = int(positions.max())

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` ``(B, H_kv, 1, D)`` of row ``b`` at ``positions[b]``; return
        ``(B, H_kv, start_pos + 1, D)`` views of rows ``0..B-1``."""
        (B, h), end = k.shape[:2], start_pos + 1
        self.cache.k[layer, self.rows, :h, self.positions] = k[:, :, 0]  # (B, H_kv, D)
        self.cache.v[layer, self.rows, :h, self.positions] = v[:, :, 0]
        return self.cache.k[layer, :B, :h, :end], self.cache.v[layer, :B, :h, :end]


# --8<-- [end:slots]
