"""The pieces GPT and Llama share (``models/decoder.py``): init, KV cache, parameter counts."""

import pytest
import torch

from groundwork.models import registry
from groundwork.models.decoder import DecoderLM, init_weights
from groundwork.nn import KVCache

DECODERS = ["gpt", "llama"]


@pytest.mark.parametrize("name", DECODERS)
def test_decoders_share_the_base_class(name: str) -> None:
    model = registry.build_model(registry.find_preset("tiny", name))
    assert isinstance(model, DecoderLM)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("tie", [True, False])
def test_num_parameters_matches_the_family_counts(name: str, tie: bool) -> None:
    overrides = {"tie_embeddings": tie}
    if name == "gpt" and not tie:
        overrides["norm_position"] = "post"
    config = registry.find_preset("tiny", name, **overrides)
    with torch.device("meta"):
        model = registry.build_model(config)
    counts = registry.get(name).parameter_counts(config)  # type: ignore[misc]
    assert model.num_parameters() == counts["total"]
    assert model.num_parameters(exclude_embeddings=True) == counts["total"] - counts["embeddings"]


@pytest.mark.parametrize("name", DECODERS)
def test_new_kv_cache_has_the_model_shape_dtype_and_length(name: str) -> None:
    config = registry.find_preset("tiny", name)
    model = registry.build_model(config).to(torch.float64)
    cache = model.new_kv_cache(3)
    assert isinstance(cache, KVCache) and cache.seq_len == 0
    c = config
    assert cache.k.shape == (c.n_layers, 3, c.n_kv_heads, c.max_seq_len, c.d_head)
    assert cache.k.dtype == torch.float64
    assert model.new_kv_cache(1, max_seq_len=7).k.shape[3] == 7


@pytest.mark.parametrize("name", DECODERS)
def test_init_scales_the_residual_projections(name: str) -> None:
    torch.manual_seed(0)
    config = registry.find_preset("tiny", name, d_model=256, n_layers=8, n_heads=4)
    model = registry.build_model(config)
    std = {n: p.std().item() for n, p in model.named_parameters() if p.dim() == 2}
    scaled = 0.02 / (2 * 8) ** 0.5
    for n, s in std.items():
        expected = scaled if n.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
        assert s == pytest.approx(expected, rel=0.1), n


def test_init_weights_zeroes_linear_biases() -> None:
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Embedding(5, 4))
    init_weights(layer, n_layers=1)
    assert torch.count_nonzero(layer[0].bias) == 0
