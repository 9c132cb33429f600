"""MEMIT: the batch update against the regularised least squares it solves, its one-key limit
(ROME, shrunk), spreading the residual over layers, and several edits end to end on the toy."""

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
    request,
)
from groundwork.edit.layers import mlp_out_proj
from groundwork.edit.memit import (
    MemitConfig,
    apply_memit,
    default_layers,
    hidden_at_subject,
    memit_update,
)
from groundwork.edit.rome import rank_one_update
from groundwork.errors import ConfigError
from groundwork.models.llama import Llama, LlamaConfig


def spd(n: int, seed: int = 0) -> torch.Tensor:
    """A random second moment (1/N) K K^T, float64."""
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(n, 3 * n, generator=g, dtype=torch.float64)
    K = K * torch.rand(n, 1, generator=g, dtype=torch.float64) * 2  # unequal scales
    return K @ K.T / (3 * n)


def objective(delta: torch.Tensor, K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, lam: float):
    return ((delta @ K - R) ** 2).sum() + lam * torch.trace(delta @ C @ delta.T)


def test_memit_update_is_the_regularised_least_squares_minimiser() -> None:
    """||D K - R||^2 + lam tr(D C D^T) = ||D [K, sqrt(lam) L] - [R, 0]||^2 with C = L L^T: a
    plain least-squares problem, solved here by lstsq."""
    g = torch.Generator().manual_seed(0)
    d_out, d_in, n, lam = 5, 12, 4, 0.7
    K = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    C = spd(d_in)
    delta = memit_update(K, R, C, lam)
    assert delta.shape == (d_out, d_in) and delta.dtype == torch.float64
    L = torch.linalg.cholesky(C)
    A = torch.cat([K, lam**0.5 * L], dim=1)  # (d_in, n + d_in)
    B = torch.cat([R, torch.zeros(d_out, d_in, dtype=torch.float64)], dim=1)  # (d_out, n + d_in)
    best = torch.linalg.lstsq(A.T, B.T).solution.T  # (d_out, d_in)
    torch.testing.assert_close(delta, best, rtol=1e-9, atol=1e-10)
    # and nothing nearby does better
    for _ in range(3):
        nudge = 1e-3 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        assert objective(delta + nudge, K, R, C, lam) > objective(delta, K, R, C, lam)
    # float32 inputs are promoted: the same answer
    torch.testing.assert_close(
        memit_update(K.float(), R.float(), C.float(), lam), best, rtol=1e-4, atol=1e-5
    )


