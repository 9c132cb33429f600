"""The transformer block: pre-LN and post-LN wiring."""

import torch

from groundwork.nn import GELUMLP, Attention, LayerNorm, TransformerBlock


def _block(norm_position: str) -> TransformerBlock:
    torch.manual_seed(0)
    return TransformerBlock(
        Attention(16, 4, bias=True),
        GELUMLP(16, 64),
        LayerNorm(16),
        LayerNorm(16),
        norm_position=norm_position,  # type: ignore[arg-type]
    )


def test_pre_ln_block_wiring() -> None:
    block = _block("pre")
    x = torch.randn(2, 5, 16)
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    torch.testing.assert_close(block(x), expected)


def test_post_ln_block_wiring_and_normalised_output() -> None:
    block = _block("post")
    x = torch.randn(2, 5, 16)
    h = block.ln_1(x + block.attn(x))
    expected = block.ln_2(h + block.mlp(h))
    y = block(x)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
