"""Pruning (``groundwork.compress.prune``): scores and masks checked exactly against hand-worked
examples and sort-based references, calibration norms against a direct computation, and head
removal against the unpruned model with those heads' contributions zeroed."""

import copy

import pytest
import torch
import torch.nn.functional as F

from groundwork.compress.prune import (
    block_linears,
    collect_input_norms,
    head_importance,
    magnitude_scores,
    nm_mask,
    prune_heads,
    prune_model,
    remove_heads,
    unstructured_mask,
    wanda_scores,
)
from groundwork.errors import ConfigError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig


def tiny_llama(**overrides: object) -> Llama:
    """2 blocks, d_model 64, 4 query heads sharing 2 key/value heads (GQA), d_ff 172."""
    torch.manual_seed(0)
    return Llama(LlamaConfig.from_name("tiny", **overrides)).eval()  # type: ignore[arg-type]


def tiny_gpt() -> GPT:
    """2 blocks, d_model 64, 4 heads, fused qkv projection with biases."""
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("tiny")).eval()


def batches(n: int = 3, b: int = 2, t: int = 16, vocab: int = 512) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (b, t), generator=g) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# scores and masks
def test_wanda_hand_example() -> None:
    # W = [[ 1, -2,  3, -4],      ||X|| = [3, 1, 2, 0.25]
    #      [-5,  6, -1,  2]]
    # S = |W| * ||X||  row 0: [1*3, 2*1, 3*2, 4*0.25] = [3, 2, 6, 1]
    #                  row 1: [5*3, 6*1, 1*2, 2*0.25] = [15, 6, 2, 0.5]
    # 50% per row drops the two lowest of each row: row 0 drops columns 3 (1) and 1 (2);
    # row 1 drops columns 3 (0.5) and 2 (2).  Magnitude over the layer instead drops the four
    # smallest |W| (1, 1, 2, 2): W[0,0]=1 goes although it reads the loudest feature, W[0,3]=-4
    # stays although it reads the quietest.
    W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-5.0, 6.0, -1.0, 2.0]])
    norms = torch.tensor([3.0, 1.0, 2.0, 0.25])
    S = wanda_scores(W, norms)
    assert S.tolist() == [[3.0, 2.0, 6.0, 1.0], [15.0, 6.0, 2.0, 0.5]]
    keep = unstructured_mask(S, 0.5, "row")
    assert keep.tolist() == [[True, False, True, False], [True, True, False, False]]
    assert nm_mask(S, 2, 4).tolist() == keep.tolist()  # one group of 4 per row: the same
    magnitude = unstructured_mask(magnitude_scores(W), 0.5, "layer")
    assert magnitude.tolist() == [[False, False, True, True], [True, True, False, False]]


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_unstructured_sparsity_is_exact_per_group(sparsity: float) -> None:
    scores = torch.rand(16, 64, generator=torch.Generator().manual_seed(0))
    rows = unstructured_mask(scores, sparsity, "row")
    pruned_per_row = (~rows).sum(1)
    assert pruned_per_row.tolist() == [int(sparsity * 64 + 1e-9)] * 16
    layer = unstructured_mask(scores, sparsity, "layer")
    assert int((~layer).sum()) == int(sparsity * 16 * 64 + 1e-9)
    # the kept scores are all above the dropped ones (within each group)
    if sparsity > 0:
        assert scores[~layer].max() < scores[layer].min()
        kept_min = scores.masked_fill(~rows, 2).min(1).values
        dropped_max = scores.masked_fill(rows, -1).max(1).values
        assert bool((dropped_max < kept_min).all())


def test_ties_still_prune_the_exact_count() -> None:
    keep = unstructured_mask(torch.ones(3, 8), 0.5, "row")
    assert (~keep).sum(1).tolist() == [4, 4, 4]


