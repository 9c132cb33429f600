"""2-D parallelism with 4 gloo processes under torchrun: FSDP2 over ``dp`` = 2 and DTensor
tensor parallelism over ``tp`` = 2 give the one-process run's losses, clipping norms and weights
over AdamW steps for a tiny GPT and Llama; block weights are sharded over both mesh dimensions,
the rest over ``dp``; a mesh that is not the world and a ``tp`` that does not divide the heads
fail clearly, under torchrun and in one process."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hybrid_worker
import pytest
import torch
from dist_common import torchrun

from groundwork.distributed.hybrid import apply_fsdp_tp, check_mesh_shape, make_mesh
from groundwork.errors import ConfigError, DistributedError
from groundwork.train.optim import build_adamw, clip_grad_norm

pytestmark = pytest.mark.distributed
ARCHS = ("gpt", "llama")
WORKER = Path(__file__).parent / "hybrid_worker.py"
RANKS = (0, 1, 2, 3)
NOISE = 1e-7
"""First-step gradients smaller than this (10 x AdamW's eps) are rounding noise to AdamW."""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hybrid")
    run = torchrun(WORKER, out, "errors", "torch-clip", *ARCHS, nproc=4, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def load(results: Path, scenario: str, rank: int = 0) -> dict[str, Any]:
    return torch.load(results / f"{scenario}-rank{rank}.pt", weights_only=False)


def single_process(arch: str) -> dict[str, Any]:
    """The reference: one process, the whole global batch, plain AdamW and clipping."""
    model = hybrid_worker.build(arch)
    data = hybrid_worker.batches(model.config.vocab_size)
    opt = build_adamw(model, lr=hybrid_worker.LR, weight_decay=hybrid_worker.WD)
    losses, norms, first_grads = [], [], {}
    for step in range(hybrid_worker.STEPS):
        loss = hybrid_worker.loss_of(model, data[step])
        loss.backward()
        if step == 0:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        norms.append(clip_grad_norm(model.parameters(), hybrid_worker.CLIP).item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {
        "losses": losses,
        "norms": norms,
        "weights": model.state_dict(),
        "first_grads": first_grads,
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    return {arch: single_process(arch) for arch in ARCHS}


def noise_driven(first_grad: torch.Tensor) -> torch.Tensor:
    """The elements whose first AdamW step is decided by rounding: the step is
    ``lr * g / (|g| + eps)``, so for ``0 < |g| < 10 eps`` a rounding difference in ``g``, which
    any other summation order (over ranks, over row shards) makes, moves the weight by a
    sizeable part of the learning rate. GPT's key bias is all such (its true gradient is zero: a
    constant added to every key adds the same number to every score of a query, which the
    softmax ignores); a few other elements are so by chance."""
    return (first_grad.abs() < NOISE) & (first_grad != 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_equals_one_process(
    results: Path, reference: dict[str, dict[str, Any]], arch: str
) -> None:
    want = reference[arch]
    noisy = {n: noise_driven(g) for n, g in want["first_grads"].items()}
    names = [n for n in want["weights"] if n in noisy]  # a tied head: its embedding's name
    assert sum(int(noisy[n].sum()) for n in names) < 2e-3 * sum(noisy[n].numel() for n in names)
    for rank in RANKS:
        got = load(results, arch, rank)
        torch.testing.assert_close(
            torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-6, atol=0
        )
        torch.testing.assert_close(  # each mesh's norm reduced over it, then added
            torch.tensor(got["norms"]), torch.tensor(want["norms"]), rtol=1e-5, atol=0
        )
        assert got["weights"].keys() == want["weights"].keys()  # GPT's q, k, v fused back
        for name, w in want["weights"].items():
            mask = noisy.get(name, torch.zeros_like(w, dtype=torch.bool))
            torch.testing.assert_close(got["weights"][name][~mask], w[~mask], rtol=1e-5, atol=1e-5)
            bound = 2 * hybrid_worker.STEPS * hybrid_worker.LR  # each run moves ~lr a step
            torch.testing.assert_close(got["weights"][name][mask], w[mask], rtol=0, atol=bound)
        assert got["losses"][-1] < got["losses"][0]  # it trained


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_are_sharded_over_both_dimensions_the_rest_over_dp(results: Path, arch: str) -> None:
    placements = load(results, arch)["placements"]
    for name, where in placements.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):  # row-parallel
            assert where == "('dp', 'tp') (Shard(dim=0), Shard(dim=1))", name
        elif any(name.endswith(f"{p}.weight") for p in ("q_proj", "k_proj", "v_proj", "up_proj")):
            # column-parallel: dp cuts tp's slice of dimension 0 again
            assert where == "('dp', 'tp') (_StridedShard(dim=0, sf=2), Shard(dim=0))", name
        elif "proj" not in name:  # embeddings and norms: replicated by tensor parallelism
            assert where == "('dp',) (Shard(dim=0),)", name


def test_torch_clip_grad_norm_refuses_two_meshes_ours_does_not(results: Path) -> None:
    for rank in RANKS:
        got = load(results, "torch-clip", rank)
        if isinstance(got["torch"], str):  # torch 2.13: it stacks norms from both meshes
            assert "same mesh" in got["torch"]
        else:  # a later torch may handle it: then it must agree
            assert got["torch"] == pytest.approx(got["ours"], rel=1e-5)
    model = hybrid_worker.build("llama")
    rows = hybrid_worker.batches(model.config.vocab_size)[0]
    hybrid_worker.loss_of(model, rows).backward()
    want = clip_grad_norm(model.parameters(), 0.0).item()
    assert load(results, "torch-clip")["ours"] == pytest.approx(want, rel=1e-5)


def test_bad_meshes_fail_under_torchrun(results: Path) -> None:
    heads, shape = load(results, "errors")["messages"]
    assert "does not divide model.layers.0.self_attn.n_kv_heads = 1" in heads
    assert "a 3 x 2 mesh (dp x tp) needs 6 processes, but 4 were launched" in shape


def test_a_mesh_that_is_not_the_world_fails_clearly() -> None:
    check_mesh_shape(2, 2, 4)
    with pytest.raises(ConfigError, match=r"a 2 x 2 mesh \(dp x tp\) needs 4 processes, but 8"):
        check_mesh_shape(2, 2, 8)
    with pytest.raises(ConfigError, match="dp >= 1 and tp >= 1"):
        check_mesh_shape(0, 2, 0)
    with pytest.raises(ConfigError, match="needs 4 processes, but 1 were launched"):
        make_mesh(2, 2)  # one process, no process group
    with pytest.raises(DistributedError, match=r"needs a process group.*torchrun"):
        make_mesh(1, 1)


def test_a_tp_that_does_not_divide_the_heads_fails_before_sharding() -> None:
    llama = hybrid_worker.build("llama")  # n_heads 4, n_kv_heads 2
    before = {n: p.clone() for n, p in llama.state_dict().items()}
    with pytest.raises(ConfigError, match=r"n_kv_heads = 2 .*degrees that work.*: 1, 2$"):
        apply_fsdp_tp(llama, SimpleNamespace(mesh_dim_names=("dp", "tp"), shape=(1, 4)))
    with pytest.raises(ConfigError, match=r"n_heads = 4"):
        apply_fsdp_tp(
            hybrid_worker.build("gpt"), SimpleNamespace(mesh_dim_names=("dp", "tp"), shape=(2, 3))
        )
    with pytest.raises(ConfigError, match=r"2-D mesh with dimensions \('dp', 'tp'\), got None"):
        apply_fsdp_tp(llama, SimpleNamespace(mesh_dim_names=None, shape=(4,)))
    after = llama.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)
