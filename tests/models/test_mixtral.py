"""Mixtral: config validation, registry entry, KV-cache decoding, router outputs, and parity with
Hugging Face's ``MixtralForCausalLM`` (logits, gradients, round trip, auxiliary loss)."""

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import CheckpointError, ConfigError
from groundwork.generate import GenerationConfig, generate, generate_uncached
from groundwork.interop.hf import (
    config_from_hf_dict,
    from_hf,
    hf_config_dict,
    hf_state_dict,
    load_hf_state_dict,
    to_hf,
)
from groundwork.models import registry
from groundwork.models.mixtral import (
    Mixtral,
    MixtralConfig,
    parameter_counts,
)
from groundwork.nn.moe import RouterOutput, router_aux_loss

TOL = dict(rtol=1e-5, atol=1e-5)


def test_config_validates_top_k() -> None:
    with pytest.raises(ConfigError, match="top_k"):
        MixtralConfig.from_name("tiny", n_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="n_experts"):
        MixtralConfig.from_name("tiny", n_experts=0)
    with pytest.raises(ConfigError, match="router_aux_loss_coef"):
        MixtralConfig.from_name("tiny", router_aux_loss_coef=-1.0)


def test_registry_lists_mixtral() -> None:
    assert "mixtral" in registry.names(causal_lm=True)
    arch = registry.get("mixtral")
    config = arch.config("tiny")
    assert type(config) is MixtralConfig and registry.arch_of(config) is arch
    assert type(registry.build_model(config)) is Mixtral
    assert registry.config_from_dict(registry.config_to_dict(config)) == config
    assert registry.hf_adapter_for_model_type("mixtral") is arch.hf
    # The Llama entry still owns plain Llama configs.
    assert registry.arch_of(registry.get("llama").config("tiny")).name == "llama"


def test_parameter_counts_match_the_model() -> None:
    config = MixtralConfig.from_name("tiny", tie_embeddings=False)
    model = Mixtral(config)
    counts = parameter_counts(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert parameter_counts(MixtralConfig.from_name("mixtral-8x7b"))["total"] == 46_702_792_704


def test_forward_records_one_router_output_per_layer() -> None:
    torch.manual_seed(0)
    config = MixtralConfig.from_name("tiny")
    model = Mixtral(config)
    idx = torch.randint(0, config.vocab_size, (2, 5))
    logits = model(idx)
    assert logits.shape == (2, 5, config.vocab_size)
    assert len(model.router_outputs) == config.n_layers
    out = model.router_outputs[0]
    assert isinstance(out, RouterOutput)
    assert out.probs.shape == (10, config.n_experts) and out.expert_ids.shape == (10, 2)
    loss = router_aux_loss(model.router_outputs)
    loss.backward()  # the aux loss reaches the routers
    router = model.model.layers[0].mlp.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_kv_cache_decoding_equals_full_forward() -> None:
    torch.manual_seed(0)
    config = MixtralConfig.from_name("tiny")
    model = Mixtral(config).eval()
    idx = torch.randint(0, config.vocab_size, (2, 10))
    cache = model.new_kv_cache(2, 16)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :3], kv_cache=cache)]
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(3, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_greedy_generation_with_the_cache_equals_uncached() -> None:
    torch.manual_seed(0)
    model = Mixtral(MixtralConfig.from_name("tiny")).eval()
    prompts = [[5, 7, 11, 13], [17, 19]]  # different lengths: left padding
    config = GenerationConfig(max_new_tokens=8, temperature=0)  # greedy
    cached = generate(model, prompts, config, pad_id=0, return_logits=True)
    uncached = generate_uncached(model, prompts, config, pad_id=0, return_logits=True)
    assert cached.sequences == uncached.sequences
    assert cached.logits is not None and uncached.logits is not None
    torch.testing.assert_close(cached.logits, uncached.logits, **TOL)


# ----------------------------------------------------------------------------------------------
# Parity with transformers' MixtralForCausalLM

HF_CONFIG: dict[str, Any] = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=6,
    num_experts_per_tok=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    initializer_range=0.1,
    bos_token_id=None,
    eos_token_id=None,
)


