"""Parameter groups for weight decay and clipping by global norm (against torch's own)."""

import pytest
import torch
from torch import nn

from groundwork.train import build_adamw, clip_grad_norm, parameter_groups


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(self.norm(self.embed(x))))


def test_groups_decay_only_matrices_and_count_tied_once() -> None:
    decay, no_decay = parameter_groups(Tiny(), weight_decay=0.1)
    assert decay["names"] == ["proj.weight"]
    assert sorted(no_decay["names"]) == ["embed.weight", "norm.bias", "norm.weight", "proj.bias"]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    optimizer = build_adamw(Tiny(), lr=1e-3)
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == 5


def test_stacked_expert_weights_decay_and_their_biases_do_not() -> None:
    from groundwork.nn.moe import MoE, MoEConfig

    layer = MoE(MoEConfig(d_model=8, d_ff=16, n_experts=3, activation="gelu", bias=True))
    decay, no_decay = parameter_groups(layer, weight_decay=0.1)
    assert sorted(decay["names"]) == ["experts.down_proj", "experts.up_proj", "router.weight"]
    assert sorted(no_decay["names"]) == ["experts.down_bias", "experts.up_bias"]


@pytest.mark.parity
@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
def test_clip_equals_torch(max_norm: float) -> None:
    torch.manual_seed(0)
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 10, (3, 5))
    a(x).square().sum().backward()
    b(x).square().sum().backward()
    ours = clip_grad_norm(a.parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-6, atol=1e-7)
