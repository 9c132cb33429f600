"""Tensor parallelism with 2 gloo processes under torchrun: ours (Megatron's column/row-parallel
layers with explicit collectives) and torch's DTensor plan give the one-process model's logits,
gradients (each rank's shard the matching slice of the full gradient) and, over 10 AdamW steps
with clipping by the global norm, its losses and weights; bad degrees and a missing process group
fail clearly."""

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import tp_worker
from dist_common import torchrun, without_key_bias
from torch import nn

from groundwork.distributed.tensor_parallel import (
    Sharding,
    apply_tensor_parallel,
    apply_tensor_parallel_dtensor,
    check_tensor_parallel,
    shard,
    unshard,
)
from groundwork.errors import ConfigError, DistributedError
from groundwork.train.optim import build_adamw, clip_grad_norm

pytestmark = pytest.mark.distributed
KINDS = ("ours", "dtensor")
ARCHS = ("gpt", "llama")
WORKER = Path(__file__).parent / "tp_worker.py"
RANKS = (0, 1)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tp")
    scenarios = ["layers", "errors", *(f"{k}:{a}" for k in KINDS for a in ARCHS)]
    run = torchrun(WORKER, out, *scenarios)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def load(results: Path, scenario: str, rank: int = 0) -> dict[str, Any]:
    path = results / f"{scenario.replace(':', '-')}-rank{rank}.pt"
    return torch.load(path, weights_only=False)


