"""`torchrun --nproc-per-node 2 -m groundwork pretrain ... --parallel...`: every strategy (DDP,
ZeRO-2, FSDP, tensor and pipeline parallel, and 2-D FSDP x TP on 4 processes) takes the
one-process run's steps; checkpoints move between world sizes and continue identically; bad
options fail clearly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from groundwork import corpus, tokenize
from groundwork.distributed import ParallelConfig, build_parallelism, close_world
from groundwork.errors import ConfigError, DistributedError
from groundwork.recipes.pretrain import DataConfig, ModelArgs, pretrain, resume_pretraining
from groundwork.train.config import TrainConfig
from groundwork.train.metrics import read_metrics

pytestmark = pytest.mark.distributed
MESH = ("--parallel.dp", "2", "--parallel.tp", "2")  # 2-D: 4 processes
MODEL = dict(d_model=32, n_layers=2, n_heads=2, max_seq_len=32)
TRAIN = dict(
    max_steps=6,
    batch_size=4,
    seq_len=32,
    grad_accum=2,
    eval_every=3,
    eval_batches=1,
    warmup_steps=2,
    log_every=1,
    progress=False,
    tensorboard=False,
    device="cpu",
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Character-level shards of a few plays (fast to build and to train on)."""
    out = tmp_path_factory.mktemp("ddpdata")
    splits = corpus.load_corpus("shakespeare").splits
    small = {"train": splits["train"][:3], "val": splits["val"][:1]}
    tok = tokenize.train_tokenizer("char", [d.text for d in small["train"]], 200)
    tok.save(out / "tokenizer.json")
    corpus.prepare_shards(
        small,
        tok.encode,
        tok.vocab_size,
        out / "shards",
        eot_id=tok.eot_id,
        tokenizer_path=out / "tokenizer.json",
        progress=False,
    )
    return out / "shards"


