"""Virtual tokens: what prompt tuning (:mod:`groundwork.peft.prompt_tuning`) and prefix tuning
(:mod:`groundwork.peft.prefix_tuning`) share.

Both methods keep the whole pretrained decoder frozen and put :math:`P` trained *virtual tokens*
in front of every input (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning"; Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"). Prompt
tuning trains :math:`P` input vectors; prefix tuning trains :math:`P` keys and values in every
layer. Either way the model's weights are never changed, so there is **nothing to merge**: the
virtual tokens cost :math:`P` extra positions of attention at inference instead.

:class:`VirtualTokenModel` is the wrapper both return: it holds the frozen ``base_model`` (a
:class:`~groundwork.models.gpt.GPT` or :class:`~groundwork.models.llama.Llama`), freezes it,
and maps token ids ``(B, T)`` to logits ``(B, T, V)`` and hidden states ``(B, T, d)`` of the
*real* tokens only, with an attention mask of the real tokens (``peft`` returns ``P + T``
positions and takes the same ``(B, T)`` mask, to which it prepends ``P`` ones). The adapter
files are ``peft``'s: one tensor, ``prompt_embeddings``, stored without ``peft``'s
``base_model.model.`` prefix (prompt-learning methods are not module adapters), written and read
by :func:`write_prompt_adapter` and :func:`read_prompt_adapter`. Chapter 13.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.nn import KVCache
from groundwork.peft.naming import (
    ADAPTER_WEIGHTS,
    check_family,
    read_adapter,
    require_peft_type,
    write_adapter,
)

__all__ = [
    "PROMPT_KEY",
    "VirtualTokenModel",
    "check_num_virtual_tokens",
    "check_shape",
    "decoder_config",
    "read_prompt_adapter",
    "write_prompt_adapter",
]

PROMPT_KEY = "prompt_embeddings"
"""The one key of a ``peft`` prompt-learning adapter file (no ``base_model.model.`` prefix)."""


def check_num_virtual_tokens(n: int) -> None:
    """Refuse a count of virtual tokens that is not a positive integer."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_virtual_tokens must be an integer >= 1, got {n!r}")


def decoder_config(model: nn.Module) -> Any:
    """The config of ``model``, a GPT or Llama (``d_model``, ``n_layers``, ``n_kv_heads``,
    ``d_head``).

    Raises:
        ConfigError: any other model.
    """
    check_family(model)
    assert isinstance(model, GPT | Llama)
    return model.config