def _hf_mixtral(**overrides: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.MixtralConfig(**HF_CONFIG | overrides, attn_implementation="eager")
    return transformers.MixtralForCausalLM(config).eval()


def _batch(vocab_size: int, T: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    idx = torch.randint(0, vocab_size, (2, T), generator=generator)
    attention_mask = torch.ones(2, T, dtype=torch.long)
    attention_mask[1, :5] = 0  # left padding in the second row
    return idx, attention_mask


@pytest.mark.parity
def test_from_hf_config_and_logits_equal() -> None:
    hf = _hf_mixtral()
    ours = from_hf(hf)
    assert type(ours) is Mixtral
    c = ours.config
    assert (c.n_experts, c.top_k, c.n_heads, c.n_kv_heads, c.d_ff) == (6, 2, 4, 2, 48)
    assert c.router_aux_loss_coef == hf.config.router_aux_loss_coef
    idx, attention_mask = _batch(hf.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, **TOL)
        expected = hf(idx, attention_mask=attention_mask).logits
        got = ours(idx, attention_mask=attention_mask)
        valid = attention_mask.bool()
        torch.testing.assert_close(got[valid], expected[valid], **TOL)


@pytest.mark.parity
def test_gradients_of_a_loss_equal() -> None:
    hf = _hf_mixtral()
    ours = from_hf(hf)
    idx, _ = _batch(hf.config.vocab_size)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())

    loss_hf = loss_of(hf(idx).logits)
    loss_ours = loss_of(ours(idx))
    torch.testing.assert_close(loss_ours, loss_hf, **TOL)
    loss_hf.backward()
    loss_ours.backward()
    hf_params = dict(hf.named_parameters())
    key_map = hf_state_dict_keys(ours)
    for key, p in ours.named_parameters():
        hf_grad = hf_params[key_map[key]].grad
        assert p.grad is not None and hf_grad is not None, key
        torch.testing.assert_close(p.grad, hf_grad, **TOL)
    assert len(list(ours.named_parameters())) == len(hf_params)


def hf_state_dict_keys(model: Mixtral) -> dict[str, str]:
    from groundwork.models.mixtral_hf import mixtral_key_map

    return mixtral_key_map(model.config)


@pytest.mark.parity
def test_router_aux_loss_equals_transformers() -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    hf = _hf_mixtral()
    ours = from_hf(hf)
    idx, attention_mask = _batch(hf.config.vocab_size)
    with torch.no_grad():
        out = hf(idx, attention_mask=attention_mask, output_router_logits=True)
        ours(idx, attention_mask=attention_mask)
    expected = load_balancing_loss_func(out.router_logits, 6, 2, attention_mask)
    got = router_aux_loss(ours.router_outputs, attention_mask)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parity
def test_moe_objective_equals_transformers_loss_with_router_logits() -> None:
    """lm loss + router_aux_loss_coef * aux, and its gradients, as MixtralForCausalLM's loss."""
    from groundwork.train.objectives import IGNORE_INDEX, MoECausalLMObjective

    hf = _hf_mixtral(router_aux_loss_coef=0.3)  # large enough to matter
    ours = from_hf(hf)
    idx, _ = _batch(hf.config.vocab_size)
    targets = torch.cat([idx[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)  # (B, T)
    out = MoECausalLMObjective()(ours, (idx, targets))
    expected = hf(idx, labels=idx, output_router_logits=True).loss
    torch.testing.assert_close(out.loss, expected, **TOL)
    assert out.items == targets.numel() - 2 and 0 < float(out.metrics["max_expert_share"]) <= 1
    out.loss.backward()
    expected.backward()
    router = "model.layers.0.mlp.router.weight"
    hf_router = dict(hf.named_parameters())["model.layers.0.mlp.gate.weight"]
    torch.testing.assert_close(dict(ours.named_parameters())[router].grad, hf_router.grad, **TOL)


def test_moe_objective_refuses_a_dense_model() -> None:
    from groundwork.errors import ConfigError
    from groundwork.models.llama import Llama, LlamaConfig
    from groundwork.train.objectives import MoECausalLMObjective

    dense = Llama(LlamaConfig.from_name("tiny"))
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="no router outputs"):
        MoECausalLMObjective()(dense, (idx, idx))


@pytest.mark.parity
def test_to_hf_round_trip() -> None:
    torch.manual_seed(0)
    ours = Mixtral(MixtralConfig.from_name("tiny", n_experts=6, tie_embeddings=False)).eval()
    hf = to_hf(ours).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    assert hf.config.num_local_experts == 6 and hf.config.num_experts_per_tok == 2
    idx, _ = _batch(ours.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), **TOL)
        back = from_hf(hf)
        torch.testing.assert_close(back(idx), ours(idx), **TOL)
    assert back.config == ours.config
    d = hf_config_dict(ours.config)
    assert d["model_type"] == "mixtral" and d["architectures"] == ["MixtralForCausalLM"]
    assert config_from_hf_dict(d) == ours.config


def test_checkpoint_with_another_expert_count_is_refused() -> None:
    state = hf_state_dict(Mixtral(MixtralConfig.from_name("tiny", n_experts=6)))
    with pytest.raises(CheckpointError, match=r"mlp\.gate\.weight.*\(4, 64\).*\(6, 64\)"):
        load_hf_state_dict(Mixtral(MixtralConfig.from_name("tiny", n_experts=4)), state)


def test_unsupported_hf_options_are_refused() -> None:
    d = hf_config_dict(MixtralConfig.from_name("tiny"))
    with pytest.raises(CheckpointError, match="sliding_window"):
        config_from_hf_dict({**d, "sliding_window": 16})
    with pytest.raises(CheckpointError, match="router_jitter_noise"):
        config_from_hf_dict({**d, "router_jitter_noise": 0.1})
    with pytest.raises(ConfigError, match="top_k"):
        config_from_hf_dict({**d, "num_experts_per_tok": 5})