def test_nm_mask_keeps_n_of_every_m() -> None:
    scores = torch.rand(8, 32, generator=torch.Generator().manual_seed(0))
    for n, m in [(2, 4), (1, 4), (4, 8)]:
        keep = nm_mask(scores, n, m)
        groups = keep.reshape(8, 32 // m, m)
        assert bool((groups.sum(-1) == n).all())
        # the kept ones are the n highest of their group (a sort-based reference)
        ranked = scores.reshape(8, 32 // m, m).sort(-1, descending=True)
        reference = torch.zeros_like(groups).scatter_(-1, ranked.indices[..., :n], True)
        assert torch.equal(groups, reference)


# ---------------------------------------------------------------------------------------------
# pruning a model
@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_magnitude_pruning_equals_a_sort_reference(sparsity: float) -> None:
    model, reference = tiny_llama(), tiny_llama()
    report = prune_model(model, "magnitude", sparsity)
    pruned, original = block_linears(model), block_linears(reference)
    assert set(report.layers) == set(pruned)  # the blocks' 7 linears x 2, no embeddings/head
    assert len(pruned) == 14
    assert "lm_head" not in str(list(pruned))
    for name, linear in pruned.items():
        w = original[name].weight
        k = int(sparsity * w.numel())
        threshold = w.abs().flatten().sort().values[k - 1]  # the k-th smallest magnitude
        expected = torch.where(w.abs() > threshold, w, torch.zeros_like(w))
        assert torch.equal(linear.weight, expected), name
        assert report.layers[name] == (k, w.numel())
    assert model.model.embed_tokens.weight.eq(0).sum() == 0


def test_wanda_with_equal_norms_is_magnitude_per_row() -> None:
    a, b = tiny_llama(), tiny_llama()
    norms = {name: torch.full((lin.in_features,), 2.5) for name, lin in block_linears(a).items()}
    prune_model(a, "wanda", 0.5, input_norms=norms)
    prune_model(b, "magnitude", 0.5, group="row")
    for (name, x), y in zip(block_linears(a).items(), block_linears(b).values(), strict=True):
        assert torch.equal(x.weight, y.weight), name


def test_report_reaches_the_target_in_every_layer() -> None:
    model = tiny_llama()
    report = prune_model(model, "wanda", 0.5, "2:4", calibration=batches())
    assert report.per_layer() == {name: 0.5 for name in report.layers}
    assert report.sparsity == 0.5
    for linear in block_linears(model).values():  # exactly 2 nonzeros in every group of 4
        groups = linear.weight.reshape(linear.out_features, -1, 4)
        assert bool(((groups != 0).sum(-1) == 2).all())


def test_calibration_norms_equal_a_direct_computation() -> None:
    model = tiny_llama()
    data = batches()
    norms = collect_input_norms(model, data)
    layer0, layer1 = model.model.layers
    inputs: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for ids in data:  # layer 0 and the start of layer 1, written out
            x0 = model.model.embed_tokens(ids)  # (B, T, d)
            rope = model.model.rotary(torch.arange(ids.shape[1])[None], dtype=x0.dtype)
            h = layer0.input_layernorm(x0)
            x1 = x0 + layer0.self_attn(h, rope=rope)
            h2 = layer0.post_attention_layernorm(x1)
            act = F.silu(layer0.mlp.gate_proj(h2)) * layer0.mlp.up_proj(h2)  # (B, T, d_ff)
            x2 = x1 + layer0.mlp.down_proj(act)
            for name, x in [
                ("model.layers.0.self_attn.q_proj", h),
                ("model.layers.0.self_attn.v_proj", h),
                ("model.layers.0.mlp.gate_proj", h2),
                ("model.layers.0.mlp.down_proj", act),
                ("model.layers.1.self_attn.k_proj", layer1.input_layernorm(x2)),
            ]:
                inputs.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))  # (B*T, in)
    for name, xs in inputs.items():
        direct = torch.cat(xs).norm(dim=0)  # ||X_j||_2 over every token
        torch.testing.assert_close(norms[name], direct, rtol=1e-5, atol=1e-6)


def test_sequential_wanda_measures_each_block_after_pruning_the_earlier_ones() -> None:
    model, reference = tiny_llama(), tiny_llama()
    data = batches()
    prune_model(model, "wanda", 0.5, calibration=data)
    linears = block_linears(reference)
    for layer in ("model.layers.0.", "model.layers.1."):  # block by block, by hand
        norms = collect_input_norms(reference, data)
        for name, linear in linears.items():
            if name.startswith(layer):
                keep = unstructured_mask(wanda_scores(linear.weight, norms[name]), 0.5)
                linear.weight.data *= keep
    for (name, x), y in zip(block_linears(model).items(), linears.values(), strict=True):
        assert torch.equal(x.weight, y.weight), name


