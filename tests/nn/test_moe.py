"""The sparse MoE layer: sort-based dispatch against the naive reference, the capacity rule, the
auxiliary losses, and parity with transformers' Mixtral and Switch Transformers blocks.

The sort-based dispatch and the reference agree to 1e-6 rather than bit for bit: both add the
experts' contributions in the same order (ascending expert id), but an expert's matmul runs on
its slice of tokens in one and on all tokens in the other, and BLAS may block (and so round) a
row differently for different row counts.
"""

import math
from typing import Any

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.nn import GELUMLP
from groundwork.nn.moe import (
    MoE,
    MoEConfig,
    RouterOutput,
    load_balancing_loss,
    moe_reference,
    router_aux_loss,
    router_z_loss,
)

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)
EXACTISH: dict[str, Any] = dict(rtol=0.0, atol=1e-6)  # see the module docstring


def make(**kw: Any) -> MoE:
    torch.manual_seed(0)
    fields: dict[str, Any] = dict(d_model=24, d_ff=40, n_experts=6, top_k=2)
    return MoE(MoEConfig(**(fields | kw)))


# ---------------------------------------------------------------- dispatch against the reference


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "switch"])
@pytest.mark.parametrize("capacity_factor", [None, 0.5])
@pytest.mark.parametrize("bias", [False, True])  # without biases, F.grouped_mm may run
def test_sorted_dispatch_equals_reference(
    activation: str, router: str, capacity_factor: float | None, bias: bool
) -> None:
    layer = make(
        activation=activation,
        router=router,
        capacity_factor=capacity_factor,
        bias=bias,
        n_shared_experts=1,
    ).eval()
    x = torch.randn(3, 17, 24, requires_grad=True)
    out, aux = layer(x)
    ref, kept = moe_reference(layer, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, **EXACTISH)
    assert torch.equal(aux.kept, kept)
    assert aux.dropped == int((~kept).sum())
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, **TOL)


def test_router_output_fields() -> None:
    layer = make().eval()
    x = torch.randn(2, 5, 24)
    _, aux = layer(x)
    assert aux.logits.shape == aux.probs.shape == (10, 6)
    assert aux.expert_ids.shape == aux.weights.shape == aux.kept.shape == (10, 2)
    assert torch.equal(aux.tokens_per_expert, torch.bincount(aux.expert_ids.flatten(), minlength=6))
    torch.testing.assert_close(aux.weights.sum(-1), torch.ones(10))  # renormalised
    assert aux.dropped == 0 and bool(aux.kept.all())
    # a (N, d) input works too and gives the same rows
    out2d, _ = layer(x.reshape(10, 24))
    torch.testing.assert_close(out2d, layer(x)[0].reshape(10, 24), rtol=0, atol=0)


def test_switch_weights_are_unnormalised_top1_probability() -> None:
    layer = make(router="switch", top_k=1).eval()
    _, aux = layer(torch.randn(2, 7, 24))
    top, ids = aux.probs.max(-1)
    assert torch.equal(aux.expert_ids[:, 0], ids)
    assert torch.equal(aux.weights[:, 0], top)


def test_noisy_topk_is_softmax_topk_in_eval_and_random_in_training() -> None:
    noisy, plain = make(router="noisy_topk"), make(router="softmax_topk")
    plain.load_state_dict(noisy.state_dict(), strict=False)  # all but noise.weight
    x = torch.randn(2, 9, 24)
    torch.testing.assert_close(noisy.eval()(x)[0], plain.eval()(x)[0], **EXACTISH)
    noisy.train()
    assert not torch.equal(noisy(x)[0], noisy(x)[0])


def test_router_jitter_only_in_training() -> None:
    jittery, plain = make(router_jitter=0.5).eval(), make().eval()
    x = torch.randn(2, 9, 24)
    assert torch.equal(jittery(x)[0], plain(x)[0])
    jittery.train()
    assert not torch.equal(jittery(x)[1].logits, jittery(x)[1].logits)


# ---------------------------------------------------------------- capacity


def test_large_capacity_equals_dropless() -> None:
    dropless = make().eval()
    roomy = make(capacity_factor=3.0).eval()  # capacity = N * k * 3 / 6 = N: nothing can drop
    x = torch.randn(4, 8, 24)
    (out, _), (out_roomy, aux_roomy) = dropless(x), roomy(x)
    assert aux_roomy.dropped == 0
    assert torch.equal(out, out_roomy)


