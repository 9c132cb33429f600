"""What the decoder-only transformers (GPT, Llama) share, written once: GPT-2's weight
initialisation, an empty KV cache of the right shape, and parameter counting.

:class:`DecoderLM` is the base class of :class:`~groundwork.models.gpt.GPT` and
:class:`~groundwork.models.llama.Llama`; each says only which of its matrices are embedding
lookups (:meth:`DecoderLM.embedding_weights`). The forward passes stay in the model files, where
the differences between the families are.

References:
    * Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2): weights
      drawn from ``N(0, 0.02^2)``, and the projections that write into the residual stream
      scaled by ``1 / sqrt(2 * n_layers)``, so the stream's variance does not grow with depth.
    * Kaplan et al. 2020, "Scaling Laws for Neural Language Models" ("non-embedding parameters").

Chapter 5 of the docs.
"""

from typing import Any

import torch
from torch import nn

from groundwork.models.config import layer_heads
from groundwork.nn import KVCache, packed_documents

INIT_STD = 0.02
"""Standard deviation of GPT-2's normal initialisation of linear and embedding weights."""

RESIDUAL_PROJECTIONS = ("o_proj.weight", "down_proj.weight")
"""Parameter-name endings of the projections that write into the residual stream."""


# --8<-- [start:init]
def _init_linear_and_embedding(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def init_weights(model: nn.Module, n_layers: int) -> None:
    """GPT-2's initialisation, in place: every linear and embedding weight from
    ``N(0, 0.02^2)``, linear biases zero, then the residual projections (attention output and
    MLP down projection) from ``N(0, (0.02 / sqrt(2 * n_layers))^2)``.

    Each block adds two residual branches, so the stream's variance grows with ``2 * n_layers``
    terms; scaling their last projections by ``1 / sqrt(2 * n_layers)`` keeps it constant.
    """
    model.apply(_init_linear_and_embedding)
    for name, p in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(p, mean=0.0, std=INIT_STD / (2 * n_layers) ** 0.5)


# --8<-- [end:init]


def token_inputs(
    embedding: nn.Module, idx: torch.Tensor | None, inputs_embeds: torch.Tensor | None
) -> torch.Tensor:
    """The token vectors ``(B, T, d_model)`` a decoder starts from: ``embedding(idx)``, or
    ``inputs_embeds`` given instead (as ``transformers``; prompt tuning puts trained vectors
    in front of the tokens' own).

    Raises:
        ValueError: both or neither given.
    """
    if (idx is None) == (inputs_embeds is None):
        raise ValueError("give the token ids idx or inputs_embeds, exactly one of them")
    return embedding(idx) if inputs_embeds is None else inputs_embeds  # (B, T, d_model)


def packed_documents_of(
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    kv_cache: KVCache | None,
    batch: int,
) -> torch.Tensor | None:
    """The packed documents of a training batch (:func:`~groundwork.nn.packed_documents`): read
    from ``position_ids`` that restart inside a row, when there is no padding mask and no KV
    cache, as ``transformers`` does. ``None`` otherwise, and for one document per row."""
    if position_ids is None or attention_mask is not None or kv_cache is not None:
        return None
    return packed_documents(position_ids.expand(batch, -1))  # (B, T)


class DecoderLM(nn.Module):
    """Base class of the decoder-only transformers: the parts of the
    :class:`~groundwork.models.protocol.CausalLM` protocol that do not depend on the family.

    A subclass sets ``self.config`` (with ``n_layers``, ``n_heads``, ``n_kv_heads``,
    ``pruned_heads``, ``d_head``, ``max_seq_len``) and implements :meth:`embedding_weights`
    and ``forward``.
    """

    config: Any

    def embedding_weights(self) -> list[torch.Tensor]:
        """The matrices used as lookup tables (token and, if learned, position embeddings)."""
        raise NotImplementedError

    def new_kv_cache(self, batch: int, max_seq_len: int | None = None) -> KVCache:
        """An empty :class:`~groundwork.nn.KVCache` for this model, on its device and dtype.

        Args:
            batch: Number of sequences decoded together.
            max_seq_len: Longest sequence to hold (default: ``config.max_seq_len``).
        """
        c = self.config
        p = next(self.parameters())
        length = max_seq_len or c.max_seq_len
        heads = max(layer_heads(c, i)[1] for i in range(c.n_layers))  # fewer if all pruned
        return KVCache(batch, c.n_layers, heads, length, c.d_head, p.dtype, p.device)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (a tied matrix counts once).

        Args:
            exclude_embeddings: Leave out the embedding lookups (token embeddings, and GPT-2's
                learned positions): Kaplan et al.'s "non-embedding parameters".
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(w.numel() for w in self.embedding_weights())
        return n
