"""ROME: the rank-one update against the constrained least squares it solves, the keys and the
value optimisation on a small model, and one edit end to end on a toy that knows ten facts."""

import pytest
import torch

from edit.edit_common_core import (
    FACTS,
    SUBJECTS,
    answer,
    answers,
    fact_model,
    fact_stats,
    fact_vocab,
    prompt,
    request,
)
from groundwork.edit.covariance import mlp_keys
from groundwork.edit.layers import mlp_out_proj
from groundwork.edit.request import EditRequest, subject_last_token
from groundwork.edit.rome import (
    RomeConfig,
    apply_rome,
    compute_keys,
    compute_value,
    context_templates,
    default_layer,
    encode_in_template,
    rank_one_update,
)
from groundwork.errors import ConfigError
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.tokenize.char import CharTokenizer


def spd(n: int, seed: int = 0, tokens: int = 200) -> torch.Tensor:
    """A second moment (1/N) K K^T of correlated keys of unequal scale, float64."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(n, dtype=torch.float64) + torch.randn(n, n, generator=g, dtype=torch.float64)
    K = mix @ torch.randn(n, tokens, generator=g, dtype=torch.float64)  # (n, N)
    K = K * torch.rand(n, 1, generator=g, dtype=torch.float64) * 3
    return K @ K.T / tokens


def test_rank_one_update_writes_the_new_pair_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    d_out, d_in = 7, 12
    W = torch.randn(d_out, d_in, generator=g)
    C = spd(d_in).float()
    k, v = torch.randn(d_in, generator=g), torch.randn(d_out, generator=g) * 5
    Lambda, u = rank_one_update(W, C, k, v)
    W_new = W.double() + torch.outer(Lambda, u)  # (d_out, d_in)
    assert Lambda.dtype == u.dtype == torch.float64
    torch.testing.assert_close(W_new @ k.double(), v.double(), rtol=0, atol=1e-10)
    torch.testing.assert_close(W_new.float() @ k, v, rtol=0, atol=1e-5)  # in the model's fp32
    assert torch.linalg.matrix_rank(W_new - W.double()) == 1


def test_rank_one_update_leaves_keys_orthogonal_in_c_inverse_metric_unchanged() -> None:
    g = torch.Generator().manual_seed(2)
    d_out, d_in = 5, 9
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    C = spd(d_in, seed=3)
    k, v = torch.randn(d_in, generator=g, dtype=torch.float64), torch.randn(d_out, generator=g)
    Lambda, u = rank_one_update(W, C, k, v.double())
    W_new = W + torch.outer(Lambda, u)
    torch.testing.assert_close(u, torch.linalg.solve(C, k))  # the direction is C^-1 k
    for _ in range(5):
        x = torch.randn(d_in, generator=g, dtype=torch.float64)
        x = x - (x @ torch.linalg.solve(C, k)) / (u @ u) * u  # now x^T C^-1 k = 0
        assert abs(float(x @ u)) < 1e-10
        torch.testing.assert_close(W_new @ x, W @ x, rtol=0, atol=1e-10)
    # a key that is not orthogonal does move
    assert (W_new @ k - W @ k).norm() > 0.1


def test_rank_one_update_is_the_constrained_least_squares_minimiser() -> None:
    """Row by row: min (w' - w)^T C (w' - w) s.t. w'^T k = v_i, solved from its KKT system
    [[2C, k], [k^T, 0]] [w'; mu] = [2 C w; v_i]; the closed form must agree."""
    g = torch.Generator().manual_seed(4)
    d_out, d_in = 4, 6
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    C = spd(d_in, seed=5)
    k, v = torch.randn(d_in, generator=g, dtype=torch.float64), torch.randn(d_out, generator=g)
    Lambda, u = rank_one_update(W, C, k, v.double())
    kkt = torch.zeros(d_in + 1, d_in + 1, dtype=torch.float64)
    kkt[:d_in, :d_in], kkt[:d_in, d_in], kkt[d_in, :d_in] = 2 * C, k, k
    for i in range(d_out):
        rhs = torch.cat([2 * C @ W[i], v[i : i + 1].double()])
        w_best = torch.linalg.solve(kkt, rhs)[:d_in]
        torch.testing.assert_close(W[i] + Lambda[i] * u, w_best, rtol=1e-9, atol=1e-9)


def test_rank_one_update_rejects_bad_shapes_and_a_zero_key() -> None:
    W, C = torch.zeros(3, 4), torch.eye(4)
    with pytest.raises(ConfigError, match="C"):
        rank_one_update(W, torch.eye(3), torch.ones(4), torch.ones(3))
    with pytest.raises(ConfigError, match="k must be"):
        rank_one_update(W, C, torch.ones(3), torch.ones(3))
    with pytest.raises(ConfigError, match="not positive"):
        rank_one_update(W, C, torch.zeros(4), torch.ones(3))


def test_encode_in_template_finds_the_subject_in_the_prompt_not_the_prefix() -> None:
    vocab = fact_vocab()
    ids, at = encode_in_template(vocab, "alice lives . {}", "bob and alice lives in", "alice")
    assert vocab.decode([ids[at]]) == "alice"
    assert at == 5  # alice lives <unk> bob <unk> alice: the second alice
    # with the bare template it is subject_last_token's answer
    _, at = encode_in_template(vocab, "{}", prompt("carol"), "carol")
    assert at == subject_last_token(vocab, prompt("carol"), "carol") == 0


def test_compute_keys_averages_the_subjects_key_over_templates() -> None:
    model, vocab = fact_model(), fact_vocab()
    layer = 1
    texts = [prompt("dave"), "alice lives in paris . " + prompt("dave")]
    single = []
    for text in texts:
        ids = torch.tensor([vocab.encode(text)])
        k = mlp_keys(model, ids, None, [layer])[layer]  # (1, T, d_ff)
        single.append(k[0, vocab.encode(text).index(vocab.index["dave"])])
    templates = ["{}", "alice lives in paris . {}"]
    keys = compute_keys(model, vocab, [request("dave", "rome")], layer, templates)
    assert keys.shape == (1, 64)
    torch.testing.assert_close(keys[0], (single[0] + single[1]) / 2)
    keys2 = compute_keys(
        model, vocab, [request("dave", "rome"), request("erin", "rome")], layer, templates
    )
    torch.testing.assert_close(keys2[0], keys[0])  # batching requests changes nothing


def test_context_templates_are_sampled_from_the_model_deterministically() -> None:
    torch.manual_seed(0)
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz .{}"], vocab_size=40)
    model = Llama(LlamaConfig.from_name("tiny", vocab_size=tok.vocab_size))
    templates = context_templates(model, tok, [(5, 3), (8, 2)], seed=7)
    assert len(templates) == 6 and templates[0] == "{}"
    for t in templates[1:]:
        assert t.endswith(". {}") and t.count("{}") == 1  # sampled braces became spaces
        assert "<|endoftext|>" not in t  # special tokens are never sampled or kept
    assert context_templates(model, tok, [(5, 3), (8, 2)], seed=7) == templates
    started = context_templates(model, tok, [(4, 2)], starts=["ab"], seed=0)
    assert len(started) == 3 and all(t.startswith("ab") for t in started[1:])
    with pytest.raises(ConfigError, match="end-of-text"):
        context_templates(fact_model(), fact_vocab(), [(3, 1)])


def test_compute_value_trains_only_delta_and_reaches_the_target() -> None:
    model, vocab = fact_model(), fact_vocab()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    fit = compute_value(model, vocab, request("alice", "rome"), 0, ["{}"], RomeConfig(layer=0))
    assert fit.target_prob > 0.5
    assert fit.losses[-1] < fit.losses[0]
    assert fit.delta.norm() <= 4 * fit.init.norm() + 1e-4  # the clamp
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the model is untouched
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_rome_flips_one_fact_and_keeps_the_others() -> None:
    model, vocab = fact_model(), fact_vocab()
    assert answers(model) == FACTS  # the toy knows its ten facts
    config = RomeConfig(layer=0, context_templates=("{}",))
    stats = fact_stats(model, [0])[0]
    edited, record = apply_rome(model, vocab, request("alice", "rome"), config, stats=stats)
    assert edited is model
    assert answer(model, "alice") == "rome"
    assert {s: answer(model, s) for s in SUBJECTS[1:]} == {s: FACTS[s] for s in SUBJECTS[1:]}
    # the record: one rank-one change of layer 0, undone exactly by restore()
    assert set(record.deltas) == {0}
    assert torch.linalg.matrix_rank(record.deltas[0].double(), rtol=1e-6) == 1
    assert record.fits[0].target_prob > 0.5
    record.restore(model)
    assert torch.equal(
        mlp_out_proj(model, 0).weight, fact_model().model.layers[0].mlp.down_proj.weight
    )
    assert answers(model) == FACTS


def test_rome_applies_several_requests_in_turn() -> None:
    model, vocab = fact_model(), fact_vocab()
    config = RomeConfig(layer=0, context_templates=("{}",))
    stats = fact_stats(model, [0])[0]
    edits = [request("bob", "oslo"), request("judy", "lima")]
    _, record = apply_rome(model, vocab, edits, config, stats=stats)
    assert len(record.fits) == 2
    assert answer(model, "bob") == "oslo" and answer(model, "judy") == "lima"
    assert torch.linalg.matrix_rank(record.deltas[0].double(), rtol=1e-6) == 2


def test_default_layer_is_a_sixth_of_the_depth() -> None:
    model = Llama(LlamaConfig.from_name("tiny", n_layers=30, d_model=16, n_heads=2, d_ff=8))
    assert default_layer(model) == 5
    assert default_layer(fact_model()) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "steps must be a positive integer"),
        ("lr", -0.1, "lr must be a positive number"),
        ("kl_factor", -1.0, "kl_factor must be a number >= 0"),
        ("clamp_norm_factor", 0.0, "clamp_norm_factor"),
        ("n_tokens", 0, "n_tokens"),
        ("template_lengths", ((5, 0),), "template count"),
        ("context_templates", ("no placeholder",), "exactly one"),
        ("essence_template", "{} is {}", "exactly one"),
    ],
)
def test_rome_config_rejects_bad_settings(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RomeConfig(**{field: value})


def test_apply_rome_rejects_bad_input() -> None:
    model, vocab = fact_model(), fact_vocab()
    stats = fact_stats(model, [0])[0]
    ok = RomeConfig(layer=0, context_templates=("{}",))
    with pytest.raises(ConfigError, match="layer 3 is out of range"):
        apply_rome(model, vocab, request("alice", "rome"), RomeConfig(layer=3), stats=stats)
    with pytest.raises(ConfigError, match="target is empty"):
        EditRequest(prompt("alice"), "alice", " ")
    with pytest.raises(ConfigError, match="does not occur"):
        EditRequest(prompt("alice"), "zoe", " rome")
    long_prompt = " ".join(["alice"] * 40) + " lives in"
    with pytest.raises(ConfigError, match="context of 32"):
        apply_rome(model, vocab, EditRequest(long_prompt, "alice", " rome"), ok, stats=stats)
    with pytest.raises(ConfigError, match="statistics for layer 0"):
        apply_rome(model, vocab, request("alice", "rome"), ok, stats=torch.eye(5))
    with pytest.raises(ConfigError, match="no edit requests"):
        apply_rome(model, vocab, [], ok, stats=stats)
    assert answers(model) == FACTS  # nothing was edited