def single_process(arch: str) -> dict[str, Any]:
    """The reference: one process, the same data, plain AdamW and clipping."""
    model = tp_worker.build(arch)
    data = tp_worker.batches(model.config.vocab_size)
    rows = data[0]
    logits = model(rows[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model = tp_worker.build(arch)
    opt = build_adamw(model, lr=tp_worker.LR, weight_decay=tp_worker.WD)
    losses, norms = [], []
    for step in range(tp_worker.STEPS):
        loss = tp_worker.loss_of(model, data[step])
        loss.backward()
        norms.append(clip_grad_norm(model.parameters(), tp_worker.CLIP).item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {
        "logits": logits.detach(),
        "grads": grads,
        "losses": losses,
        "norms": norms,
        "weights": model.state_dict(),
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    return {arch: single_process(arch) for arch in ARCHS}


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """fp32 at the project's 1e-5: the row-parallel sums over ranks add in another order."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_one_process(
    results: Path, reference: dict[str, dict[str, Any]], kind: str, arch: str
) -> None:
    for rank in RANKS:
        close(load(results, f"{kind}:{arch}", rank)["logits"], reference[arch]["logits"])


@pytest.mark.parametrize("arch", ARCHS)
def test_each_rank_holds_the_matching_slice_of_every_gradient(
    results: Path, reference: dict[str, dict[str, Any]], arch: str
) -> None:
    want = reference[arch]["grads"]
    for rank in RANKS:
        got = load(results, f"ours:{arch}", rank)
        layout: dict[str, Sharding] = got["layout"]
        assert got["local_grads"].keys() == want.keys()
        assert any(n.endswith("o_proj.weight") for n in layout)  # attention was split
        assert any(n.endswith("down_proj.weight") for n in layout)  # and the MLP
        for name, g in want.items():
            expected = shard(g, layout[name], rank, 2) if name in layout else g
            close(got["local_grads"][name], expected)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_gathered_gradients_equal_one_process(
    results: Path, reference: dict[str, dict[str, Any]], kind: str, arch: str
) -> None:
    got = load(results, f"{kind}:{arch}")["grads"]
    assert got.keys() == reference[arch]["weights"].keys()
    for name, g in reference[arch]["grads"].items():
        close(got[name], g)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_training_equals_one_process(
    results: Path, reference: dict[str, dict[str, Any]], kind: str, arch: str
) -> None:
    want = reference[arch]
    for rank in RANKS:
        got = load(results, f"{kind}:{arch}", rank)
        torch.testing.assert_close(
            torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-6, atol=0
        )
        torch.testing.assert_close(  # the global norm sums shards over ranks, replicas once
            torch.tensor(got["norms"]), torch.tensor(want["norms"]), rtol=1e-5, atol=0
        )
        assert got["weights"].keys() == want["weights"].keys()
        for name, w in want["weights"].items():
            close(without_key_bias(name, got["weights"][name]), without_key_bias(name, w))
        assert got["losses"][-1] < got["losses"][0]  # it trained


@pytest.mark.parametrize("arch", ARCHS)
def test_dtensor_equals_ours(results: Path, arch: str) -> None:
    ours, theirs = load(results, f"ours:{arch}"), load(results, f"dtensor:{arch}")
    close(theirs["logits"], ours["logits"])
    torch.testing.assert_close(
        torch.tensor(theirs["losses"]), torch.tensor(ours["losses"]), rtol=1e-6, atol=0
    )
    for name, w in ours["weights"].items():
        close(without_key_bias(name, theirs["weights"][name]), without_key_bias(name, w))


def test_column_and_row_parallel_layers_equal_the_full_linear(results: Path) -> None:
    torch.manual_seed(2)
    x = torch.randn(3, 5, 8, requires_grad=True)
    first, second = nn.Linear(8, 12), nn.Linear(12, 6)
    full = first(x)  # (3, 5, 12)
    full.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    out = second(torch.tanh(first(x2)))  # (3, 5, 6)
    out.square().sum().backward()
    assert first.weight.grad is not None
    for rank in RANKS:
        got = load(results, "layers", rank)
        close(got["gathered"], full.detach())
        close(got["x_grad"], x.grad)  # type: ignore[arg-type]
        close(got["row_out"], out.detach())
        close(got["row_x_grad"], x2.grad)  # type: ignore[arg-type]
    # the gathered layer's weight gradient, slice by slice (parts 4 and 8, each halved)
    column_grads = [load(results, "layers", r)["column_grad"] for r in RANKS]
    partial = nn.Linear(8, 12)
    partial.load_state_dict(first.state_dict())
    partial(x.detach()).square().sum().backward()
    close(unshard(column_grads, Sharding(0, (4, 8))), partial.weight.grad)  # type: ignore[arg-type]


def test_shard_takes_whole_parts() -> None:
    full = torch.arange(12).view(6, 2)  # rows: q0 q1 | k0 k1 | v0 v1
    sharding = Sharding(0, (2, 2, 2))
    assert shard(full, sharding, 0, 2)[:, 0].tolist() == [0, 4, 8]  # q0, k0, v0
    assert shard(full, sharding, 1, 2)[:, 0].tolist() == [2, 6, 10]
    assert torch.equal(unshard([shard(full, sharding, r, 2) for r in RANKS], sharding), full)


def test_a_degree_that_does_not_divide_the_heads_fails_under_torchrun(results: Path) -> None:
    message = load(results, "errors")["message"]
    assert message is not None and "does not divide" in message and "degrees that work" in message


def test_bad_degrees_name_the_size_and_the_degrees_that_work() -> None:
    llama = tp_worker.build("llama")  # n_heads 4, n_kv_heads 2, d_ff 172
    check_tensor_parallel(llama, 2)
    with pytest.raises(
        ConfigError, match=r"n_kv_heads = 2 .*degrees that work for this model: 1, 2$"
    ):
        check_tensor_parallel(llama, 4)
    gpt = tp_worker.build("gpt", d_ff=130)  # n_heads 4, d_ff 130
    with pytest.raises(ConfigError, match=r"d_ff = 130.*: 1, 2$"):
        check_tensor_parallel(gpt, 4)
    with pytest.raises(ConfigError, match="n_heads = 4"):
        check_tensor_parallel(tp_worker.build("gpt"), 3)
    with pytest.raises(ConfigError, match="no attention or MLP"):
        check_tensor_parallel(nn.Sequential(nn.Linear(2, 2)), 2)


def test_without_a_process_group_it_says_to_launch_torchrun() -> None:
    for apply in (apply_tensor_parallel, apply_tensor_parallel_dtensor):
        with pytest.raises(DistributedError, match=r"needs a process group.*torchrun"):
            apply(tp_worker.build("llama"))
