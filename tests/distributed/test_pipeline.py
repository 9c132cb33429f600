"""Pipeline parallelism with 2 gloo processes under torchrun (one launch for the module): a tiny
GPT and Llama cut into two stages, 4 micro-batches, our GPipe and 1F1B and torch's, give the
one-process gradients of the whole batch and, over 10 AdamW steps with a clip of the global
norm, its losses and weights; the tied embedding's copies on the first and last stage stay
equal; each rank ran the schedule's order of operations and held as many micro-batches as the
schedule says. In the test process: the stages chained are the model, the bubble fraction, and
bad input."""

from pathlib import Path
from typing import Any

import pp_worker
import pytest
import torch
import torch.distributed as dist
from dist_common import torchrun, without_key_bias

from groundwork.distributed.pipeline import (
    causal_lm_loss,
    peak_in_flight,
    pipeline_step,
    schedule_bubble_fraction,
    schedule_order,
    simulated_bubble_fraction,
    split_stages,
    sync_tied_gradients,
    torch_schedule,
)
from groundwork.distributed.plan import Schedule, bubble_fraction
from groundwork.errors import ConfigError, DistributedError
from groundwork.train.optim import build_adamw, clip_grad_norm

pytestmark = pytest.mark.distributed
IMPLS, ARCHS = ("ours", "torch"), ("gpt", "llama")
SCHEDULES: tuple[Schedule, ...] = ("gpipe", "1f1b")
WORKER = Path(__file__).parent / "pp_worker.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pp")
    run = torchrun(WORKER, out, *(f"{i}:{s}:{a}" for i in IMPLS for s in SCHEDULES for a in ARCHS))
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def load(results: Path, impl: str, schedule: str, arch: str) -> list[dict[str, Any]]:
    return torch.load(results / f"{impl}-{schedule}-{arch}.pt", weights_only=False)


def single_process(arch: str) -> dict[str, Any]:
    """The reference: one process, the whole batch, AdamW, the first step's gradients."""
    model = pp_worker.build(arch)
    data = pp_worker.batches(model.config.vocab_size)
    opt = build_adamw(model, lr=pp_worker.LR, weight_decay=pp_worker.WD)
    losses, grads = [], {}
    for step in range(pp_worker.STEPS):
        loss = causal_lm_loss(model(data[step, :, :-1]), data[step, :, 1:])
        loss.backward()
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        clip_grad_norm(model.parameters(), pp_worker.CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"losses": losses, "weights": model.state_dict(), "grads": grads}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    return {arch: single_process(arch) for arch in ARCHS}


