r"""Prefix tuning: trained keys and values before every layer's own (Li & Liang 2021,
"Prefix-Tuning: Optimizing Continuous Prompts for Generation").

The decoder stays frozen; every attention layer :math:`\ell` gets :math:`P` trained keys
:math:`K^\ell_\text{prefix}` and values :math:`V^\ell_\text{prefix}` that its queries attend to
before the real tokens':

.. math:: \mathrm{head}^\ell = \mathrm{softmax}\!\big(Q^\ell [K^\ell_\text{prefix};
    K^\ell]^\top / \sqrt{d_h}\big) [V^\ell_\text{prefix}; V^\ell]

so, unlike prompt tuning's input vectors, the prefix steers every layer directly. The keys and
values are those the cache would hold: after the key projection and (Llama) after RoPE, with
``n_kv_heads`` heads under grouped-query attention. The real tokens take positions
:math:`P \dots P + T - 1`, as after a cache of :math:`P` tokens. There is nothing to merge.

All prefixes are one matrix :math:`\mathbb{R}^{P \times 2 L d_{kv}}` (:math:`L` layers,
:math:`d_{kv}` = ``n_kv_heads * d_head``), each row ``[K^0, V^0, K^1, V^1, ...]`` with the heads
in order, as ``peft``'s ``get_prompt`` reads it. Trained directly, or (``prefix_projection``, Li &
Liang §4.3: direct training was unstable) through the reparameterisation
:math:`\mathrm{MLP}(E) = W_2 \tanh(W_1 E + b_1) + b_2` of a smaller table
:math:`E \in \mathbb{R}^{P \times d_{kv}}` (``peft``'s ``PrefixEncoder``; its width is ``peft``'s
``token_dim``, which for prefix tuning is :math:`d_{kv}`, not ``d_model``).

The prefix reaches the layers through a :class:`PrefixCache`, a
:class:`~groundwork.nn.KVCache` that concatenates instead of writing in place: a preallocated
cache filled with the prefix would work for inference, but its in-place writes, layer after
layer, into one buffer break autograd.

:func:`save_prefix_tuning` and :func:`load_prefix_tuning` read and write ``peft``'s
``PREFIX_TUNING`` adapters (``CAUSAL_LM``). ``peft`` saves the matrix, never the MLP: with
``prefix_projection`` the file holds :math:`\mathrm{MLP}(E)`, which cannot be turned back into
:math:`E` and the MLP, so such an adapter is loaded without its reparameterisation (``peft``
loads it, as every prompt-learning adapter, for inference only). Tested equal to ``peft`` on the
``transformers`` twins of our GPT and Llama (GQA included). Chapter 13.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.nn import KVCache
from groundwork.peft.virtual_tokens import (
    PROMPT_KEY,
    VirtualTokenModel,
    check_num_virtual_tokens,
    check_shape,
    decoder_config,
    read_prompt_adapter,
    write_prompt_adapter,
)

__all__ = [
    "PrefixCache",
    "PrefixTuned",
    "PrefixTuningConfig",
    "apply_prefix_tuning",
    "load_prefix_tuning",
    "save_prefix_tuning",
]


@dataclass(frozen=True)
class PrefixTuningConfig:
    """How long the prefix is, and whether it is trained through an MLP."""

    num_virtual_tokens: int
    """``P``: the number of trained key/value positions per layer."""
    prefix_projection: bool = False
    """Train a table ``(P, d_kv)`` through a two-layer MLP (Li & Liang's reparameterisation)
    instead of the prefixes themselves."""
    encoder_hidden_size: int | None = None
    """Hidden width of that MLP; ``None``: ``d_kv`` (as ``peft``). Only with
    ``prefix_projection``."""

    def __post_init__(self) -> None:
        check_num_virtual_tokens(self.num_virtual_tokens)
        h = self.encoder_hidden_size
        if h is not None:
            if not self.prefix_projection:
                raise ConfigError(
                    "encoder_hidden_size is the width of the prefix projection MLP: set "
                    "prefix_projection=True, or leave it None"
                )
            if isinstance(h, bool) or not isinstance(h, int) or h < 1:
                raise ConfigError(f"encoder_hidden_size must be an integer >= 1, got {h!r}")


class PrefixCache(KVCache):
    """A :class:`~groundwork.nn.KVCache` holding a prefix: each layer's attention gets the
    prefix keys and values ``(B, H_kv, P, D)`` followed by the new tokens', by concatenation
    (no buffer is written in place, so gradients reach the prefix). It serves one forward pass
    of tokens starting at position ``P``; it keeps nothing of them.

    Args:
        keys: One ``(B, H_kv, P, D)`` tensor per layer.
        values: Likewise.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        # No preallocated buffers (KVCache's k and v): the prefix is all there is to hold.
        self.keys, self.values = keys, values
        self.prefix_len = keys[0].shape[2]
        self.seq_len = self.prefix_len
        self.max_seq_len = self.prefix_len  # it holds the prefix, nothing after

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix of ``layer`` followed by ``k, v`` ``(B, H_kv, T, D)``: ``(B, H_kv, P + T,
        D)``."""
        if start_pos != self.prefix_len:
            raise ValueError(
                f"a PrefixCache serves tokens that start right after its {self.prefix_len} "
                f"prefix positions, not at {start_pos}"
            )
        k = torch.cat([self.keys[layer].to(k.dtype), k], dim=2)  # (B, H_kv, P + T, D)
        v = torch.cat([self.values[layer].to(v.dtype), v], dim=2)  # (B, H_kv, P + T, D)
        return k, v

    def reset(self) -> None:
        """Back to the prefix alone."""
        self.seq_len = self.prefix_len


# --8<-- [start:prefix_tuned]
class PrefixTuned(VirtualTokenModel):
    """A frozen GPT or Llama whose every attention layer attends to ``P`` trained keys and values
    first. Nothing to merge; the base model is left as it was.

    The trained weights (float32, as ``peft``) are ``prefix_embeddings``: the prefixes
    themselves ``(P, 2 L d_kv)``, or with ``prefix_projection`` the table ``(P, d_kv)`` that
    ``transform`` (Linear, Tanh, Linear) maps to them.

    Args:
        base_model: A :class:`~groundwork.models.gpt.GPT` or
            :class:`~groundwork.models.llama.Llama`; frozen in place.
        config: Prefix length and parameterisation.
    """

    def __init__(self, base_model: nn.Module, config: PrefixTuningConfig) -> None:
        super().__init__(base_model, config.num_virtual_tokens)
        self.adapter_config = config
        c = self.base_model.config
        self.n_layers, self.n_kv_heads, self.d_head = c.n_layers, c.n_kv_heads, c.d_head
        self.kv_dim = self.n_kv_heads * self.d_head
        width = self.n_layers * 2 * self.kv_dim  # every layer's key and value, one row
        P = config.num_virtual_tokens
        device = self.token_embedding.weight.device
        self.transform: nn.Sequential | None = None
        if config.prefix_projection:
            hidden = config.encoder_hidden_size or self.kv_dim
            self.prefix_embeddings = nn.Embedding(P, self.kv_dim, device=device)
            self.transform = nn.Sequential(
                nn.Linear(self.kv_dim, hidden, device=device),
                nn.Tanh(),
                nn.Linear(hidden, width, device=device),
            )
        else:
            self.prefix_embeddings = nn.Embedding(P, width, device=device)  # N(0, 1), as peft

    def prefix(self) -> torch.Tensor:
        """All prefixes ``(P, 2 L d_kv)``: each row ``[K^0, V^0, K^1, V^1, ...]`` (what ``peft``
        saves)."""
        table = self.prefix_embeddings.weight
        return table if self.transform is None else self.transform(table)

    def past_key_values(self, batch: int) -> PrefixCache:
        """The prefix as a cache for ``batch`` sequences, in the model's dtype."""
        dtype = self.token_embedding.weight.dtype
        P, L, H, D = self.num_virtual_tokens, self.n_layers, self.n_kv_heads, self.d_head
        kv = self.prefix().to(dtype).view(P, 2 * L, H, D).permute(1, 2, 0, 3)  # (2L, H, P, D)
        kv = kv.unsqueeze(1).expand(-1, batch, -1, -1, -1)  # (2L, B, H, P, D)
        return PrefixCache(list(kv[0::2]), list(kv[1::2]))  # L keys, L values: (B, H, P, D)

    def hidden_states(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final hidden states ``(B, T, d_model)`` of the real tokens ``idx`` ``(B, T)``, at
        positions ``P .. P + T - 1`` (as ``transformers`` places tokens after a cache of
        ``P``)."""
        self._check_inputs(idx, attention_mask)
        cache = self.past_key_values(idx.shape[0])
        return self._base_states(
            idx, attention_mask=self._with_virtual(attention_mask), kv_cache=cache
        )  # (B, T, d)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """``{"prompt_embeddings": (P, 2 L d_kv)}``: the prefixes, MLP applied (as ``peft``
        saves them)."""
        with torch.no_grad():
            return {PROMPT_KEY: self.prefix().detach()}


# --8<-- [end:prefix_tuned]


def apply_prefix_tuning(model: nn.Module, config: PrefixTuningConfig) -> PrefixTuned:
    """Freeze ``model`` (a GPT or Llama) and give every attention layer a trainable prefix.

    Raises:
        ConfigError: not a GPT or Llama.
    """
    return PrefixTuned(model, config)


def save_prefix_tuning(
    model: nn.Module,
    directory: Path | str,
    config: PrefixTuningConfig,
    *,
    base_model: str | None = None,
) -> Path:
    """Write ``model``'s prefixes and ``config`` as ``peft`` does (``PREFIX_TUNING``,
    ``CAUSAL_LM``); ``peft.PeftModel.from_pretrained`` reads it on the ``transformers`` twin.
    With ``prefix_projection`` the MLP's output is written, not the MLP (``peft`` does the
    same), and ``peft`` then loads the adapter for inference only.

    Raises:
        ConfigError: not a :class:`PrefixTuned`, or a ``config`` that does not describe it.
    """
    if not isinstance(model, PrefixTuned):
        raise ConfigError(
            f"save_prefix_tuning writes a PrefixTuned model (apply_prefix_tuning's), not a "
            f"{type(model).__name__}"
        )
    if config.num_virtual_tokens != model.num_virtual_tokens:
        raise ConfigError(
            f"config has num_virtual_tokens={config.num_virtual_tokens}, the model's prefix "
            f"{model.num_virtual_tokens}"
        )
    if config.prefix_projection != (model.transform is not None):
        raise ConfigError(
            f"config has prefix_projection={config.prefix_projection}, the model "
            f"{'has' if model.transform is not None else 'has no'} projection MLP"
        )
    hidden = model.transform[0].out_features if model.transform is not None else model.kv_dim
    peft_config: dict[str, Any] = {
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "encoder_hidden_size": hidden,
        "inference_mode": True,
        "init_weights": None,
        "modules_to_save": None,
        "num_attention_heads": model.n_kv_heads,  # peft's GQA rule: the key/value heads
        "num_layers": model.n_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": model.num_virtual_tokens,
        "peft_type": "PREFIX_TUNING",
        "prefix_projection": config.prefix_projection,
        "revision": None,
        "task_type": "CAUSAL_LM",
        "token_dim": model.kv_dim,  # n_kv_heads * d_head, not d_model
    }
    return write_prompt_adapter(directory, peft_config, model.adapter_state_dict()[PROMPT_KEY])


def load_prefix_tuning(model: nn.Module, directory: Path | str) -> PrefixTuned:
    """Wrap ``model`` with the prefixes saved in ``directory`` (by ``peft`` or
    :func:`save_prefix_tuning`).

    The file holds the prefixes themselves (with ``prefix_projection``, the MLP's output; the
    MLP is not saved and cannot be recovered), so the model returned has no projection: its
    ``prefix_embeddings`` are the prefixes, trainable, and its ``adapter_config`` says
    ``prefix_projection=False``. A ``prefix_projection`` adapter therefore gives the same
    outputs but trains on without Li & Liang's reparameterisation. (``peft`` loads every
    prompt-learning adapter for inference only: ``from_pretrained(..., is_trainable=True)``
    raises.)

    Raises:
        CheckpointError: missing files, or prefixes that do not fit the model (the layer count,
            key/value width or tensor shape is named).
        ConfigError: an adapter of another ``peft_type``, task or layout, or a model that is no
            GPT or Llama.
    """
    c = decoder_config(model)
    raw, weights = read_prompt_adapter(directory, "PREFIX_TUNING", "load_prefix_tuning")
    kv_dim = c.n_kv_heads * c.d_head
    for key, ours in (("num_layers", c.n_layers), ("token_dim", kv_dim)):
        theirs = raw.get(key)
        if theirs is not None and int(theirs) != ours:
            raise CheckpointError(
                f"the adapter has {key}={theirs}, the model {ours} (num_layers: its layers; "
                "token_dim: n_kv_heads * d_head): the adapter was trained on another model"
            )
    config = PrefixTuningConfig(int(raw["num_virtual_tokens"]))
    shape = (config.num_virtual_tokens, c.n_layers * 2 * kv_dim)
    check_shape(weights, shape, "num_virtual_tokens, n_layers * 2 * n_kv_heads * d_head")
    wrapped = PrefixTuned(model, config)
    with torch.no_grad():
        wrapped.prefix_embeddings.weight.copy_(weights)
    return wrapped
