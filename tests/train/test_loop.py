"""Pretraining a causal LM with the engine: the loss falls, resume equals an uninterrupted run bit
for bit, SIGTERM checkpoints and stops cleanly, a NaN stops the run and keeps the last good
checkpoint, evaluation lines say what they measure."""

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from groundwork.corpus import Document, TokenShards, prepare_shards
from groundwork.errors import CheckpointError, ConfigError, TrainingError
from groundwork.fileio import read_json
from groundwork.train import TrainConfig, read_metrics, train_causal_lm

TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
    "Rough winds do shake the darling buds of May, And summer's lease hath all too short a date. "
)


@dataclass
class _Config:
    n_layers: int = 1
    d_model: int = 32


class TinyLM(nn.Module):
    """A byte-level model just big enough to learn: embedding, a causal mix of the previous
    token, dropout (so that RNG state matters for resume), and a tied head."""

    def __init__(self, vocab: int = 256, d: int = 32) -> None:
        super().__init__()
        self.config = _Config(d_model=d)
        self.embed = nn.Embedding(vocab, d)
        self.mix = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)  # (B, T, D)
        prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)  # (B, T, D)
        h = h + torch.tanh(self.mix(torch.cat([h, prev], dim=-1)))
        return self.head(self.drop(self.norm(h)))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    docs = {
        "train": [Document(id=f"t{i}", text=TEXT * 3, source="test") for i in range(8)],
        "val": [Document(id="v", text=TEXT * 2, source="test")],
    }
    prepare_shards(docs, lambda s: list(s.encode()), 256, out, eot_id=None, progress=False)
    return out


def config(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        max_steps=20,
        batch_size=4,
        seq_len=16,
        lr=3e-3,
        warmup_steps=2,
        eval_every=5,
        eval_batches=2,
        log_every=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def fresh_model(seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM()


def test_loss_falls_and_the_run_directory_is_complete(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train_causal_lm(
        fresh_model(),
        TokenShards(shards, "train"),
        TokenShards(shards, "val"),
        config(max_steps=60, eval_every=20),
        run,
        bytes_per_token=1.0,
    )
    assert result.stopped == "finished" and result.state.step == 60
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    vals = [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in vals] == [20, 40, 60]
    assert vals[-1]["val_bpb"] == pytest.approx(vals[-1]["val_loss"] / 0.6931471805599453)
    for name in (
        "model.safetensors",
        "model.best.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ):
        assert (run / name).is_file(), name
    assert (run / "plots" / "loss.png").stat().st_size > 5000
    state = read_json(run / "trainer_state.json")
    assert state["step"] == 60 and state["tokens_seen"] == 60 * 4 * 16
    assert state["best_val_loss"] == min(r["val_loss"] for r in vals)


class SignalAt:
    """A token stream that sends this process SIGTERM when batch ``at`` is drawn."""

    def __init__(self, data: TokenShards, at: int) -> None:
        self.data, self.at, self.calls = data, at, 0

    def __len__(self) -> int:
        return len(self.data)

    def random_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.data.random_batch(*args, **kwargs)

    def sequential_batches(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.data.sequential_batches(*args, **kwargs)


def test_sigterm_then_resume_equals_an_uninterrupted_run(shards: Path, tmp_path: Path) -> None:
    cfg = config(max_steps=20, grad_accum=2)
    whole = train_causal_lm(
        fresh_model(), TokenShards(shards), TokenShards(shards, "val"), cfg, tmp_path / "a"
    )
    assert whole.stopped == "finished"

    # SIGTERM arrives during step 8 (its 15th micro-batch): the step finishes, a checkpoint is
    # written, the loop returns; then a new process-like start resumes from the checkpoint.
    first = train_causal_lm(
        fresh_model(),
        SignalAt(TokenShards(shards), at=15),
        TokenShards(shards, "val"),
        cfg,
        tmp_path / "b",
    )
    assert first.stopped == "signal" and first.state.step == 8
    assert read_json(tmp_path / "b" / "trainer_state.json")["step"] == 8
    torch.manual_seed(1234)  # a resumed process starts with unrelated RNG state
    second = train_causal_lm(
        fresh_model(seed=99),
        TokenShards(shards),
        TokenShards(shards, "val"),
        cfg,
        tmp_path / "b",
        resume=True,
    )
    assert second.stopped == "finished" and second.state.step == 20

    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    strip = [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu")} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu")} for r in b]
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    wb = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert wa == wb, "final weights are bit-for-bit equal"


class PoisonAfter(TinyLM):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.limit = 0, calls

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = super().forward(idx)
        return out * float("nan") if self.calls > self.limit else out


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(
    shards: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"became nan at step 7.*intact \(step 5\)"):
        train_causal_lm(
            PoisonAfter(calls=6),
            TokenShards(shards),
            TokenShards(shards, "val"),
            config(),
            run,
        )
    assert read_json(run / "trainer_state.json")["step"] == 5


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr must be a positive number"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match=r"train\.batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"train\.min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)


def test_resume_without_a_checkpoint(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot resume"):
        train_causal_lm(
            fresh_model(), TokenShards(shards), None, config(), tmp_path / "none", resume=True
        )


def test_context_longer_than_the_data(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seq_len"):
        train_causal_lm(
            fresh_model(), TokenShards(shards, "val"), None, config(seq_len=10_000), tmp_path
        )


def test_bf16_autocast_on_cpu_trains(shards: Path, tmp_path: Path) -> None:
    result = train_causal_lm(
        fresh_model(),
        TokenShards(shards),
        TokenShards(shards, "val"),
        config(max_steps=6, precision="bf16"),
        tmp_path,
    )
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert result.state.step == 6 and all(0 < v < 10 for v in losses)
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values()), "fp32 master weights"


def test_evaluation_lines_say_what_they_measure(
    shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(max_steps=5, eval_every=5, progress=True)
    train_causal_lm(
        fresh_model(),
        TokenShards(shards),
        TokenShards(shards, "val"),
        cfg,
        tmp_path,
        bytes_per_token=1.0,
    )
    out = capsys.readouterr().out
    assert "step 5: val loss (first 2 batches of 4x16) " in out and "bits/byte" in out
    quiet = config(max_steps=5, eval_every=5, progress=False)
    train_causal_lm(fresh_model(), TokenShards(shards), TokenShards(shards, "val"), quiet, tmp_path)
    assert capsys.readouterr() == ("", "")
