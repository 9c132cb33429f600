"""OLMoE: the registry entry, QK-norm, unnormalised top-k, and parity with Hugging Face's
``OlmoeForCausalLM`` (logits, gradients, training loss with router logits, round trip)."""

from typing import Any

import pytest
import torch

from groundwork.errors import CheckpointError
from groundwork.generate import GenerationConfig, generate, generate_uncached
from groundwork.interop.hf import config_from_hf_dict, from_hf, hf_config_dict, to_hf
from groundwork.models import registry
from groundwork.models.olmoe import Olmoe, OlmoeConfig, parameter_counts
from groundwork.train.objectives import IGNORE_INDEX, MoECausalLMObjective

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)

HF_CONFIG: dict[str, Any] = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts=6,
    num_experts_per_tok=3,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    initializer_range=0.1,
    router_aux_loss_coef=0.3,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
)


def _hf_olmoe(**overrides: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.OlmoeConfig(**HF_CONFIG | overrides, attn_implementation="eager")
    hf = transformers.OlmoeForCausalLM(config).eval()
    with torch.no_grad():  # the norms start at 1: make them matter
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return hf


def test_registry_lists_olmoe_and_counts_its_parameters() -> None:
    arch = registry.get("olmoe")
    config = arch.config("tiny", tie_embeddings=False)
    assert type(config) is OlmoeConfig and registry.arch_of(config) is arch
    model = registry.build_model(config)
    assert type(model) is Olmoe
    assert parameter_counts(config)["total"] == sum(p.numel() for p in model.parameters())
    attn = model.model.layers[0].self_attn
    assert attn.q_norm is not None and attn.q_norm.weight.shape == (64,)
    assert attn.k_norm is not None and attn.k_norm.weight.shape == (32,)  # 2 key heads of 16
    assert registry.arch_of(registry.get("mixtral").config("tiny")).name == "mixtral"


def test_top_k_weights_are_not_renormalised_unless_asked() -> None:
    idx = torch.randint(0, 512, (1, 6))
    for norm, check in ((False, lambda s: (s < 1 - 1e-4).all()), (True, lambda s: s == 1)):
        model = Olmoe(OlmoeConfig.from_name("tiny", norm_topk_prob=norm))
        model(idx)
        sums = model.router_outputs[0].weights.sum(-1)
        assert bool(torch.all(check(sums) if not norm else torch.isclose(sums, torch.ones(6))))


@pytest.mark.parity
@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_logits_gradients_and_loss_equal_transformers(norm_topk_prob: bool) -> None:
    hf = _hf_olmoe(norm_topk_prob=norm_topk_prob)
    ours = from_hf(hf)
    assert type(ours) is Olmoe and ours.config.norm_topk_prob is norm_topk_prob
    assert ours.config.n_experts == 6 and ours.config.top_k == 3
    idx = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, **TOL)
    targets = torch.cat([idx[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)  # (B, T)
    out = MoECausalLMObjective()(ours, (idx, targets))
    expected = hf(idx, labels=idx, output_router_logits=True).loss
    torch.testing.assert_close(out.loss, expected, **TOL)
    out.loss.backward()
    expected.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        hf_name = name.replace("mlp.router.", "mlp.gate.")
        torch.testing.assert_close(p.grad, theirs[hf_name].grad, **TOL, msg=name)


@pytest.mark.parity
def test_round_trip_and_config() -> None:
    torch.manual_seed(0)
    ours = Olmoe(OlmoeConfig.from_name("tiny", tie_embeddings=False)).eval()
    hf = to_hf(ours).eval()
    assert type(hf).__name__ == "OlmoeForCausalLM" and hf.config.num_experts == 8
    idx = torch.randint(0, 512, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), **TOL)
    back = from_hf(hf)
    assert back.config == ours.config
    d = hf_config_dict(ours.config)
    assert d["model_type"] == "olmoe" and d["architectures"] == ["OlmoeForCausalLM"]
    assert config_from_hf_dict(d) == ours.config
    with pytest.raises(CheckpointError, match="clip_qkv"):
        config_from_hf_dict({**d, "clip_qkv": 8.0})
    with pytest.raises(CheckpointError, match="head_dim"):
        config_from_hf_dict({**d, "head_dim": 8})


def test_greedy_generation_with_the_cache_equals_uncached() -> None:
    torch.manual_seed(0)
    model = Olmoe(OlmoeConfig.from_name("tiny")).eval()
    prompts = [[5, 7, 11, 13], [17, 19]]  # different lengths: left padding
    config = GenerationConfig(max_new_tokens=6, temperature=0)
    cached = generate(model, prompts, config, pad_id=0, return_logits=True)
    uncached = generate_uncached(model, prompts, config, pad_id=0, return_logits=True)
    assert cached.sequences == uncached.sequences
    assert cached.logits is not None and uncached.logits is not None
    torch.testing.assert_close(cached.logits, uncached.logits, **TOL)
