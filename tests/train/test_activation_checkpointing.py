"""Activation checkpointing recomputes blocks in the backward pass: the same loss and gradients,
the state dict unchanged, undone cleanly; a model without blocks is refused."""

import pytest
import torch
from torch import nn

from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.train.activation_checkpointing import checkpoint_blocks, uncheckpoint_blocks


def _grads(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout masks
    loss = model(ids).logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_same_loss_and_gradients_and_state_dict(family: str) -> None:
    torch.manual_seed(0)
    if family == "llama":
        model: nn.Module = Llama(LlamaConfig.from_name("tiny", vocab_size=97))
    else:
        model = GPT(GPTConfig.from_name("tiny", vocab_size=97, dropout=0.1))
    model.train()
    ids = torch.randint(0, 97, (2, 12))
    loss, grads = _grads(model, ids)
    keys = list(model.state_dict())
    checkpoint_blocks(model)
    checkpoint_blocks(model)  # idempotent
    loss2, grads2 = _grads(model, ids)
    torch.testing.assert_close(loss2, loss, rtol=1e-6, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(grads2[name], g, rtol=1e-5, atol=1e-6)
    assert list(model.state_dict()) == keys
    uncheckpoint_blocks(model)
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_model_without_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match="no transformer block in the Linear"):
        checkpoint_blocks(nn.Linear(2, 2))
