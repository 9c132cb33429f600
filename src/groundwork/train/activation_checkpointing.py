"""Activation checkpointing: keep each transformer block's input, not its inner activations, and
recompute the block in the backward pass (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost"; QLoRA, Dettmers et al. 2023, fine-tunes this way).

Backpropagation needs every intermediate tensor of the forward pass; for a decoder they are
mostly the blocks' inner activations (queries, keys, attention output, the MLP's wide hidden
layer), :math:`O(L \\cdot B T (c_1 d + c_2 d_\\text{ff}))` numbers for :math:`L` blocks. With
checkpointing only each block's input is kept (:math:`L \\cdot B T d`) and one block's inner
activations at a time exist in the backward pass, at the price of a second forward pass of every
block (about a third more compute). The gradients are the same (tested).

:func:`checkpoint_blocks` is a model transform: it makes each block of a GPT, Llama, BERT or T5
model (found as ``torch.nn.ModuleList`` elements of the block classes) run its forward through
:func:`torch.utils.checkpoint.checkpoint` (non-reentrant) while the model trains, by setting the
block's ``forward`` on the instance, so the state dict and checkpoints are unchanged;
:func:`uncheckpoint_blocks` undoes it. Chapter 8 (training), used by chapter 13.
"""

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_blocks", "transformer_blocks", "uncheckpoint_blocks"]


def _block_classes() -> tuple[type, ...]:
    """Llama's blocks, T5's, and the shared block of GPT and BERT."""
    from groundwork.models.llama import LlamaBlock
    from groundwork.models.t5 import T5Block
    from groundwork.nn import TransformerBlock

    return (LlamaBlock, T5Block, TransformerBlock)


def _checkpointed(block: nn.Module, forward: Any, *args: Any, **kwargs: Any) -> Any:
    if block.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a GPT, Llama, BERT or T5 model, in order (what activation
    checkpointing recomputes and FSDP shards one by one)."""
    return [m for m in model.modules() if isinstance(m, _block_classes())]


def checkpoint_blocks(model: nn.Module) -> nn.Module:
    """Recompute every transformer block of ``model`` in the backward pass instead of keeping
    its activations (in place; returned). Idempotent.

    Raises:
        ValueError: ``model`` has no block of a family we know.
    """
    blocks = transformer_blocks(model)
    if not blocks:
        raise ValueError(
            f"no transformer block in the {type(model).__name__}: activation checkpointing "
            "wraps GPT, Llama, BERT and T5 blocks"
        )
    for block in blocks:
        if "forward" not in vars(block):  # not wrapped yet
            wrapped = functools.partial(_checkpointed, block, block.forward)
            block.forward = wrapped
    return model


def uncheckpoint_blocks(model: nn.Module) -> nn.Module:
    """Undo :func:`checkpoint_blocks` (in place; returned)."""
    for m in model.modules():
        if "forward" in vars(m) and isinstance(m, _block_classes()):
            del m.forward
    return model
