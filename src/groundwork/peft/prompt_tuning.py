r"""Prompt tuning: a trained soft prompt in front of a frozen decoder (Lester et al. 2021, "The
Power of Scale for Parameter-Efficient Prompt Tuning").

The model and its token embeddings stay frozen; :math:`P` vectors
:math:`E_\text{prompt} \in \mathbb{R}^{P \times d}` are learnt and put before the embeddings of
every input, so the network reads :math:`[E_\text{prompt}; E(x_1); \dots; E(x_T)]` at positions
:math:`0 \dots P + T - 1`. Only :math:`P d` numbers are trained per task, and one frozen model
serves many tasks by switching prompts. There is nothing to merge: the prompt is an input.

Initialisation (as ``peft``'s ``PromptTuningInit``): ``RANDOM``, an ``nn.Embedding``'s
:math:`\mathcal{N}(0, 1)`; or ``TEXT``, the token embeddings of a text (Lester et al. §3.2 found
initialising from vocabulary embeddings better than random), its ids cut to :math:`P` or repeated
until they fill :math:`P`. :func:`apply_prompt_tuning` takes the text's ids already tokenized
(``init_ids``); :class:`PromptTuningConfig` records the text.

:func:`save_prompt_tuning` and :func:`load_prompt_tuning` read and write ``peft``'s
``PROMPT_TUNING`` adapters (task ``CAUSAL_LM``): the prompt is the one tensor
``prompt_embeddings`` ``(P, d)``. Tested equal to ``peft``'s on the ``transformers`` twins of our
GPT and Llama. Chapter 13.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
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
    "PromptTuned",
    "PromptTuningConfig",
    "apply_prompt_tuning",
    "load_prompt_tuning",
    "prompt_init_ids",
    "save_prompt_tuning",
]


@dataclass(frozen=True)
class PromptTuningConfig:
    """How long the soft prompt is, and the text it started from (if any)."""

    num_virtual_tokens: int
    """``P``: the number of trained prompt vectors."""
    init_text: str | None = None
    """The text whose token embeddings the prompt started from (``peft``'s ``TEXT`` init);
    ``None``: random. Recorded only: :func:`apply_prompt_tuning` takes its token ids."""

    def __post_init__(self) -> None:
        check_num_virtual_tokens(self.num_virtual_tokens)


def prompt_init_ids(ids: Sequence[int], num_virtual_tokens: int) -> list[int]:
    """``peft``'s ``TEXT`` init: the text's ids cut to ``P``, or repeated until they fill it.

    >>> prompt_init_ids([5, 7], 5), prompt_init_ids([1, 2, 3], 2)
    ([5, 7, 5, 7, 5], [1, 2])
    """
    ids = list(ids)
    if not ids:
        raise ConfigError("init_ids is empty: the init text must have at least one token")
    reps = math.ceil(num_virtual_tokens / len(ids))
    return (ids * reps)[:num_virtual_tokens]


# --8<-- [start:prompt_tuned]
class PromptTuned(VirtualTokenModel):
    """A frozen GPT or Llama reading a trained prompt ``prompt_embeddings`` ``(P, d)`` before
    every input. Nothing to merge; the base model is left as it was.

    The prompt is kept in float32 (as ``peft``, for stable training) and cast to the model's
    dtype where it meets the token embeddings.

    Args:
        base_model: A :class:`~groundwork.models.gpt.GPT` or
            :class:`~groundwork.models.llama.Llama`; frozen in place.
        config: The prompt's length (and recorded init text).
        init_ids: Token ids to initialise the prompt from (see :func:`prompt_init_ids`);
            ``None``: random, ``N(0, 1)``.
    """

    def __init__(
        self,
        base_model: nn.Module,
        config: PromptTuningConfig,
        *,
        init_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__(base_model, config.num_virtual_tokens)
        self.adapter_config = config
        table = self.token_embedding
        self.prompt_embeddings = nn.Embedding(
            config.num_virtual_tokens, self.d_model, device=table.weight.device, dtype=torch.float32
        )  # N(0, 1), as peft's RANDOM init
        if init_ids is not None:
            ids = prompt_init_ids(init_ids, config.num_virtual_tokens)
            bad = [i for i in ids if not 0 <= i < table.num_embeddings]
            if bad:
                raise ConfigError(
                    f"init_ids holds {bad[0]}, outside the vocabulary 0..{table.num_embeddings - 1}"
                )
            with torch.no_grad():
                rows = table.weight[torch.tensor(ids, device=table.weight.device)]  # (P, d)
                self.prompt_embeddings.weight.copy_(rows.float())

    @property
    def virtual_positions(self) -> int:
        """``P``: the prompt runs through every block before the real tokens."""
        return self.num_virtual_tokens

    def hidden_states(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final hidden states ``(B, T, d_model)`` of the real tokens ``idx`` ``(B, T)``; the
        prompt sits at positions ``0 .. P - 1``, the tokens at ``P .. P + T - 1`` (as ``peft``
        concatenates ``inputs_embeds``)."""
        self._check_inputs(idx, attention_mask)
        B, P = idx.shape[0], self.num_virtual_tokens
        tokens = self.token_embedding(idx)  # (B, T, d)
        prompt = self.prompt_embeddings.weight.to(tokens.dtype)  # (P, d)
        x = torch.cat([prompt.unsqueeze(0).expand(B, -1, -1), tokens], dim=1)  # (B, P + T, d)
        states = self._base_states(
            None, attention_mask=self._with_virtual(attention_mask), inputs_embeds=x
        )  # (B, P + T, d)
        return states[:, P:]  # (B, T, d)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """``{"prompt_embeddings": (P, d)}``, as ``peft`` saves it."""
        return {PROMPT_KEY: self.prompt_embeddings.weight.detach()}


# --8<-- [end:prompt_tuned]


def apply_prompt_tuning(
    model: nn.Module, config: PromptTuningConfig, *, init_ids: Sequence[int] | None = None
) -> PromptTuned:
    """Freeze ``model`` (a GPT or Llama) and wrap it with a trainable soft prompt.

    Args:
        model: The pretrained model (its parameters are frozen in place).
        config: Prompt length and recorded init text.
        init_ids: The token ids of ``config.init_text`` (``peft``'s ``TEXT`` init), required when
            it is set; ``None`` with no text: random init.

    Raises:
        ConfigError: not a GPT or Llama, an init text without its ids, or ids outside the
            vocabulary.
    """
    if config.init_text is not None and init_ids is None:
        raise ConfigError(
            "config.init_text is set but init_ids is not: tokenize the text with the model's "
            "tokenizer and pass its ids (the peft layer takes no tokenizer)"
        )
    return PromptTuned(model, config, init_ids=init_ids)


def _check_wrapper(model: nn.Module) -> PromptTuned:
    if not isinstance(model, PromptTuned):
        raise ConfigError(
            f"save_prompt_tuning writes a PromptTuned model (apply_prompt_tuning's), not a "
            f"{type(model).__name__}"
        )
    return model


def save_prompt_tuning(
    model: nn.Module,
    directory: Path | str,
    config: PromptTuningConfig,
    *,
    base_model: str | None = None,
    tokenizer: str | None = None,
) -> Path:
    """Write ``model``'s prompt and ``config`` as ``peft`` does (``PROMPT_TUNING``,
    ``CAUSAL_LM``); ``peft.PeftModel.from_pretrained`` reads it on the ``transformers`` twin.

    Args:
        model: A :class:`PromptTuned`.
        directory: Where to write ``adapter_config.json`` and ``adapter_model.safetensors``.
        config: The model's config.
        base_model: Recorded as ``base_model_name_or_path``.
        tokenizer: Recorded as ``tokenizer_name_or_path`` (default ``base_model``). ``peft``
            refuses a ``TEXT`` init without one, so an init text is written as ``TEXT`` only
            with a tokenizer name, else as ``RANDOM`` (the text is kept either way; loading for
            inference never re-initialises).

    Raises:
        ConfigError: not a :class:`PromptTuned`, or ``config`` of another length.
    """
    wrapped = _check_wrapper(model)
    if config.num_virtual_tokens != wrapped.num_virtual_tokens:
        raise ConfigError(
            f"config has num_virtual_tokens={config.num_virtual_tokens}, the model's prompt "
            f"{wrapped.num_virtual_tokens}"
        )
    c = wrapped.base_model.config
    tokenizer = tokenizer or base_model
    text_init = config.init_text is not None and tokenizer is not None
    peft_config: dict[str, Any] = {
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": c.n_heads,
        "num_layers": c.n_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": config.num_virtual_tokens,
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": "TEXT" if text_init else "RANDOM",
        "prompt_tuning_init_text": config.init_text,
        "revision": None,
        "task_type": "CAUSAL_LM",
        "token_dim": c.d_model,
        "tokenizer_kwargs": None,
        "tokenizer_name_or_path": tokenizer if text_init else None,
    }
    return write_prompt_adapter(directory, peft_config, wrapped.adapter_state_dict()[PROMPT_KEY])


def load_prompt_tuning(model: nn.Module, directory: Path | str) -> PromptTuned:
    """Wrap ``model`` with the prompt saved in ``directory`` (by ``peft`` or
    :func:`save_prompt_tuning`); the prompt stays trainable.

    Raises:
        CheckpointError: missing files, or a prompt whose shape does not fit the model (named).
        ConfigError: an adapter of another ``peft_type``, task or layout, or a model that is no
            GPT or Llama.
    """
    d_model = int(decoder_config(model).d_model)
    raw, weights = read_prompt_adapter(directory, "PROMPT_TUNING", "load_prompt_tuning")
    config = PromptTuningConfig(
        int(raw["num_virtual_tokens"]), init_text=raw.get("prompt_tuning_init_text")
    )
    check_shape(weights, (config.num_virtual_tokens, d_model), "num_virtual_tokens, d_model")
    wrapped = PromptTuned(model, config)
    with torch.no_grad():
        wrapped.prompt_embeddings.weight.copy_(weights)
    return wrapped
