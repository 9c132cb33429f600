"""Our FLOP counts against PyTorch's ``FlopCounterMode`` (:func:`measured_flops`), to the FLOP.

FlopCounterMode counts matmuls, $2mkn$ each, and nothing else; each expected count below is
written out by hand from the config: 2 FLOPs per matrix weight and token forward (a bias, added
by ``addmm``, costs nothing), $2 \\cdot 2 B H T_q T_k d_{head}$ per attention layer ($QK^\\top$ and
$AV$, dense: a causal mask does not shrink the matmuls), and a backward pass of twice the forward.
Where our convention counts otherwise (biases and norms in $6N$, the causal average of
:func:`~groundwork.models.info`, a pooler run once per sequence, ...) each test states the
difference and checks it to the FLOP, so that none can pass by accident.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from groundwork.models import (
    GPT,
    T5,
    Bert,
    BertConfig,
    BertForPreTraining,
    GPTConfig,
    Llama,
    LlamaConfig,
    Mixtral,
    MixtralConfig,
    SwitchGPT,
    SwitchGPTConfig,
    T5Config,
    info,
)
from groundwork.models.info import attention_flops_per_token
from groundwork.nn import LayerNorm, RMSNorm
from groundwork.nn.moe import MoE
from groundwork.train.flops import (
    EXTRA_FLOP_FORMULAS,
    encoder_decoder_training_flops_per_token,
    measured_flops,
    model_flops_per_token,
    training_flops_per_token,
)

B, T = 2, 16  # batch and context
N_TOKENS = B * T
SDPA_CPU = "_scaled_dot_product_flash_attention_for_cpu"  # what F.scaled_dot_product_attention
# runs on a CPU; FlopCounterMode has no formula for it (EXTRA_FLOP_FORMULAS adds PyTorch's own)


def _ids(vocab: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape)


def _non_matmul(model: nn.Module) -> int:
    """What FlopCounterMode never sees: Linear biases and norm parameters (from the modules, to
    cross-check the hand counts)."""
    biases = sum(
        m.bias.numel() for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None
    )
    norms = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, LayerNorm | RMSNorm)
        for p in m.parameters()
    )
    return biases + norms


def _attention_op(impl: str) -> str:
    return "bmm" if impl == "math" else SDPA_CPU


def _recompute(impl: str, layers: int, heads: int, d_head: int, t_q: int, t_k: int) -> int:
    """The fused kernel's backward recomputes $QK^\\top$ (5 matmuls against the written-out 4):
    hardware FLOPs that model FLOPs leave out."""
    return 0 if impl == "math" else layers * 2 * B * heads * t_q * t_k * d_head


# --- GPT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_gpt_forward_is_2_per_weight_and_token_plus_dense_attention(impl: str) -> None:
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", attn_impl=impl)
    d, L, H, dh, d_ff, V = 64, 2, 4, 16, 256, 512
    model, idx = GPT(config), _ids(V, B, T)
    weights = L * (3 * d * d + d * d + d * d_ff + d_ff * d) + V * d  # qkv, out, up, down; head
    attention = L * 2 * (2 * B * H * T * T * dh)  # QK^T and AV over the full window
    fwd = measured_flops(model, idx, backward=False)
    assert fwd["mm"] + fwd["addmm"] == 2 * N_TOKENS * weights
    assert fwd[_attention_op(impl)] == attention
    assert attention == attention_flops_per_token(config, T, full_window=True) * N_TOKENS
    assert fwd["total"] == fwd["forward"] == 2 * N_TOKENS * weights + attention
    assert fwd["backward"] == 0
    train = measured_flops(model, idx)
    recompute = _recompute(impl, L, H, dh, T, T)
    assert train["backward"] == 2 * fwd["forward"] + recompute  # backward = 2 x forward
    assert train["total"] == 3 * fwd["forward"] + recompute


def test_gpt_6n_rule_misses_exactly_the_biases_and_layernorms() -> None:
    """$6N + 12 L d T$ counts every parameter but the lookup tables in $N$; the matmuls touch all
    of them but the biases and LayerNorms, 6 FLOPs each per token."""
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny", attn_impl="math")
    d, L, d_ff, V = 64, 2, 256, 512
    model, idx = GPT(config), _ids(V, B, T)
    weights = L * (4 * d * d + 2 * d * d_ff) + V * d
    non_matmul = L * (3 * d + d + d_ff + d) + (2 * L + 1) * 2 * d  # biases; LayerNorm w and b
    assert _non_matmul(model) == non_matmul
    measured = measured_flops(model, idx)["total"]
    n_params = weights + non_matmul  # the tied head counted once, as a matrix; no wte, no wpe
    rule = training_flops_per_token(n_params, n_layers=L, d_model=d, seq_len=T)
    assert rule * N_TOKENS - measured == 6 * N_TOKENS * non_matmul
    assert model_flops_per_token(model, T) == rule
    # info(): the same N, and Kaplan's causal average, half the dense attention matmuls
    report = info(config, seq_len=T)["flops_per_token"]
    assert report["matmul_params"] == n_params
    causal_half = 3 * 2 * L * T * d  # training FLOPs per token
    assert (
        report["training"] * N_TOKENS - measured
        == 6 * N_TOKENS * non_matmul - causal_half * N_TOKENS
    )


# --- Llama (grouped-query attention) ------------------------------------------------------------


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_llama_gqa_has_smaller_kv_projections_but_attends_with_every_head(impl: str) -> None:
    torch.manual_seed(0)
    config = LlamaConfig.from_name("tiny", d_head=24, attn_impl=impl)  # d_attn 96 != d_model
    d, L, H, H_kv, dh, d_ff, V = 64, 2, 4, 2, 24, 172, 512
    model, idx = Llama(config), _ids(V, B, T)
    q_size, kv_size = H * dh, H_kv * dh  # 96, 48
    weights = L * (d * q_size + 2 * d * kv_size + q_size * d + 3 * d * d_ff) + V * d  # tied head
    attention = L * 2 * (2 * B * H * T * T * dh)  # n_heads query heads, kv heads repeated
    fwd = measured_flops(model, idx, backward=False)
    assert fwd["mm"] == 2 * N_TOKENS * weights  # no biases: no addmm
    assert fwd[_attention_op(impl)] == attention
    assert attention == attention_flops_per_token(config, T, full_window=True) * N_TOKENS
    measured = measured_flops(model, idx)["total"]
    recompute = _recompute(impl, L, H, dh, T, T)
    assert measured == 3 * fwd["forward"] + recompute
    non_matmul = (2 * L + 1) * d  # RMSNorm weights
    assert _non_matmul(model) == non_matmul
    ours = model_flops_per_token(model, T)
    assert ours is not None
    assert ours * N_TOKENS - measured == 6 * N_TOKENS * non_matmul - recompute
    assert info(config, seq_len=T)["flops_per_token"]["matmul_params"] == weights + non_matmul


# --- BERT (bidirectional encoder) ---------------------------------------------------------------


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_bert_pretraining_pooler_and_nsp_run_once_per_sequence(impl: str) -> None:
    """Our count charges every weight per token; the pooler and the NSP layer read only
    ``[CLS]``: $6 (BT - B)$ FLOPs per weight more than they cost."""
    torch.manual_seed(0)
    config = BertConfig.from_name("tiny", attn_impl=impl)
    d, L, H, dh, d_ff, V = 64, 2, 4, 16, 256, 512
    model, ids = BertForPreTraining(config), _ids(V, B, T)
    per_token = L * (4 * d * d + 2 * d * d_ff) + d * d + V * d  # blocks; MLM dense, tied decoder
    per_sequence = d * d + d * 2  # pooler, NSP
    attention = L * 2 * (2 * B * H * T * T * dh)  # every query against every key
    counts = measured_flops(model, ids)
    fwd, measured = counts["forward"], counts["total"]
    assert fwd == 2 * N_TOKENS * per_token + 2 * B * per_sequence + attention
    recompute = _recompute(impl, L, H, dh, T, T)
    assert measured == 3 * fwd + recompute
    biases = L * (4 * d + d_ff + d) + d + V + d + 2  # blocks; MLM dense, decoder; pooler, NSP
    norms = (2 * L + 1) * 2 * d + 2 * d  # blocks and embeddings; MLM transform
    assert _non_matmul(model) == biases + norms
    ours = model_flops_per_token(model, T)
    assert ours is not None
    extra = 6 * N_TOKENS * (biases + norms) + 6 * (N_TOKENS - B) * per_sequence - recompute
    assert ours * N_TOKENS - measured == extra


def test_bert_info_counts_the_encoder_and_its_pooler_per_token() -> None:
    """info() counts Hugging Face's ``BertModel``: the encoder and the pooler, the pooler per
    token; :meth:`Bert.forward` runs the encoder only (:meth:`Bert.pool` is separate)."""
    torch.manual_seed(0)
    config = BertConfig.from_name("tiny", attn_impl="math")
    d, L, d_ff, V = 64, 2, 256, 512
    model, ids = Bert(config), _ids(V, B, T)
    measured = measured_flops(model, ids)["total"]
    weights = L * (4 * d * d + 2 * d * d_ff)
    assert measured == 3 * (2 * N_TOKENS * weights + L * 4 * B * T * T * d)
    non_matmul = L * (4 * d + d_ff + d) + (2 * L + 1) * 2 * d
    report = info(config, seq_len=T)["flops_per_token"]
    pooler = d * d + d
    assert report["matmul_params"] == weights + non_matmul + pooler
    assert report["training"] * N_TOKENS - measured == 6 * N_TOKENS * (non_matmul + pooler)


# --- T5 (encoder-decoder, cross-attention) ------------------------------------------------------


def test_t5_encoder_decoder_at_s_unequal_t() -> None:
    """$S$ = 24 encoder and $T$ = 16 decoder tokens. The decoder's cross-attention key and value
    projections run on the $S$ encoder positions; ``n_cross_kv`` counts them there (as
    :func:`model_flops_per_token` and ``info`` do), and only the norms remain; without it they
    would be charged per decoder token."""
    torch.manual_seed(0)
    config = T5Config.from_name("tiny", dropout=0.0)  # 2 + 2 layers, 4 heads of 16, ReLU, tied
    d, L, H, dkv, inner, d_ff, V = 64, 2, 4, 16, 64, 128, 512
    S = 24
    model = T5(config)
    src, tgt = _ids(V, B, S), _ids(V, B, T)
    attn = 4 * d * inner  # q, k, v, o of one sublayer
    cross_kv = 2 * d * inner  # k, v of a cross-attention sublayer: on the encoder positions
    ffn = 2 * d * d_ff
    enc = 2 * B * S * L * (attn + ffn) + L * 2 * (2 * B * H * S * S * dkv)
    dec = (
        2 * B * T * L * (attn + (attn - cross_kv) + ffn)  # self, cross q and o, feed-forward
        + 2 * B * S * L * cross_kv
        + L * 2 * (2 * B * H * T * T * dkv)  # self-attention, full window
        + L * 2 * (2 * B * H * T * S * dkv)  # cross-attention
        + 2 * B * T * V * d  # tied head
    )
    counts = measured_flops(model, src, decoder_input_ids=tgt)
    assert counts["forward"] == enc + dec
    measured = counts["total"]
    assert measured == 3 * (enc + dec)

    norms_enc, norms_dec = (2 * L + 1) * d, (3 * L + 1) * d  # RMSNorm weights
    n_enc = L * (attn + ffn) + norms_enc
    n_dec = L * (2 * attn + ffn) + norms_dec + V * d
    assert _non_matmul(model) == norms_enc + norms_dec
    tokens = B * (S + T)
    shape = dict(n_layers=L, n_decoder_layers=L, d_attn=inner, seq_len=S, decoder_seq_len=T)
    norms = 6 * B * (S * norms_enc + T * norms_dec)
    exact = encoder_decoder_training_flops_per_token(n_enc, n_dec, n_cross_kv=L * cross_kv, **shape)
    assert round(exact * tokens) - measured == norms
    convention = encoder_decoder_training_flops_per_token(n_enc, n_dec, **shape)
    short = 6 * B * (S - T) * L * cross_kv  # the cross K/V projections at T positions, not S
    assert round(convention * tokens) - measured == norms - short
    assert model_flops_per_token(model, S, decoder_seq_len=T) == pytest.approx(exact, rel=1e-12)
    # info(): the same split and the same exact cross K/V, with the causal average of the
    # decoder's self-attention
    report = info(config, seq_len=S, decoder_seq_len=T)["flops_per_token"]
    assert (report["encoder_matmul_params"], report["decoder_matmul_params"]) == (n_enc, n_dec)
    causal_half = 3 * L * 2 * B * H * T * T * dkv
    assert round(report["training"] * tokens) - measured == norms - causal_half


# --- Mixture of experts -------------------------------------------------------------------------


@pytest.mark.parametrize("grouped", [True, False])
def test_mixtral_top_k_of_n_experts_is_exact_when_dropless(grouped: bool) -> None:
    """Which experts a token picks depends on the data, how many does not: exactly ``top_k``
    distinct ones, so the experts multiply $B T k$ rows per layer however the router splits them.
    ``grouped``: ``F.grouped_mm`` (counted by EXTRA_FLOP_FORMULAS), else the loop over experts
    (``mm``, FlopCounterMode's own formula): the same count."""
    torch.manual_seed(0)
    config = MixtralConfig.from_name("tiny", attn_impl="math")
    d, L, H, H_kv, dh, d_ff, V, E, k = 64, 2, 4, 2, 16, 96, 512, 4, 2
    model, idx = Mixtral(config), _ids(V, B, T)
    for m in model.modules():
        if isinstance(m, MoE):
            m.experts.use_grouped_mm = grouped
    attn = d * H * dh + 2 * d * H_kv * dh + H * dh * d
    expert = 3 * d * d_ff  # gate, up, down
    weights = L * (attn + E * d + k * expert) + V * d  # the router in full, k experts; head
    attention = L * 2 * (2 * B * H * T * T * dh)
    counts = measured_flops(model, idx)
    assert counts["forward"] == 2 * N_TOKENS * weights + attention
    assert ("_grouped_mm" in counts) == grouped
    for routed in model.router_outputs:
        per_expert = routed.tokens_per_expert.tolist()
        assert sum(per_expert) == N_TOKENS * k and routed.dropped == 0
        assert len(set(per_expert)) > 1  # the split is uneven; the count is not
    measured = counts["total"]
    assert measured == 3 * counts["forward"]
    non_matmul = (2 * L + 1) * d
    ours = model_flops_per_token(model, T)
    assert ours is not None
    assert ours * N_TOKENS - measured == 6 * N_TOKENS * non_matmul
    assert info(config, seq_len=T)["flops_per_token"]["matmul_params"] == weights + non_matmul


def test_switch_with_a_capacity_drops_assignments_the_count_still_charges() -> None:
    """With a capacity the experts run only the kept assignments, a number the router output
    tells: ``top_k / n_experts`` of the expert weights per token overcounts each dropped one."""
    torch.manual_seed(0)
    config = SwitchGPTConfig.from_name("tiny", attn_impl="math", capacity_factor=1.0)
    d, L, d_ff, V, E, k = 64, 2, 256, 512, 4, 1
    model, idx = SwitchGPT(config), _ids(V, B, T)
    measured = measured_flops(model, idx)["total"]
    dropped = sum(r.dropped for r in model.router_outputs)
    assert dropped > 0  # 32 tokens, 8 per expert: the uneven split overflows
    kept = L * N_TOKENS * k - dropped
    dense = L * (4 * d * d + E * d) + V * d  # attention, router; tied head
    attention = L * 4 * B * T * T * d
    assert measured == 3 * (2 * N_TOKENS * dense + 2 * kept * 2 * d * d_ff + attention)
    non_matmul = L * 4 * d + L * k * (d_ff + d) + (2 * L + 1) * 2 * d  # k experts' biases
    ours = model_flops_per_token(model, T)
    assert ours is not None
    assert ours * N_TOKENS - measured == 6 * N_TOKENS * non_matmul + 6 * dropped * 2 * d * d_ff


# --- measured_flops itself ----------------------------------------------------------------------


def test_one_linear_layer_and_the_gradients_it_needs() -> None:
    """A layer whose input needs no gradient costs one matmul backward (its weight's), not two;
    ``.grad`` stays untouched."""
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 4), torch.randn(3, 8)
    counts = measured_flops(layer, x)
    assert counts == {"total": 384, "forward": 192, "backward": 192, "addmm": 192, "mm": 192}
    assert layer.weight.grad is None
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2, bias=False))  # 2nd: input gradient
    assert measured_flops(model, x)["backward"] == 2 * 3 * 8 * 4 + 2 * (2 * 3 * 4 * 2)


