"""What generation, evaluation and training rely on in a next-token model: the ``CausalLM``
protocol.

Every causal language model of the registry (GPT, Llama, the LSTM LM, and what later issues add)
satisfies it, and code above ``models/`` is written against it instead of probing attributes
with ``getattr``: it reads ``model.config.max_seq_len`` and ``model.config.vocab_size``, calls the
model with ``attention_mask``/``position_ids``/``kv_cache`` keywords, and asks it for an empty
cache with :meth:`CausalLM.new_kv_cache`.
"""

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class CausalLMConfig(Protocol):
    """The fields of a causal LM's config that code outside the model reads."""

    vocab_size: int
    """Number of token ids; logits have this last dimension."""
    max_seq_len: int
    """Longest sequence the model accepts (for an RNN: the context tools assume)."""


@runtime_checkable
class CausalLM(Protocol):
    """A model mapping token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``."""

    config: Any
    """Its config (a :class:`CausalLMConfig`)."""

    def __call__(
        self,
        idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: Any = None,
    ) -> torch.Tensor: ...

    def new_kv_cache(self, batch: int, max_seq_len: int | None = None) -> Any:
        """An empty cache (or recurrent state) for ``batch`` sequences."""
        ...

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied matrix counts once)."""
        ...


def max_seq_len(model: CausalLM) -> int:
    """The longest sequence ``model`` accepts (``model.config.max_seq_len``)."""
    return int(model.config.max_seq_len)


def vocab_size(model: CausalLM) -> int:
    """The number of token ids of ``model`` (``model.config.vocab_size``)."""
    return int(model.config.vocab_size)
