"""The training engine with a classification objective and data read in epochs: exact resume
in the middle of an epoch, the best metric (max mode, ties to the lower loss), early stopping,
restoring the best weights, a time budget per invocation, and the reasons a run stops."""

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from groundwork.errors import ConfigError
from groundwork.fileio import read_json
from groundwork.train import (
    ClassificationObjective,
    LabelledSequences,
    TrainConfig,
    read_metrics,
    train,
)
from groundwork.train import engine as engine_module


def synthetic(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Sequences of 1-8 word ids; the label says whether word 5 occurs."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        seqs.append(torch.randint(2, 20, (length,), generator=g).tolist())
    return seqs, [int(5 in s) for s in seqs]


def data(batch_size: int = 8) -> LabelledSequences:
    x, y = synthetic(50, seed=0)
    xv, yv = synthetic(20, seed=1)
    return LabelledSequences(x, y, batch_size=batch_size, val_seqs=xv, val_labels=yv)


class BagOfWords(nn.Module):
    """Mean of the word embeddings, dropout (so that the RNG matters), a linear head."""

    def __init__(self, vocab: int = 20, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(ids.shape[1]) < lengths[:, None]).float()  # (B, L)
        h = (self.embed(ids) * mask[..., None]).sum(1) / lengths[:, None]  # (B, D)
        return self.head(self.drop(h))  # (B, 2)


def model(seed: int = 0) -> BagOfWords:
    torch.manual_seed(seed)
    return BagOfWords()


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        max_steps=21,  # 3 epochs of 7 batches
        batch_size=8,
        lr=1e-2,
        min_lr=1e-2,
        warmup_steps=0,
        schedule="constant",
        eval_every=7,
        log_every=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


class SignalAt:
    """Data that sends this process SIGTERM when batch ``at`` is drawn."""

    def __init__(self, inner: LabelledSequences, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def next_batch(self, generator: torch.Generator) -> Any:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner.next_batch(generator)

    def __getattr__(self, name: str) -> Any:  # val_batches, state_dict, load_state_dict
        return getattr(self.inner, name)


class Clock:
    """A fake ``perf_counter`` that :class:`Ticking` data advances by a second per batch."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


class Ticking:
    def __init__(self, inner: LabelledSequences, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def next_batch(self, generator: torch.Generator) -> Any:
        self.clock.now += 1.0
        return self.inner.next_batch(generator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_epochs_cover_every_example_once() -> None:
    d = data()
    g = torch.Generator().manual_seed(0)
    assert d.steps_per_epoch == 7
    seen = [d.next_batch(g)[2].numel() for _ in range(d.steps_per_epoch)]
    assert sum(seen) == 50
    ids, lengths, labels = d.next_batch(g)  # the next epoch begins
    assert ids.shape[0] == lengths.shape[0] == labels.shape[0] and ids.shape[1] == lengths.max()


def test_resume_in_the_middle_of_an_epoch_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    objective = ClassificationObjective()
    whole = train(model(), data(), objective, config(), tmp_path / "a")
    assert whole.stopped == "finished" and [e["step"] for e in whole.evals] == [7, 14, 21]

    first = train(model(), SignalAt(data(), at=10), objective, config(), tmp_path / "b")
    assert first.stopped == "signal" and first.state.step == 10  # 3 batches into epoch 2
    assert first.reason == "SIGTERM received"
    assert read_json(tmp_path / "b" / "trainer_state.json")["data"]["position"] == 3
    torch.manual_seed(1234)  # a resumed process starts with unrelated RNG state
    second = train(model(seed=99), data(), objective, config(), tmp_path / "b", resume=True)
    assert second.stopped == "finished" and second.state.step == 21

    def rows(run: Path) -> list[dict[str, Any]]:
        drop = ("tokens_per_s", "mfu")
        return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(run)]

    assert rows(tmp_path / "a" / "metrics.jsonl") == rows(tmp_path / "b" / "metrics.jsonl")
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert whole.state.tokens_seen == sum(len(s) for s in synthetic(50, 0)[0]) * 3


def test_best_metric_max_ties_early_stopping_and_restoring_the_best(tmp_path: Path) -> None:
    scripted = iter(
        [
            {"val_f1": 0.5, "val_loss": 1.0},
            {"val_f1": 0.7, "val_loss": 0.9},
            {"val_f1": 0.7, "val_loss": 0.8},  # a tie on F1, a lower loss: the best
            {"val_f1": 0.6, "val_loss": 0.7},
            {"val_f1": 0.7, "val_loss": 0.85},  # a tie, but a higher loss
            {"val_f1": 0.9, "val_loss": 0.1},  # never reached: patience ran out
        ]
    )
    net = model()
    cfg = config(max_steps=70, best_metric="val_f1", best_mode="max", patience=2, restore_best=True)
    result = train(
        net,
        data(),
        ClassificationObjective(),
        cfg,
        tmp_path,
        evaluate=lambda _: dict(next(scripted)),
    )
    assert result.stopped == "early_stop" and result.state.step == 35
    assert result.state.best_step == 21 and result.state.best_value == 0.7
    assert result.state.best_val_loss == 0.8 and result.state.evals_since_best == 2
    assert "no better val_f1 in 2 evaluations (train.patience)" in result.reason
    assert result.summary().startswith("stopped at step 35 of 70: no better val_f1")
    assert [e["step"] for e in result.evals] == [7, 14, 21, 28, 35]
    assert all("train_loss" in e for e in result.evals)
    best = load_file(str(tmp_path / "model.best.safetensors"))
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(tensor, best[name], rtol=0, atol=0)
    final = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(final[k], best[k]) for k in best)


def test_the_time_budget_is_per_invocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(engine_module, "perf_counter", clock)
    cfg = config(max_time=2.5)
    first = train(model(), Ticking(data(), clock), ClassificationObjective(), cfg, tmp_path)
    assert first.stopped == "time" and first.state.step == 3
    assert first.summary() == "stopped at step 3 of 21: train.max_time (2.5 s) reached"
    # The resumed run gets the budget again (not 2.5 s minus the 3 s already spent).
    again = train(
        model(), Ticking(data(), clock), ClassificationObjective(), cfg, tmp_path, resume=True
    )
    assert again.stopped == "time" and again.state.step == 6
    assert again.state.elapsed_seconds == pytest.approx(6.0)


def test_resuming_a_finished_run_does_nothing_and_says_so(tmp_path: Path) -> None:
    cfg = config(max_steps=7)
    done = train(model(), data(), ClassificationObjective(), cfg, tmp_path)
    assert done.summary() == "finished at step 7 of 7: train.max_steps (7) reached"
    again = train(model(), data(), ClassificationObjective(), cfg, tmp_path, resume=True)
    assert again.stopped == "finished" and again.state.step == 7 and not again.evals
    assert "nothing to do" in again.reason


def test_an_unknown_best_metric_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.best_metric 'val_f1' is not among .*val_loss"):
        train(model(), data(), ClassificationObjective(), config(best_metric="val_f1"), tmp_path)
    with pytest.raises(ConfigError, match="best_mode"):
        config(best_mode="lowest")
    with pytest.raises(ConfigError, match=r"train.patience must be a positive integer"):
        config(patience=0)


def test_without_a_run_directory_nothing_is_kept(tmp_path: Path) -> None:
    net = model()
    before = net.head.weight.detach().clone()
    result = train(net, data(), ClassificationObjective(), config(max_steps=7), None)
    assert result.stopped == "finished" and not result.run_dir.exists()
    assert not torch.equal(net.head.weight, before)