def test_small_capacity_drops_later_tokens() -> None:
    layer = make(capacity_factor=0.5).eval()
    x = torch.randn(2, 12, 24)
    out, aux = layer(x)
    n, k, e = 24, 2, 6
    capacity = math.ceil(0.5 * n * k / e)
    assert layer.config.capacity(n) == capacity == 4
    counts = aux.tokens_per_expert
    assert aux.dropped == int((counts - capacity).clamp(min=0).sum()) > 0
    # within each expert, the first `capacity` tokens in flattened order are kept
    for expert in range(e):
        rows, slots = torch.nonzero(aux.expert_ids == expert, as_tuple=True)  # token order
        assert aux.kept[rows, slots].tolist() == [i < capacity for i in range(len(rows))]
    # a token whose assignments were all dropped gets 0 (the residual carries it on)
    gone = ~aux.kept.any(-1)
    assert gone.any()
    assert torch.equal(out.reshape(n, -1)[gone], torch.zeros(int(gone.sum()), 24))


def test_eval_capacity_factor_applies_in_eval_mode_only() -> None:
    layer = make(capacity_factor=0.5, eval_capacity_factor=3.0)
    assert layer.config.capacity(24) == 4
    assert layer.config.capacity(24, training=False) == 24
    x = torch.randn(2, 12, 24)
    assert layer.train()(x)[1].dropped > 0
    _, aux = layer.eval()(x)
    assert aux.dropped == 0
    torch.testing.assert_close(layer(x)[0], make()(x)[0], **EXACTISH)  # the dropless output
    no_capacity = make(eval_capacity_factor=0.5).eval()  # without a capacity factor: dropless
    assert no_capacity.config.capacity(24, training=False) is None


def test_gelu_tanh_expert_is_gpt2s_mlp() -> None:
    layer = make(activation="gelu_tanh", bias=True, n_experts=1, top_k=1, router="switch")
    mlp = GELUMLP(24, 40, bias=True)
    with torch.no_grad():
        mlp.up_proj.weight.copy_(layer.experts.up_proj[0])
        mlp.up_proj.bias.copy_(layer.experts.up_bias[0])
        mlp.down_proj.weight.copy_(layer.experts.down_proj[0])
        mlp.down_proj.bias.copy_(layer.experts.down_bias[0])
    x = torch.randn(2, 5, 24)
    out, aux = layer(x)  # one expert: probability 1, weight 1
    torch.testing.assert_close(out, mlp(x), **TOL)
    assert torch.equal(aux.weights, torch.ones(10, 1))


def test_capacity_of_one_keeps_one_token_per_expert() -> None:
    layer = make(capacity_factor=0.01).eval()
    _, aux = layer(torch.randn(1, 10, 24))
    assert layer.config.capacity(10) == 1
    assert int(aux.kept.sum()) == int((aux.tokens_per_expert > 0).sum())


# ---------------------------------------------------------------- losses and gradients


def test_load_balancing_loss_formula() -> None:
    e, k, n = 4, 2, 8
    probs = torch.full((n, e), 1 / e)
    ids = torch.tensor([[0, 1], [2, 3]] * (n // 2))
    assert load_balancing_loss(probs, ids).item() == pytest.approx(k)  # perfectly balanced
    skewed = torch.tensor([[0, 1]] * n)
    p = torch.zeros(n, e)
    p[:, 0] = p[:, 1] = 0.5
    # f = (1, 1, 0, 0), P = (.5, .5, 0, 0): E * (0.5 + 0.5) = 4
    assert load_balancing_loss(p, skewed).item() == pytest.approx(4.0)


def test_pooled_balance_lets_opposite_layers_cancel_and_per_layer_does_not() -> None:
    """Layer 1 sends everything to expert 0, layer 2 to expert 1: pooled over the layers the
    experts look balanced (as transformers computes it), each layer alone is collapsed."""
    e, n = 2, 6
    outputs = []
    for expert in (0, 1):
        probs = torch.zeros(n, e)
        probs[:, expert] = 1.0
        ids = torch.full((n, 1), expert)
        kept = torch.ones(n, 1, dtype=torch.bool)
        counts = torch.bincount(ids.flatten(), minlength=e)
        outputs.append(RouterOutput(probs.log(), probs, ids, probs[:, :1], kept, counts, 0))
    assert router_aux_loss(outputs).item() == pytest.approx(1.0)  # f = P = (1/2, 1/2)
    assert router_aux_loss(outputs, per_layer=True).item() == pytest.approx(2.0)  # E * 1 * 1
    per_layer = [load_balancing_loss(o.probs, o.expert_ids) for o in outputs]
    assert router_aux_loss(outputs, per_layer=True) == torch.stack(per_layer).mean()


def test_router_z_loss_formula() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = (math.log(2.0) ** 2 + math.log(4.0) ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected)


@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "switch"])
def test_gradients_reach_the_router(router: str) -> None:
    layer = make(router=router).train()
    out, aux = layer(torch.randn(2, 9, 24))
    loss = (
        out.sum()
        + 0.01 * load_balancing_loss(aux.probs, aux.expert_ids)
        + 0.001 * router_z_loss(aux.logits)
    )
    loss.backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    if layer.noise is not None:
        assert layer.noise.weight.grad is not None and layer.noise.weight.grad.abs().sum() > 0
    assert layer.experts.up_proj.grad is not None


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(top_k=3, n_experts=2), r"top_k \(3\) > n_experts \(2\)"),
        (dict(top_k=0), "top_k must be a positive integer"),
        (dict(capacity_factor=0.0), "capacity_factor must be a positive number"),
        (dict(capacity_factor=-1.0), "capacity_factor must be a positive number"),
        (dict(eval_capacity_factor=0.0), "eval_capacity_factor must be a positive number"),
        (dict(activation="silu"), "activation must be one of"),
        (dict(router="top2"), "router must be one of"),
        (dict(n_shared_experts=-1), "n_shared_experts must be an integer >= 0"),
        (dict(router_jitter=1.0), "router_jitter must be in"),
    ],
)
def test_bad_config(kw: dict[str, Any], match: str) -> None:
    fields: dict[str, Any] = dict(d_model=24, d_ff=40, n_experts=6, top_k=2)
    with pytest.raises(ConfigError, match=match):
        MoEConfig(**(fields | kw))


