"""Hidden states of a pretrained backbone, for task heads and probes: the last layer's
(:func:`last_hidden_state`) or every layer's (:func:`layer_states`).

A backbone is any of our transformer families: GPT (:class:`~groundwork.models.gpt.GPT`), Llama
(:class:`~groundwork.models.llama.Llama`, SmolLM2 from :func:`groundwork.load` included, and
either with prompt or prefix tuning: a :class:`~groundwork.peft.virtual_tokens.VirtualTokenModel`,
whose states are those of the real tokens, the virtual ones dropped), BERT
(:class:`~groundwork.models.bert.Bert`, or the encoder inside
:class:`~groundwork.models.bert.BertForMaskedLM` and
:class:`~groundwork.models.bert.BertForPreTraining`) and the T5 encoder
(:class:`~groundwork.models.t5.T5Encoder`, or the encoder of :class:`~groundwork.models.t5.T5`).
For each, :func:`_body` says which stack of blocks to read and which of the model's own methods
returns its final hidden states, so nothing of the forward passes is copied here: the states
inside the stack are caught with forward hooks while the model runs, and removed afterwards.

**The convention** is ``transformers``' ``output_hidden_states=True``: ``n_layers + 1`` tensors
``(B, T, d_model)``,

* entry 0: the embeddings as the first block reads them (token + positions (+ segments), after
  BERT's embedding LayerNorm and any dropout);
* entry ``i`` for ``1 <= i < n_layers``: the output of block ``i - 1`` (the residual stream);
* entry ``n_layers``: the model's final hidden state, the one its output head reads. For the
  pre-norm families (GPT-2, Llama, T5) that is the last block's output *after the final norm*
  (``ln_f``, ``model.norm``, ``final_norm``), as ``transformers`` returns it
  (``GPT2Model`` appends ``ln_f(h)``; Llama's output recorder replaces the last entry with
  ``last_hidden_state``); the last block's raw output is in no entry. BERT is post-LN and has no
  final norm: the last entry is the last block's output.

Attention masks are ``(B, T)`` with 1 for a real token and 0 for padding (right padding). The
states of padding positions are returned too; readers mask them (:mod:`groundwork.adapt.heads`).

References: Devlin et al. 2019 (BERT's features for fine-tuning and feature-based use, §5.3);
Radford et al. 2018 (GPT's last-token features). Chapter 12 (Adaptation).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.bert import Bert, BertForMaskedLM, BertForPreTraining
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.models.t5 import T5, T5Encoder

__all__ = ["encoder_of", "hidden_size", "last_hidden_state", "layer_states", "num_layer_states"]

Backbone = nn.Module
"""A model :func:`layer_states` reads: ``GPT``, ``Llama``, ``Bert`` (or a BERT with heads),
``T5Encoder`` or ``T5``."""

Run = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]
"""``(input_ids, attention_mask, token_type_ids) -> final hidden states (B, T, d_model)``."""


@dataclass(frozen=True)
class _Body:
    """How to read one backbone: its blocks, and the call that returns its final states."""

    blocks: nn.ModuleList
    run: Run
    width: int
    """``d_model``."""
    virtual: int = 0
    """Positions before the real tokens in the blocks' states (a prompt-tuned model's prompt),
    dropped from what :func:`layer_states` returns."""


def encoder_of(model: nn.Module) -> Bert | None:
    """The BERT encoder of ``model`` (itself, or the ``bert`` inside a BERT with heads), or
    ``None`` for any other family."""
    if isinstance(model, BertForMaskedLM | BertForPreTraining):
        return model.bert
    return model if isinstance(model, Bert) else None


def _no_segments(model: nn.Module, token_type_ids: torch.Tensor | None) -> None:
    if token_type_ids is not None:
        raise ConfigError(
            f"token_type_ids are BERT's segment ids: a {type(model).__name__} has none"
        )


def _body(model: nn.Module) -> _Body:
    """The blocks and the final-state call of ``model``'s family.

    Raises:
        ConfigError: ``model`` is not a transformer family we read.
    """
    bert = encoder_of(model)
    if bert is not None:
        b = bert

        def run_bert(ids: Any, mask: Any, segments: Any) -> torch.Tensor:
            return b(ids, attention_mask=mask, token_type_ids=segments)

        return _Body(b.blocks, run_bert, b.config.d_model)
    if isinstance(model, GPT):
        gpt = model

        def run_gpt(ids: Any, mask: Any, segments: Any) -> torch.Tensor:
            _no_segments(gpt, segments)
            return gpt.hidden_states(ids, attention_mask=mask)  # after ln_f

        return _Body(gpt.blocks, run_gpt, gpt.config.d_model)
    if isinstance(model, Llama):
        llama = model

        def run_llama(ids: Any, mask: Any, segments: Any) -> torch.Tensor:
            _no_segments(llama, segments)
            # LlamaModel: the stack without the output head, ending in the final RMSNorm.
            return llama.model(ids, attention_mask=mask, position_ids=None, kv_cache=None)

        return _Body(llama.model.layers, run_llama, llama.config.d_model)
    if isinstance(model, T5 | T5Encoder):
        t5 = model

        def run_t5(ids: Any, mask: Any, segments: Any) -> torch.Tensor:
            _no_segments(t5, segments)
            if isinstance(t5, T5):
                return t5.encode(ids, mask)
            return t5(ids, mask)  # ends in the final RMSNorm (and dropout)

        return _Body(t5.encoder.blocks, run_t5, t5.config.d_model)
    from groundwork.peft.virtual_tokens import VirtualTokenModel  # peft builds on the models

    if isinstance(model, VirtualTokenModel):
        wrapped = model

        def run_virtual(ids: Any, mask: Any, segments: Any) -> torch.Tensor:
            _no_segments(wrapped, segments)
            return wrapped.hidden_states(ids, mask)  # the real tokens' states only

        inner = _body(wrapped.base_model)
        return _Body(inner.blocks, run_virtual, inner.width, wrapped.virtual_positions)
    raise ConfigError(
        f"cannot read the hidden states of a {type(model).__name__}: backbones are GPT, Llama, "
        "BERT (Bert, BertForMaskedLM, BertForPreTraining) and T5 (T5Encoder, T5) models, and "
        "GPT or Llama models with prompt or prefix tuning (groundwork.peft)"
    )


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if input_ids.dim() != 2:
        raise ConfigError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ConfigError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(attention_mask.shape)}"
        )


def last_hidden_state(
    model: Backbone,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The final hidden states ``(B, T, d_model)``: what the model's own output head reads
    (``layer_states(...)[-1]``, without the hooks).

    Args:
        model: A backbone (see :func:`layer_states`).
        input_ids: Token ids ``(B, T)``.
        attention_mask: ``(B, T)``, 1 for tokens and 0 for padding; ``None``: no padding.
        token_type_ids: BERT's segment ids ``(B, T)`` (sentence A = 0, B = 1); BERT only.

    Raises:
        ConfigError: Not a backbone we read, or inputs of the wrong shape.
    """
    body = _body(model)
    _check_inputs(input_ids, attention_mask)
    return body.run(input_ids, attention_mask, token_type_ids)


