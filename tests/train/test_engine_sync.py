"""The engine reads the loss from the device only at log steps, evaluations and the end (no
host-device synchronisation inside the other steps), and what it logs is what reading it every
step gave: the same losses, the same ``train_loss`` at evaluations, the same weights; a NaN is
still caught, at the next reading, naming the step where it appeared."""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import groundwork
from groundwork.errors import TrainingError
from groundwork.fileio import read_json
from groundwork.train import CausalLMObjective, TrainConfig, read_metrics, train

SRC = str(Path(groundwork.__file__).parent)


class TinyLM(nn.Module):
    """Embedding, one nonlinearity, dropout (so the RNG matters), a head."""

    def __init__(self, vocab: int = 32, d: int = 16, nan_after: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, vocab)
        self.calls, self.nan_after = 0, nan_after

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        logits = self.head(self.drop(torch.tanh(self.mix(self.embed(idx)))))  # (B, T, V)
        if self.nan_after is not None and self.calls > self.nan_after:
            return logits * float("nan")
        return logits


class Counted:
    """Random token windows, counting the batches drawn (the step being run)."""

    def __init__(self) -> None:
        self.drawn = 0

    def next_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.drawn += 1
        x = torch.randint(0, 32, (4, 8), generator=generator)  # (B, T)
        return x, (x * 7 + 3) % 32

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(99)
        for _ in range(2):
            x = torch.randint(0, 32, (4, 8), generator=g)
            yield x, (x * 7 + 3) % 32


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        max_steps=12,
        batch_size=4,
        seq_len=8,
        lr=1e-2,
        warmup_steps=2,
        eval_every=6,
        log_every=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def run(tmp: Path, **kw: Any) -> tuple[Path, Counted]:
    torch.manual_seed(0)
    data = Counted()
    train(TinyLM(), data, CausalLMObjective(), config(**kw), tmp)
    return tmp, data


def test_no_sync_inside_the_steps_between_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way of reading a tensor's value (``item``, ``tolist``, ``float``, ``int``,
    ``bool``) called from Groundwork's code is recorded with the step it ran in: only the log
    steps (every 4), the evaluation steps (every 6) and the last step read anything."""
    data = Counted()
    reads: list[tuple[str, int]] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: Any, _f: Any = original, _n: str = name) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(SRC):
                reads.append((_n, data.drawn))
            return _f(self, *a)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    train(TinyLM(), data, CausalLMObjective(), config(log_every=4, max_steps=14), tmp_path)
    monkeypatch.undo()
    steps = {step for _, step in reads}
    assert steps == {4, 6, 8, 12, 14}, reads
    assert ("tolist", 4) in reads  # the losses of steps 1-4, read at once


def test_logged_losses_equal_reading_every_step(tmp_path: Path) -> None:
    every, _ = run(tmp_path / "every", log_every=1)
    sparse, _ = run(tmp_path / "sparse", log_every=4)
    per_step = {r["step"]: r for r in read_metrics(every / "metrics.jsonl") if "loss" in r}
    logged = [r for r in read_metrics(sparse / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == [4, 8, 12]
    for r in logged:
        assert r["loss"] == per_step[r["step"]]["loss"]
        assert r["grad_norm"] == per_step[r["step"]]["grad_norm"]

    def evals(path: Path) -> list[tuple[int, float, float]]:
        rows = read_metrics(path / "metrics.jsonl")
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows if "train_loss" in r]

    assert evals(sparse) == evals(every) and len(evals(every)) == 2
    sa, sb = read_json(sparse / "trainer_state.json"), read_json(every / "trainer_state.json")
    sa.pop("elapsed_seconds"), sb.pop("elapsed_seconds")
    assert sa == sb
    wa, wb = load_file(every / "model.safetensors"), load_file(sparse / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_nan_is_caught_at_the_next_reading_and_names_its_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyLM(nan_after=6)  # the loss of step 7 is NaN
    cfg = config(log_every=4, eval_every=3)
    with pytest.raises(TrainingError, match=r"became nan at step 7 \(read at step 8\).*\(step 6\)"):
        train(model, Counted(), CausalLMObjective(), cfg, tmp_path)
    assert read_json(tmp_path / "trainer_state.json")["step"] == 6


@pytest.mark.slow
def test_compiled_model_and_loss_train_as_eager(tmp_path: Path) -> None:
    """``compile=True`` compiles the model and the objective (inductor on the CPU: about half a
    minute on 2 cores); without dropout (compiled code draws other random numbers) the logged
    losses follow the eager run's."""

    def losses(compile: bool) -> list[float]:
        torch.manual_seed(0)
        model = TinyLM()
        model.drop.p = 0.0
        cfg = config(log_every=2, max_steps=4, eval_every=4, compile=compile)
        train(model, Counted(), CausalLMObjective(), cfg, tmp_path / str(compile))
        rows = read_metrics(tmp_path / str(compile) / "metrics.jsonl")
        return [r["loss"] for r in rows if "loss" in r]

    assert losses(True) == pytest.approx(losses(False), rel=1e-4)


@pytest.mark.parametrize("make", ["gpt", "llama"])
def test_the_training_step_compiles_into_one_graph(make: str) -> None:
    """No graph break (and so no host read) in the model's forward and the loss: the default
    position ids are not inspected for packed documents, only ids the caller passes."""
    from helpers import tiny_gpt, tiny_llama

    model = (tiny_gpt if make == "gpt" else tiny_llama)().train()
    ids = torch.randint(0, 97, (2, 17))
    batch = (ids[:, :-1], ids[:, 1:])
    explained = torch._dynamo.explain(lambda: CausalLMObjective()(model, batch).loss)()
    assert explained.graph_break_count == 0, explained.break_reasons