def test_memit_with_one_key_is_rome_shrunk_by_s_over_1_plus_s() -> None:
    """Sherman-Morrison: one key k, residual r: Delta = s/(1+s) * ROME's update (from W = 0 to
    W k = r), s = k^T (lam C)^-1 k; so lam -> 0 gives ROME itself."""
    g = torch.Generator().manual_seed(1)
    d_out, d_in = 6, 10
    C = spd(d_in, seed=2)
    k = torch.randn(d_in, generator=g, dtype=torch.float64)
    r = torch.randn(d_out, generator=g, dtype=torch.float64)
    Lambda, u = rank_one_update(torch.zeros(d_out, d_in, dtype=torch.float64), C, k, r)
    rome = torch.outer(Lambda, u)
    for lam in (1e-4, 0.1, 10.0):
        s = float(k @ torch.linalg.solve(lam * C, k))
        delta = memit_update(k[:, None], r[:, None], C, lam)
        torch.testing.assert_close(delta, s / (1 + s) * rome, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(
        memit_update(k[:, None], r[:, None], C, 1e-6) @ k, r, rtol=1e-5, atol=0
    )


def test_memit_update_rejects_bad_input() -> None:
    K, R, C = torch.ones(4, 2), torch.ones(3, 2), torch.eye(4)
    with pytest.raises(ConfigError, match="mom2_weight must be a positive number"):
        memit_update(K, R, C, 0.0)
    with pytest.raises(ConfigError, match="K must be"):
        memit_update(K, torch.ones(3, 5), C, 1.0)
    with pytest.raises(ConfigError, match="C must be"):
        memit_update(K, R, torch.eye(3), 1.0)


def test_memit_reaches_the_target_hidden_states_spread_over_two_layers() -> None:
    """With a small lambda each layer closes its share of the gap at the top layer, and after
    the last one the subjects' hidden states are the optimised targets z_i."""
    model, vocab = fact_model(), fact_vocab()
    edits = [request("alice", "rome"), request("bob", "lima")]
    stats = fact_stats(model, [0, 1])
    before = hidden_at_subject(model, vocab, edits, 1)
    config = MemitConfig(layers=(0, 1), mom2_weight=1e-3, context_templates=("{}",))
    _, record = apply_memit(model, vocab, edits, config, stats=stats)
    Z = torch.stack([fit.target for fit in record.fits])  # (2, d_model)
    torch.testing.assert_close(Z - torch.stack([f.delta for f in record.fits]), before)
    after = hidden_at_subject(model, vocab, edits, 1)
    gap = (Z - after).norm(dim=1) / (Z - before).norm(dim=1)
    assert (gap < 1e-2).all(), gap
    assert set(record.deltas) == {0, 1}
    # layer 0 aimed at half the gap (R / 2): alone, it moves the top layer's hidden states
    # about half-way along it (not exactly: block 1's MLP, in between, is not linear)
    first_only = fact_model()
    with torch.no_grad():
        mlp_out_proj(first_only, 0).weight += record.deltas[0]
    moved = hidden_at_subject(first_only, vocab, edits, 1) - before  # (2, d_model)
    share = (moved * (Z - before)).sum(dim=1) / (Z - before).norm(dim=1) ** 2
    assert ((share > 0.3) & (share < 0.9)).all(), share
    for layer in (0, 1):  # rank <= the number of edits
        assert torch.linalg.matrix_rank(record.deltas[layer].double(), rtol=1e-6) <= 2


def test_memit_flips_several_facts_and_keeps_the_others() -> None:
    model, vocab = fact_model(), fact_vocab()
    assert answers(model) == FACTS
    edits = {"alice": "rome", "bob": "lima", "carol": "paris"}
    config = MemitConfig(layers=(0, 1), mom2_weight=0.1, context_templates=("{}",))
    stats = fact_stats(model, [0, 1])
    edited, record = apply_memit(
        model, vocab, [request(s, c) for s, c in edits.items()], config, stats=stats
    )
    assert edited is model
    assert {s: answer(model, s) for s in edits} == edits
    kept = [s for s in SUBJECTS if s not in edits]
    assert {s: answer(model, s) for s in kept} == {s: FACTS[s] for s in kept}
    record.restore(model)
    assert answers(model) == FACTS


def test_a_large_lambda_protects_the_old_keys_and_undoes_the_edit() -> None:
    model, vocab = fact_model(), fact_vocab()
    config = MemitConfig(layers=(0, 1), mom2_weight=1e6, context_templates=("{}",))
    apply_memit(model, vocab, request("alice", "rome"), config, stats=fact_stats(model, [0, 1]))
    assert answers(model) == FACTS


def test_default_layers_are_five_around_romes_layer() -> None:
    deep = Llama(LlamaConfig.from_name("tiny", n_layers=30, d_model=16, n_heads=2, d_ff=8))
    assert default_layers(deep) == (3, 4, 5, 6, 7)
    assert default_layers(fact_model()) == (0, 1, 2)
    assert default_layers(deep, count=2) == (4, 5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layers": (2, 1)}, "increasing"),
        ({"layers": (1, 1)}, "increasing"),
        ({"layers": ()}, "non-empty"),
        ({"mom2_weight": -1.0}, "mom2_weight"),
        ({"steps": 0}, "steps"),
        ({"weight_decay": -0.5}, "weight_decay"),
    ],
)
def test_memit_config_rejects_bad_settings(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MemitConfig(**fields)


def test_apply_memit_rejects_bad_input() -> None:
    model, vocab = fact_model(), fact_vocab()
    stats = fact_stats(model, [0, 1])
    with pytest.raises(ConfigError, match="layer 5 is out of range"):
        apply_memit(model, vocab, request("alice", "rome"), MemitConfig(layers=(0, 5)), stats=stats)
    config = MemitConfig(layers=(0, 1, 2), context_templates=("{}",))
    with pytest.raises(ConfigError, match="no second moment for layer 2"):
        apply_memit(model, vocab, request("alice", "rome"), config, stats=stats)
    with pytest.raises(ConfigError, match="no edit requests"):
        apply_memit(model, vocab, [], config, stats=stats)
    assert answers(model) == FACTS