def test_wrong_input_width() -> None:
    with pytest.raises(ConfigError, match=r"d_model=24.*got \(2, 3, 16\)"):
        make()(torch.randn(2, 3, 16))


# ---------------------------------------------------------------- parity with transformers


def _mixtral_block(layer: MoE, experts_implementation: str = "eager") -> Any:
    """transformers' MixtralSparseMoeBlock with random weights, copied into ``layer``.

    ``experts_implementation``: its eager loop over experts, or ``grouped_mm``/``batched_mm``
    (a ``MixtralForCausalLM`` picks ``grouped_mm`` when it can)."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    c = layer.config
    config = MixtralConfig(
        hidden_size=c.d_model,
        intermediate_size=c.d_ff,
        num_local_experts=c.n_experts,
        num_experts_per_tok=c.top_k,
        router_jitter_noise=0.0,
    )
    config._experts_implementation = experts_implementation
    hf = MixtralSparseMoeBlock(config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
        load_mixtral_block(layer, hf)
    return hf


def load_mixtral_block(layer: MoE, hf: Any) -> None:
    """Copy a transformers 5.x MixtralSparseMoeBlock (fused ``gate_up_proj`` (E, 2f, d),
    ``down_proj`` (E, d, f), ``gate.weight`` (E, d)) into ``layer``."""
    f = layer.config.d_ff
    assert layer.experts.gate_proj is not None
    with torch.no_grad():
        layer.router.weight.copy_(hf.gate.weight)
        layer.experts.gate_proj.copy_(hf.experts.gate_up_proj[:, :f])
        layer.experts.up_proj.copy_(hf.experts.gate_up_proj[:, f:])
        layer.experts.down_proj.copy_(hf.experts.down_proj)


@pytest.mark.parity
@pytest.mark.parametrize("experts_implementation", ["eager", "grouped_mm", "batched_mm"])
def test_matches_mixtral_sparse_moe_block(experts_implementation: str) -> None:
    ours = make(router="softmax_topk", activation="swiglu")
    hf = _mixtral_block(ours, experts_implementation)
    assert hf.experts.config._experts_implementation == experts_implementation
    x = torch.randn(3, 11, 24)
    x_ours, x_hf = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, aux = ours(x_ours)
    expected = hf(x_hf)
    torch.testing.assert_close(out, expected, **TOL)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (expected * g).sum().backward()
    assert x_ours.grad is not None and x_hf.grad is not None
    torch.testing.assert_close(x_ours.grad, x_hf.grad, **TOL)
    torch.testing.assert_close(ours.router.weight.grad, hf.gate.weight.grad, **TOL)
    e = ours.experts
    assert e.gate_proj is not None
    assert e.gate_proj.grad is not None and e.up_proj.grad is not None
    fused = torch.cat([e.gate_proj.grad, e.up_proj.grad], dim=1)
    torch.testing.assert_close(fused, hf.experts.gate_up_proj.grad, **TOL)
    torch.testing.assert_close(e.down_proj.grad, hf.experts.down_proj.grad, **TOL)
    # the routing the block used is the one we report
    _, hf_weights, hf_ids = hf.gate(x.reshape(-1, 24))
    assert torch.equal(aux.expert_ids, hf_ids)
    torch.testing.assert_close(aux.weights, hf_weights, **TOL)


@pytest.mark.parity
def test_load_balancing_loss_matches_mixtral() -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    layer = make(n_experts=6, top_k=2).eval()
    x = torch.randn(3, 11, 24)
    _, aux = layer(x)
    expected = load_balancing_loss_func((aux.logits,), 6, 2)
    torch.testing.assert_close(load_balancing_loss(aux.probs, aux.expert_ids), expected, **TOL)
    mask = (torch.arange(11) < torch.tensor([[11], [7], [3]])).long()  # (B, T) padding mask
    expected = load_balancing_loss_func((aux.logits,), 6, 2, attention_mask=mask)
    ours = load_balancing_loss(aux.probs, aux.expert_ids, mask=mask)
    torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parity
def test_losses_match_switch_transformers() -> None:
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        load_balancing_loss_func,
        router_z_loss_func,
    )

    layer = make(router="switch", top_k=1, n_experts=4).eval()
    _, aux = layer(torch.randn(1, 13, 24))
    torch.testing.assert_close(
        router_z_loss(aux.logits), router_z_loss_func(aux.logits[None]), **TOL
    )
    expected = load_balancing_loss_func(aux.probs[None], aux.expert_ids[None, :, 0])
    torch.testing.assert_close(load_balancing_loss(aux.probs, aux.expert_ids), expected, **TOL)


def _switch_sparse_mlp(layer: MoE, expert_capacity: int) -> Any:
    """transformers' SwitchTransformersSparseMLP with random weights, copied into ``layer``."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersSparseMLP,
    )

    c = layer.config
    hf: Any = SwitchTransformersSparseMLP(
        SwitchTransformersConfig(
            d_model=c.d_model,
            d_ff=c.d_ff,
            num_experts=c.n_experts,
            expert_capacity=expert_capacity,
            router_jitter_noise=0.0,
            dense_act_fn="relu",
            dropout_rate=0.0,
        )
    ).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
        layer.router.weight.copy_(hf.router.classifier.weight)
        for i in range(c.n_experts):
            layer.experts.up_proj[i].copy_(hf.experts[f"expert_{i}"].wi.weight)
            layer.experts.down_proj[i].copy_(hf.experts[f"expert_{i}"].wo.weight)
    return hf