# ---------------------------------------------------------------------------------------------
# attention heads
def zeroed(model: torch.nn.Module, removed: list[list[int]]) -> torch.nn.Module:
    """A copy of ``model`` with the given heads' contributions zeroed: their columns of W_O."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for attn, heads in zip(
            [m for m in model.modules() if hasattr(m, "o_proj")], removed, strict=True
        ):
            for h in heads:
                attn.o_proj.weight[:, h * attn.d_head : (h + 1) * attn.d_head] = 0
    return model


@pytest.mark.parametrize(
    ("make", "unit", "amount"),
    [
        (tiny_llama, "kv_group", 2),  # one KV group (2 query heads + its K/V head) of 4 groups
        (tiny_llama, "query", 4),  # one query head from each group, in both layers
        (tiny_llama, "query", 0.25),
        (tiny_gpt, "kv_group", 3),  # multi-head attention: single heads, fused qkv with biases
        (tiny_gpt, "query", 5),
    ],
)
def test_removed_heads_equal_zeroed_heads(make: object, unit: str, amount: float) -> None:
    model = make()  # type: ignore[operator]
    original = copy.deepcopy(model)
    ids = batches(1, 2, 24)[0]
    report = prune_heads(model, amount, unit=unit)  # type: ignore[arg-type]
    assert sum(len(r) for r in report.removed) == (amount if isinstance(amount, int) else 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids), zeroed(original, report.removed)(ids), rtol=1e-5, atol=1e-5
        )
    for attn, before, removed in zip(
        [m for m in model.modules() if hasattr(m, "o_proj")],
        report.heads_before,
        report.removed,
        strict=True,
    ):
        assert attn.n_heads == before - len(removed)
        assert attn.o_proj.in_features == attn.n_heads * attn.d_head
    if unit == "query" and make is tiny_llama:
        assert report.kv_removed == [[], []]  # every K/V head stays


def test_kv_group_removal_shrinks_keys_and_values() -> None:
    model = tiny_llama()
    attn = model.model.layers[0].self_attn
    remove_heads(attn, [2, 3])  # group 1: query heads 2, 3 and key/value head 1
    assert (attn.n_heads, attn.n_kv_heads) == (2, 1)
    assert attn.k_proj.out_features == attn.v_proj.out_features == attn.d_head
    remove_heads(model.model.layers[1].self_attn, [0, 3])  # one query head from each group
    assert (
        model.model.layers[1].self_attn.n_heads,
        model.model.layers[1].self_attn.n_kv_heads,
    ) == (
        2,
        2,
    )


def test_gradient_head_importance_matches_finite_differences() -> None:
    model = tiny_llama().double()
    ids = batches(1, 1, 12)[0]
    importance = head_importance(model, "gradient", [ids])

    def loss(layer: int, head: int, scale: float) -> float:
        m = copy.deepcopy(model)
        attn = m.model.layers[layer].self_attn
        with torch.no_grad():
            attn.o_proj.weight[:, head * attn.d_head : (head + 1) * attn.d_head] *= scale
            logits = m(ids[:, :-1])
        return float(F.cross_entropy(logits[0], ids[0, 1:]))

    eps = 1e-3  # the forward is not all float64 (RoPE tables): a smaller step is noisier
    for layer in range(2):
        raw = torch.tensor(
            [abs(loss(layer, h, 1 + eps) - loss(layer, h, 1 - eps)) / (2 * eps) for h in range(4)],
            dtype=torch.float64,
        )
        torch.testing.assert_close(
            importance[layer].double(), raw / raw.norm(), rtol=1e-3, atol=1e-5
        )


# ---------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_0_1_is_an_error(sparsity: float) -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        unstructured_mask(torch.rand(4, 8), sparsity)
    with pytest.raises(ConfigError, match="sparsity"):
        prune_model(tiny_llama(), "magnitude", sparsity)


def test_bad_structures_are_errors() -> None:
    with pytest.raises(ConfigError, match="must divide"):
        nm_mask(torch.rand(4, 6), 2, 4)
    with pytest.raises(ConfigError, match="0 < n <= m"):
        nm_mask(torch.rand(4, 8), 5, 4)
    with pytest.raises(ConfigError, match="must divide the layer's in_features"):
        prune_model(tiny_llama(d_ff=170), "magnitude", 0.5, "2:4")  # down_proj reads 170
    with pytest.raises(ConfigError, match="not the requested"):
        prune_model(tiny_llama(), "magnitude", 0.3, "2:4")
    with pytest.raises(ConfigError, match="'unstructured' or 'N:M'"):
        prune_model(tiny_llama(), "magnitude", 0.5, "half")
    with pytest.raises(ConfigError, match="exactly one of"):
        prune_model(tiny_llama(), "wanda", 0.5)
    with pytest.raises(ConfigError, match="reads no activations"):
        prune_model(tiny_llama(), "magnitude", 0.5, calibration=batches())
    with pytest.raises(ConfigError, match="shape"):
        wanda_scores(torch.rand(4, 8), torch.rand(4))


def test_pruning_more_heads_than_exist_is_an_error() -> None:
    with pytest.raises(ConfigError, match="the model has 8"):
        prune_heads(tiny_llama(), 9)
    with pytest.raises(ConfigError, match="the model has 8"):
        prune_heads(tiny_llama(), 8)
    with pytest.raises(ConfigError, match="exactly 5"):
        prune_heads(tiny_llama(), 5)  # KV groups of 2 query heads
    with pytest.raises(ConfigError, match="exactly 6"):
        prune_heads(tiny_llama(), 6, unit="query")  # 2 per layer at most: one must stay
    with pytest.raises(ConfigError, match="in \\[0, 1\\)"):
        prune_heads(tiny_llama(), 1.0)
    with pytest.raises(ConfigError, match="same number of query heads"):
        remove_heads(tiny_llama().model.layers[0].self_attn, [1])
    with pytest.raises(ConfigError, match="all 4 heads"):
        remove_heads(tiny_llama().model.layers[0].self_attn, [0, 1, 2, 3])
