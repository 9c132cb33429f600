"""The Switch-style GPT: config validation, registry entry, the MoE blocks, equality with GPT when
there is one expert, capacity in training and eval, cached decoding, and its training loss."""

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError
from groundwork.models import registry
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.switch_gpt import (
    SwitchGPT,
    SwitchGPTConfig,
    SwitchMLP,
    parameter_counts,
)
from groundwork.nn.moe import router_aux_loss, router_z_loss

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)


def tiny(**kw: Any) -> SwitchGPTConfig:
    return SwitchGPTConfig.from_name("tiny", **kw)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(n_experts=2, top_k=3), r"top_k \(3\) > n_experts \(2\)"),
        (dict(moe_every=3), r"moe_every \(3\) > n_layers \(2\)"),
        (dict(capacity_factor=0.0), "capacity_factor must be a positive number"),
        (dict(eval_capacity_factor=-1.0), "eval_capacity_factor must be a positive number"),
        (dict(router="noisy_topk"), "router must be one of"),
        (dict(router_aux_loss_coef=-0.1), "router_aux_loss_coef must be >= 0"),
        (dict(router_z_loss_coef=float("nan")), "router_z_loss_coef must be >= 0"),
        (dict(n_experts=0), "n_experts"),
    ],
)
def test_bad_configs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**fields)


def test_registry_lists_switch_gpt() -> None:
    arch = registry.get("switch-gpt")
    config = arch.config("tiny")
    assert type(config) is SwitchGPTConfig and registry.arch_of(config) is arch
    assert type(registry.build_model(config)) is SwitchGPT
    assert registry.config_from_dict(registry.config_to_dict(config)) == config
    assert "switch-gpt" in registry.names(causal_lm=True)
    assert registry.arch_of(GPTConfig.from_name("tiny")).name == "gpt"  # GPT keeps its configs


@pytest.mark.parametrize("moe_every", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_counts_match_the_model(moe_every: int, bias: bool) -> None:
    config = tiny(n_layers=4, moe_every=moe_every, bias=bias, n_experts=3, top_k=2)
    model = SwitchGPT(config)
    counts = parameter_counts(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    dense = GPT(GPTConfig.from_name("tiny", n_layers=4, bias=bias))
    # 3 experts, 2 active: one MLP more per MoE block than the dense model, and the routers
    n_moe = 4 // moe_every
    mlp = sum(p.numel() for p in dense.blocks[0].mlp.parameters())
    assert counts["active"] == sum(p.numel() for p in dense.parameters()) + n_moe * (mlp + 3 * 64)


def test_every_other_block_has_experts() -> None:
    model = SwitchGPT(tiny(n_layers=4, moe_every=2))
    kinds = [type(block.mlp).__name__ for block in model.blocks]
    assert kinds == ["GELUMLP", "SwitchMLP", "GELUMLP", "SwitchMLP"]
    assert isinstance(model.blocks[1].mlp, SwitchMLP)
    model(torch.randint(0, 512, (2, 6)))
    assert len(model.router_outputs) == 2
    assert model.router_outputs[0].expert_ids.shape == (12, 1)


def test_one_expert_without_capacity_is_gpt() -> None:
    """With a single expert the router's probability is 1: the model is GPT-2 exactly."""
    torch.manual_seed(0)
    config = tiny(n_experts=1, capacity_factor=None, n_layers=3, moe_every=1)
    switch = SwitchGPT(config).eval()
    gpt = GPT(GPTConfig.from_name("tiny", n_layers=3)).eval()
    state = {}
    for name, p in switch.state_dict().items():
        if ".mlp.router." in name:
            continue
        name = name.replace("mlp.experts.up_proj", "mlp.up_proj.weight")
        name = name.replace("mlp.experts.down_proj", "mlp.down_proj.weight")
        name = name.replace("mlp.experts.up_bias", "mlp.up_proj.bias")
        name = name.replace("mlp.experts.down_bias", "mlp.down_proj.bias")
        state[name] = p[0] if ".mlp." in name else p
    gpt.load_state_dict(state)
    idx = torch.randint(0, 512, (2, 9))
    torch.testing.assert_close(switch(idx), gpt(idx), **TOL)


def test_capacity_drops_in_training_and_the_eval_factor_in_eval() -> None:
    torch.manual_seed(0)
    model = SwitchGPT(tiny(capacity_factor=0.5, eval_capacity_factor=4.0))
    idx = torch.randint(0, 512, (4, 16))
    model.train()(idx)
    assert all(o.dropped > 0 for o in model.router_outputs)  # capacity = 8 of 64 tokens
    model.eval()(idx)
    assert all(o.dropped == 0 for o in model.router_outputs)  # capacity = 64


def test_kv_cache_decoding_equals_full_forward() -> None:
    torch.manual_seed(0)
    # dropless: a token's output depends on it alone
    model = SwitchGPT(tiny(top_k=2, router="softmax_topk", capacity_factor=None)).eval()
    idx = torch.randint(0, 512, (2, 10))
    cache = model.new_kv_cache(2, 16)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :4], kv_cache=cache)]
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_moe_objective_adds_the_aux_and_z_losses_of_the_config() -> None:
    from groundwork.train.objectives import IGNORE_INDEX, MoECausalLMObjective

    torch.manual_seed(0)
    model = SwitchGPT(tiny(router_aux_loss_coef=0.3, router_z_loss_coef=0.2, n_layers=2))
    idx = torch.randint(0, 512, (2, 12))
    targets = torch.cat([idx[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)  # (B, T)
    torch.manual_seed(1)
    out = MoECausalLMObjective()(model, (idx, targets))
    torch.manual_seed(1)
    logits = model(idx)
    outputs = model.router_outputs
    lm = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    z = torch.stack([router_z_loss(o.logits) for o in outputs]).mean()
    expected = lm + 0.3 * router_aux_loss(outputs, per_layer=True) + 0.2 * z
    torch.testing.assert_close(out.loss, expected, **TOL)
    torch.testing.assert_close(out.metrics["z_loss"], z.detach(), **TOL)
    dropped = sum(o.dropped for o in outputs) / sum(o.kept.numel() for o in outputs)
    assert out.metrics["dropped_fraction"] == pytest.approx(dropped)
    for layer in range(2):  # each layer's share of the assignments per expert
        shares = [out.metrics[f"expert_load/{layer}/{e}"] for e in range(4)]
        counts = outputs[layer].tokens_per_expert.float()
        assert shares == pytest.approx((counts / counts.sum()).tolist())
    model.config.router_aux_loss_per_layer = False  # pooled over the blocks, as transformers
    torch.manual_seed(1)
    pooled = MoECausalLMObjective()(model, (idx, targets))
    torch.testing.assert_close(pooled.metrics["aux_loss"], router_aux_loss(outputs), **TOL)
    out.loss.backward()
    router = model.blocks[0].mlp.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_info_counts_the_active_parameters_as_the_engine_does() -> None:
    from groundwork.models.info import info
    from groundwork.train.flops import model_flops_per_token

    config = tiny(n_experts=8, top_k=2, router="softmax_topk")
    report = info(config, seq_len=128)
    assert report["parameters"]["active"] < report["parameters"]["total"]
    # info's training FLOPs count the causal half of attention, the engine's the full window
    attention_half = 6 * 2 * 128 * 64  # 12 L T d against 6 L T d
    engine = model_flops_per_token(SwitchGPT(config), 128)
    assert report["flops_per_token"]["training"] == engine - attention_half