def torchrun(shards: Path, out: Path, *extra: str, nproc: int = 2) -> None:
    args = [f"--model.{k}={v}" for k, v in MODEL.items()]
    args += [
        f"--train.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TRAIN.items()
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(nproc), "-m", "groundwork", "pretrain", *args]
    command += ["--data.shards", str(shards), "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]


def one_process_run(shards: Path, out: Path, max_steps: int) -> Path:
    """``groundwork pretrain`` in this process, for ``max_steps`` of the run's steps."""
    pretrain(
        model=ModelArgs(**MODEL),  # type: ignore[arg-type]
        data=DataConfig(shards=shards),
        train_config=TrainConfig(**{**TRAIN, "max_steps": max_steps}),  # type: ignore[arg-type]
        out=out,
    )
    return out


@pytest.fixture(scope="module")
def one_process(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_process_run(shards, tmp_path_factory.mktemp("one") / "run", TRAIN["max_steps"])


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def assert_same_run(got: Path, want: Path) -> None:
    torch.testing.assert_close(
        torch.tensor(losses(got)), torch.tensor(losses(want)), rtol=1e-6, atol=0
    )
    a, b = load_file(got / "model.safetensors"), load_file(want / "model.safetensors")
    assert a.keys() == b.keys()
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)
    state = json.loads((got / "trainer_state.json").read_text())
    assert (
        state["tokens_seen"] == json.loads((want / "trainer_state.json").read_text())["tokens_seen"]
    )


@pytest.mark.parametrize(
    "options",
    [
        ["--parallel.dp", "2"],
        ["--parallel.dp", "2", "--parallel.fsdp", "true"],
        ["--parallel.tp", "2"],
        ["--parallel.pp", "2", "--parallel.microbatches", "2"],
    ],
    ids=["ddp", "fsdp", "tp", "pp"],
)
def test_every_strategy_pretrains_as_one_process_does(
    shards: Path, one_process: Path, tmp_path: Path, options: list[str]
) -> None:
    torchrun(shards, tmp_path / "run", *options)
    assert len(losses(one_process)) == TRAIN["max_steps"]
    assert_same_run(tmp_path / "run", one_process)


CHECKPOINTED = {  # options, processes
    "zero2": (["--parallel.dp", "2", "--parallel.zero", "2"], 2),
    "tp": (["--parallel.tp", "2"], 2),
    "pp": (["--parallel.pp", "2", "--parallel.schedule", "gpipe"], 2),
    "2x2": (list(MESH), 4),  # GPT's q/k/v and their AdamW moments fused back in the files
}


@pytest.mark.parametrize("name", list(CHECKPOINTED))
def test_a_checkpoint_written_under_torchrun_continues_in_one_process(
    shards: Path, one_process: Path, tmp_path: Path, name: str
) -> None:
    options, nproc = CHECKPOINTED[name]
    run = tmp_path / "run"
    torchrun(shards, run, *options, "--train.max_steps", "3", nproc=nproc)
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 3
    resume_pretraining(run, overrides={"max_steps": 6})
    assert_same_run(run, one_process)


@pytest.mark.parametrize("name", ["fsdp", "2x2"])
def test_a_one_process_checkpoint_continues_under_torchrun(
    shards: Path, one_process: Path, tmp_path: Path, name: str
) -> None:
    """The weights and AdamW state are sharded (and GPT's q/k/v split) on loading."""
    options, nproc = {
        "fsdp": (["--parallel.dp", "2", "--parallel.fsdp", "true"], 2),
        "2x2": (list(MESH), 4),
    }[name]
    run = one_process_run(shards, tmp_path / "run", 3)
    command = ["--resume", str(run), "--train.max_steps", "6", *options]
    torchrun(shards, tmp_path / "unused", *command, nproc=nproc)
    assert_same_run(run, one_process)


def test_bad_parallel_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"parallel\.zero must be 0, 1 or 2"):
        ParallelConfig(dp=2, zero=3)
    with pytest.raises(ConfigError, match=r"parallel\.dp must be at least 1"):
        ParallelConfig(dp=0)
    with pytest.raises(ConfigError, match="do not combine"):
        ParallelConfig(tp=2, pp=2)
    with pytest.raises(ConfigError, match="must be 1f1b or gpipe"):
        ParallelConfig(pp=2, schedule="zigzag")  # type: ignore[arg-type]
    with pytest.raises(DistributedError, match="not started by torchrun"):
        build_parallelism(ParallelConfig(dp=2))
    with pytest.raises(DistributedError, match=r"--parallel\.tp 2 asks for 2 processes"):
        build_parallelism(ParallelConfig(tp=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_2d_options_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    ParallelConfig(dp=2, tp=2)
    ParallelConfig(dp=2, tp=2, fsdp=True)  # the dp dimension is FSDP either way
    with pytest.raises(ConfigError, match=r"parallel\.zero does not combine with parallel\.tp"):
        ParallelConfig(dp=2, tp=2, zero=1)
    with pytest.raises(ConfigError, match=r"parallel\.pp and .* do not combine"):
        ParallelConfig(tp=2, pp=2)
    with pytest.raises(ConfigError, match=r"parallel\.pp and .* do not combine"):
        ParallelConfig(dp=2, tp=2, pp=2)
    with pytest.raises(ConfigError, match=r"fsdp with parallel\.tp .* set parallel\.dp > 1"):
        ParallelConfig(tp=2, fsdp=True)
    with pytest.raises(DistributedError, match=r"--parallel\.tp 2 asks for 4 processes"):
        build_parallelism(ParallelConfig(dp=2, tp=2))
    # a one-process group under torchrun's variables: 1 process, not dp x tp = 4
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    try:
        with pytest.raises(
            ConfigError,
            match=r"a 2 x 2 mesh of 4 processes, but torchrun started 1: launch with "
            r"--nproc-per-node 4",
        ):
            build_parallelism(ParallelConfig(dp=2, tp=2), "cpu")
    finally:
        close_world()