@pytest.mark.parity
def test_matches_switch_sparse_mlp_with_dropping() -> None:
    """Switch counts capacity per sequence (its routing groups are the batch rows) and returns 0
    for a dropped token (``SwitchTransformersLayerFF`` adds the residual). Our capacity counts
    over all ``B*T`` tokens, so one sequence at a time is the same rule."""
    ours = make(router="switch", top_k=1, n_experts=4, activation="relu", capacity_factor=0.75)
    hf = _switch_sparse_mlp(ours, expert_capacity=3)
    assert ours.config.capacity(16) == 3  # ceil(0.75 * 16 * 1 / 4)
    x = torch.randn(2, 16, 24)
    expected = hf(x.clone())
    rows = [ours(x[i : i + 1]) for i in range(2)]
    assert all(aux.dropped > 0 for _, aux in rows)  # 16 tokens, at most 4 * 3 kept
    torch.testing.assert_close(torch.cat([out for out, _ in rows]), expected, **TOL)
    # which tokens were dropped is the same too: Switch returns exact zeros for them
    dropped_hf = (expected == 0).all(-1)
    dropped_ours = torch.stack([~aux.kept[:, 0] for _, aux in rows])
    assert torch.equal(dropped_ours, dropped_hf)


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu"])
def test_grouped_mm_path_equals_loop_over_experts(activation: str) -> None:
    layer = make(activation=activation, n_experts=4).eval()
    x = torch.randn(2, 32, 24, requires_grad=True)
    out, aux = layer(x)
    assert bool((aux.tokens_per_expert > 0).all())  # no empty expert: grouped_mm may run
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.square().sum(), [x, *params])
    layer.experts.use_grouped_mm = False
    out_loop, _ = layer(x)
    grads_loop = torch.autograd.grad(out_loop.square().sum(), [x, *params])
    torch.testing.assert_close(out, out_loop, **EXACTISH)
    for g, g_loop in zip(grads, grads_loop, strict=True):
        torch.testing.assert_close(g, g_loop, **TOL)


def test_an_expert_without_tokens_gets_no_gradient_and_no_error() -> None:
    layer = make(n_experts=6, top_k=1).train()
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[2] = 1.0  # every token with a positive feature sum goes to expert 2
    x = torch.rand(2, 5, 24)
    out, aux = layer(x)
    assert aux.tokens_per_expert.tolist() == [0, 0, 10, 0, 0, 0]
    out.sum().backward()
    assert layer.experts.up_proj.grad is not None
    assert torch.equal(layer.experts.up_proj.grad[0], torch.zeros(40, 24))