def test_nothing_to_differentiate() -> None:
    layer = nn.Linear(8, 4).requires_grad_(False)
    assert measured_flops(layer, torch.randn(3, 8), backward=False)["total"] == 192
    with pytest.raises(ValueError, match="gradient"):
        measured_flops(layer, torch.randn(3, 8))


def test_grouped_mm_formula_against_the_loop() -> None:
    """The two layouts the experts do not use, checked against FlopCounterMode's ``mm``/``bmm``."""
    a, b = torch.randn(3, 5, 8), torch.randn(8, 12)  # (E, m, k) @ (k, N), N cut in 3
    offs = torch.tensor([4, 8, 12], dtype=torch.int32)
    loop, grouped = (
        FlopCounterMode(display=False),
        FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS),
    )
    with loop:
        expected = torch.cat([a[e] @ b[:, 4 * e : 4 * e + 4] for e in range(3)], dim=1)
    with grouped:
        got = F.grouped_mm(a, b, offs=offs)
    torch.testing.assert_close(got, expected)
    assert grouped.get_total_flops() == loop.get_total_flops() == 2 * 5 * 8 * 12
    c = torch.randn(3, 8, 4)  # (E, m, k) @ (E, k, n): batched
    with loop:
        torch.bmm(a, c)
    with grouped:
        F.grouped_mm(a, c)
    assert grouped.get_total_flops() == loop.get_total_flops() == 2 * 3 * 5 * 8 * 4