def num_layer_states(model: Backbone) -> int:
    """How many tensors :func:`layer_states` returns: ``n_layers + 1``.

    Raises:
        ConfigError: Not a backbone we read.
    """
    return len(_body(model).blocks) + 1


def hidden_size(model: Backbone) -> int:
    """The width ``d_model`` of the backbone's hidden states.

    Raises:
        ConfigError: Not a backbone we read.
    """
    return _body(model).width


# --8<-- [start:layer_states]
def layer_states(
    model: Backbone,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    token_type_ids: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """The hidden states after the embeddings and after every block, ``n_layers + 1`` tensors
    ``(B, T, d_model)``, as ``transformers``' ``output_hidden_states=True`` gives them: the last
    is the final hidden state (after the final norm of GPT-2, Llama and T5; see the module's
    docstring).

    The states stay in the autograd graph (wrap the call in ``torch.no_grad()`` to probe a
    frozen model).

    Args:
        model: ``GPT``, ``Llama``, ``Bert``, ``BertForMaskedLM``, ``BertForPreTraining``,
            ``T5Encoder`` or ``T5`` (its encoder).
        input_ids: Token ids ``(B, T)``.
        attention_mask: ``(B, T)``, 1 for tokens and 0 for padding; ``None``: no padding.
        token_type_ids: BERT's segment ids ``(B, T)``; BERT only.

    Raises:
        ConfigError: Not a backbone we read, or inputs of the wrong shape.
    """
    body = _body(model)
    _check_inputs(input_ids, attention_mask)
    blocks = list(body.blocks)
    states: list[torch.Tensor] = []

    def keep_input(module: nn.Module, args: tuple[Any, ...]) -> None:
        states.append(args[0])  # the first block's input: the embeddings, (B, T, d_model)

    def keep_output(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        states.append(output)  # the residual stream after this block, (B, T, d_model)

    handles = [blocks[0].register_forward_pre_hook(keep_input)]
    # The last block's output is not kept: the final state (after the final norm) replaces it.
    handles += [block.register_forward_hook(keep_output) for block in blocks[:-1]]
    try:
        final = body.run(input_ids, attention_mask, token_type_ids)
    finally:
        for handle in handles:
            handle.remove()
    return [*(s[:, body.virtual :] for s in states), final]


# --8<-- [end:layer_states]