class VirtualTokenModel(nn.Module):
    """A frozen GPT or Llama with ``num_virtual_tokens`` trained positions before every input.

    Subclasses say what the virtual tokens are (:meth:`hidden_states`,
    :meth:`adapter_state_dict`). There is nothing to merge into the base weights (see the
    module's docstring): :attr:`base_model` is the untouched pretrained model.

    Args:
        base_model: The pretrained model; all of its parameters are frozen (in place).
        num_virtual_tokens: ``P``.

    Raises:
        ConfigError: not a GPT or Llama, or ``P`` < 1.
    """

    def __init__(self, base_model: nn.Module, num_virtual_tokens: int) -> None:
        super().__init__()
        check_family(base_model)
        check_num_virtual_tokens(num_virtual_tokens)
        assert isinstance(base_model, GPT | Llama)
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.base_model: GPT | Llama = base_model
        self.num_virtual_tokens = num_virtual_tokens
        self.train(base_model.training)  # the wrapper follows the base model's mode

    @property
    def config(self) -> Any:
        """The base model's config, for code that reads ``model.config`` (``vocab_size``,
        ``pad_id``, ...). The virtual tokens take ``P`` of its ``max_seq_len`` (a GPT's learned
        positions run out ``P`` tokens sooner). The adapter's own config is
        ``adapter_config``."""
        return self.base_model.config

    @property
    def virtual_positions(self) -> int:
        """How many positions before the real tokens the blocks' hidden states carry: ``P`` for
        prompt tuning (the prompt runs through every block), 0 for prefix tuning (its virtual
        tokens are keys and values only). :mod:`groundwork.adapt.features` drops them."""
        return 0

    @property
    def token_embedding(self) -> nn.Embedding:
        """The base model's token embedding table (``wte``, ``embed_tokens``)."""
        if isinstance(self.base_model, GPT):
            return self.base_model.wte
        return self.base_model.model.embed_tokens

    @property
    def d_model(self) -> int:
        """Width of the base model's hidden states."""
        return int(self.base_model.config.d_model)

    def _check_inputs(self, idx: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        if idx.dim() != 2:
            raise ConfigError(f"idx must be (batch, seq_len), got shape {tuple(idx.shape)}")
        if attention_mask is not None and attention_mask.shape != idx.shape:
            raise ConfigError(
                f"attention_mask must have the shape of idx {tuple(idx.shape)} (the real tokens "
                f"only: the wrapper prepends the virtual tokens' ones), got "
                f"{tuple(attention_mask.shape)}"
            )

    def _with_virtual(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, T)`` -> ``(B, P + T)``: the virtual tokens are never padding (as ``peft``)."""
        if attention_mask is None:
            return None
        ones = attention_mask.new_ones(attention_mask.shape[0], self.num_virtual_tokens)
        return torch.cat([ones, attention_mask], dim=1)  # (B, P + T)

    def _base_states(
        self,
        idx: torch.Tensor | None,
        *,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The base model's final hidden states (after its final norm), ``(B, T', d)``."""
        if isinstance(self.base_model, GPT):
            return self.base_model.hidden_states(
                idx, attention_mask=attention_mask, kv_cache=kv_cache, inputs_embeds=inputs_embeds
            )
        return self.base_model.model(
            idx,
            attention_mask=attention_mask,
            position_ids=None,
            kv_cache=kv_cache,
            inputs_embeds=inputs_embeds,
        )

    def hidden_states(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final hidden states ``(B, T, d_model)`` of the real tokens ``idx`` ``(B, T)``
        (``attention_mask`` ``(B, T)``: 1 for tokens, 0 for padding; ``None``: no padding)."""
        raise NotImplementedError

    def forward(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits ``(B, T, vocab_size)`` of the real tokens; arguments as in
        :meth:`hidden_states`."""
        return self.base_model.lm_head(self.hidden_states(idx, attention_mask))  # (B, T, V)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What ``peft`` saves: ``{"prompt_embeddings": ...}``."""
        raise NotImplementedError


def write_prompt_adapter(
    directory: Path | str, config: dict[str, Any], prompt_embeddings: torch.Tensor
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` holding the one tensor
    ``prompt_embeddings``, as ``peft`` saves prompt-learning adapters (without the
    ``base_model.model.`` prefix that :func:`groundwork.peft.naming.write_adapter` adds to module
    adapters, and that ``peft`` would not find here); returns the directory."""
    return write_adapter(directory, config, {PROMPT_KEY: prompt_embeddings}, prefix="")


def read_prompt_adapter(
    directory: Path | str, peft_type: str, reader: str
) -> tuple[dict[str, Any], torch.Tensor]:
    """``(config, prompt_embeddings)`` of a ``peft`` prompt-learning adapter of type
    ``peft_type`` (``reader`` names the function asking, for the errors).

    Raises:
        CheckpointError: missing files, or no ``prompt_embeddings``.
        ConfigError: another ``peft_type``, a config for several transformer stacks
            (encoder-decoder), another task, or ``modules_to_save``.
    """
    config, weights = read_adapter(directory)
    require_peft_type(config, peft_type, reader)
    submodules = config.get("num_transformer_submodules") or 1
    if submodules != 1:
        raise ConfigError(
            f"the adapter has num_transformer_submodules={submodules} (an encoder-decoder's): "
            f"{reader} adapts decoder-only models"
        )
    if config.get("modules_to_save"):
        raise ConfigError(
            f"the adapter sets modules_to_save={config['modules_to_save']!r} (trained base "
            f"modules, e.g. a classifier), which {reader} does not load"
        )
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise ConfigError(f"the adapter is for task_type {task!r}; {reader} reads CAUSAL_LM")
    if PROMPT_KEY not in weights:
        raise CheckpointError(
            f"{Path(directory) / ADAPTER_WEIGHTS} has no {PROMPT_KEY!r} tensor (it holds "
            f"{sorted(weights)[:3]}): not a prompt-learning adapter"
        )
    return config, weights[PROMPT_KEY]


def check_shape(value: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """Refuse a saved ``prompt_embeddings`` whose shape is not the ``expected`` one (``what``
    names its dimensions)."""
    if tuple(value.shape) != expected:
        raise CheckpointError(
            f"adapter weight {PROMPT_KEY} has shape {tuple(value.shape)}, the model needs "
            f"{expected} ({what}): the adapter was trained on another model"
        )