def merged(stages: list[dict[str, Any]], key: str) -> dict[str, torch.Tensor]:
    """The stages' tensors by name; a tied weight's two copies must be equal, bit for bit."""
    out: dict[str, torch.Tensor] = {}
    for stage in stages:
        for name, t in stage[key].items():
            if name in out:
                assert name in stage["tied"], name
                torch.testing.assert_close(t, out[name], rtol=0, atol=0)
            out[name] = t
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """fp32 at the project's 1e-5: micro-batch sums are added in another order."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("impl", IMPLS)
def test_one_step_gradients_equal_one_process(
    results: Path, reference: dict[str, dict[str, Any]], impl: str, schedule: str, arch: str
) -> None:
    got = merged(load(results, impl, schedule, arch), "grads")
    want = reference[arch]["grads"]
    assert got.keys() == want.keys()
    for name, g in want.items():
        close(got[name], g)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("impl", IMPLS)
def test_training_equals_one_process(
    results: Path, reference: dict[str, dict[str, Any]], impl: str, schedule: str, arch: str
) -> None:
    stages = load(results, impl, schedule, arch)
    want = reference[arch]
    losses = stages[-1]["losses"]  # the last stage computes the loss
    torch.testing.assert_close(
        torch.tensor(losses), torch.tensor(want["losses"]), rtol=1e-6, atol=0
    )
    got = merged(stages, "weights")
    assert got.keys() == want["weights"].keys()
    for name, w in want["weights"].items():
        close(without_key_bias(name, got[name]), without_key_bias(name, w))
    assert losses[-1] < losses[0]  # it trained


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ours_equals_torchs(results: Path, schedule: str, arch: str) -> None:
    """Bit for bit: both run the same stage on the same micro-batches, accumulate the
    gradients in the same order and scale each micro-batch's loss by 1/m."""
    ours, theirs = load(results, "ours", schedule, arch), load(results, "torch", schedule, arch)
    assert ours[-1]["losses"] == theirs[-1]["losses"]
    for key in ("grads", "weights"):
        got, want = merged(ours, key), merged(theirs, key)
        assert got.keys() == want.keys()
        for name, w in want.items():
            torch.testing.assert_close(got[name], w, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_rank_ran_its_schedule(results: Path, arch: str) -> None:
    # p = 2, m = 4. 1F1B: stage 0 warms up with one forward, stage 1 (the last) with none.
    expected = {
        "gpipe": [["F0", "F1", "F2", "F3", "B0", "B1", "B2", "B3"]] * 2,
        "1f1b": [
            ["F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3"],
            ["F0", "B0", "F1", "B1", "F2", "B2", "F3", "B3"],
        ],
    }
    peaks = {"gpipe": [4, 4], "1f1b": [2, 1]}  # m; p - s
    for schedule in SCHEDULES:
        stages = load(results, "ours", schedule, arch)
        assert [s["ops"] for s in stages] == expected[schedule]
        assert [s["peak"] for s in stages] == peaks[schedule]
        assert [schedule_order(schedule, 2, s, 4) for s in range(2)] == expected[schedule]


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_chained_are_the_model(arch: str) -> None:
    model = pp_worker.build(arch)
    ids = pp_worker.batches(model.config.vocab_size)[0, :, :-1]
    x = ids
    stages = split_stages(model, 2)
    for stage in stages:
        x = stage(x)
    torch.testing.assert_close(x, model(ids), rtol=0, atol=0)
    names = [set(dict(s.named_parameters())) for s in stages]
    assert names[0] | names[1] == set(dict(model.named_parameters()))
    assert names[0] & names[1] == set(stages[0].tied) == set(stages[1].tied)  # tied: a copy each
    assert len(stages[0].tied) == 1
    assert len(split_stages(model, 1)[0].tied) == 0 and len(split_stages(model, 2)) == 2


def test_bubble_fraction_and_activations_held() -> None:
    assert schedule_bubble_fraction("1f1b", 2, 4) == pytest.approx(0.2)  # (p - 1) / (m + p - 1)
    assert schedule_bubble_fraction("gpipe", 4, 8) == pytest.approx(3 / 11)
    assert schedule_bubble_fraction("gpipe", 1, 8) == 0.0
    for schedule in SCHEDULES:
        for p, m in [(2, 4), (4, 4), (4, 8), (3, 7), (8, 32)]:
            # the schedules played out, forward 1 and backward 2 time units: the formula
            assert simulated_bubble_fraction(schedule, p, m) == pytest.approx(bubble_fraction(p, m))
            peaks = [peak_in_flight(schedule, p, s, m) for s in range(p)]
            assert peaks == ([m] * p if schedule == "gpipe" else [p - s for s in range(p)])


def test_bad_input() -> None:
    model = pp_worker.build("gpt")  # 2 blocks
    for n_stages in (3, 4):  # does not divide, exceeds
        with pytest.raises(ConfigError, match="do not divide the model's 2 blocks"):
            split_stages(model, n_stages)
    with pytest.raises(ConfigError, match="GPT and Llama"):
        split_stages(torch.nn.Linear(2, 2), 1)
    first = split_stages(model, 2)[0]
    ids = torch.zeros(8, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="3 micro-batches do not divide a batch of 8"):
        pipeline_step(first, ids, ids, microbatches=3, schedule="gpipe")
    with pytest.raises(ConfigError, match="1F1B needs at least as many micro-batches as stages"):
        pipeline_step(first, ids, ids, microbatches=1, schedule="1f1b")
    with pytest.raises(ConfigError, match="schedule must be one of"):
        pipeline_step(first, ids, ids, microbatches=2, schedule="zb")
    assert not dist.is_initialized()
    for call in (
        lambda: pipeline_step(first, ids, ids, microbatches=2),
        lambda: sync_tied_gradients(first),
        lambda: torch_schedule(first, 2),
    ):
        with pytest.raises(DistributedError, match="torchrun --nproc-per-node 2"):
            call()
