"""Data parallelism with 2 gloo processes under torchrun: torch's DDP, our bucketed all-reduce
(with gradient accumulation), our ZeRO-1 and ZeRO-2 and torch's ZeroRedundancyOptimizer all
give the single-process run's losses, weights and optimizer state; a rank that stops answering
makes the other fail with a clear error within the timeout."""

from pathlib import Path
from typing import Any

import dp_worker
import pytest
import torch
from dist_common import torchrun, without_key_bias

from groundwork.distributed.world import launched_by_torchrun, require_torchrun
from groundwork.errors import DistributedError
from groundwork.train.optim import build_adamw, clip_grad_norm

pytestmark = pytest.mark.distributed
STRATEGIES = ("ddp", "ddp-ours", "zero1", "zero2", "zero-torch")
ARCHS = ("gpt", "llama")
WORKER = Path(__file__).parent / "dp_worker.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dp")
    run = torchrun(WORKER, out, *(f"{s}:{a}" for s in STRATEGIES for a in ARCHS))
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def single_process(arch: str) -> dict[str, Any]:
    """The reference: one process, the whole batch, plain AdamW."""
    model = dp_worker.build(arch)
    data = dp_worker.batches(model.config.vocab_size)
    opt = build_adamw(model, lr=dp_worker.LR, weight_decay=dp_worker.WD)
    losses = []
    for step in range(dp_worker.STEPS):
        loss = dp_worker.loss_of(model, data[step])
        loss.backward()
        clip_grad_norm(model.parameters(), dp_worker.CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"losses": losses, "weights": model.state_dict(), "optimizer": opt.state_dict()}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    return {arch: single_process(arch) for arch in ARCHS}


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """fp32 at the project's 1e-5: the sums over ranks are added in another order than the
    one-process sums over rows, and AdamW divides by the root of the second moment, so a rounding
    difference in a component whose gradient is near zero is not scaled down by it."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_data_parallel_equals_one_process(
    results: Path, reference: dict[str, dict[str, Any]], strategy: str, arch: str
) -> None:
    got = torch.load(results / f"{strategy}-{arch}.pt", weights_only=False)
    want = reference[arch]
    torch.testing.assert_close(
        torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-6, atol=0
    )
    assert got["weights"].keys() == want["weights"].keys()
    for name, w in want["weights"].items():
        close(without_key_bias(name, got["weights"][name]), without_key_bias(name, w))
    assert got["losses"][-1] < got["losses"][0]  # it trained


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", ["zero1", "zero2"])
def test_zero_state_gathers_into_the_unsharded_optimizers(
    results: Path, reference: dict[str, dict[str, Any]], strategy: str, arch: str
) -> None:
    got = torch.load(results / f"{strategy}-{arch}.pt", weights_only=False)["optimizer"]
    want = reference[arch]["optimizer"]
    assert got["state"].keys() == want["state"].keys()
    for pid, entry in want["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            close(got["state"][pid][key], entry[key])
        assert float(got["state"][pid]["step"]) == float(entry["step"])
    for g_got, g_want in zip(got["param_groups"], want["param_groups"], strict=True):
        assert g_got["params"] == g_want["params"]
        assert g_got["weight_decay"] == g_want["weight_decay"]


@pytest.mark.parametrize("scenario", ["hang", "die"])
def test_a_rank_that_dies_or_stops_answering_fails_the_others_clearly(
    tmp_path: Path, scenario: str
) -> None:
    run = torchrun(WORKER, tmp_path, scenario, timeout=60)
    assert run.returncode != 0
    seconds, message = (tmp_path / f"{scenario}.txt").read_text().split("\n", 1)
    assert float(seconds) < 20
    assert "rank 0" in message and "another rank has probably died" in message


def test_parallel_degrees_need_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert not launched_by_torchrun()
    require_torchrun("--parallel.dp 1", 1)  # one process: fine
    with pytest.raises(DistributedError, match="torchrun --nproc-per-node 2"):
        require_torchrun("--parallel.dp 2", 2)
