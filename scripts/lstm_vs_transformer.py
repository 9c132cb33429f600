"""Chapter 4 experiment: an LSTM language model against a Transformer of the same size.

Trains (or, with ``--reuse``, reads) two runs on the same Shakespeare shards and tokenizer, with
the same batch, context, optimizer and wall-time budget, at the same time (two processes with
one thread each, so that both see the same load on a shared machine): the GPT of
``configs/shakespeare-tiny.yaml`` and the LSTM of ``configs/shakespeare-lstm.yaml`` (about the
same parameter count). Before each run a few timed steps estimate how many steps fit in the
budget, so that each cosine schedule ends near the budget (``max_time`` stops it in any case).
Then it plots both validation-loss curves against wall time and against tokens seen
(``docs/chapters/img/lstm-vs-transformer.png``) and writes a table
(``docs/results/lstm-vs-transformer.md``).

Run (after preparing ``runs/shakespeare-data`` as in the Makefile's ``demo`` target)::

    nice -n 10 python scripts/lstm_vs_transformer.py --budget 420

Wall time in the plot is the training loop's own clock (reconstructed from the tokens/s it
logs), evaluations included.
"""

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from groundwork import corpus
from groundwork.fileio import read_yaml
from groundwork.models import build_model
from groundwork.recipes.pretrain import DataConfig, ModelArgs, pretrain
from groundwork.train import TrainConfig
from groundwork.train.objectives import causal_lm_loss

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "Transformer (GPT)": "configs/shakespeare-tiny.yaml",
    "LSTM": "configs/shakespeare-lstm.yaml",
}
RUNS = {
    "Transformer (GPT)": "runs/lstm-vs-transformer/gpt",
    "LSTM": "runs/lstm-vs-transformer/lstm",
}
IMAGE = ROOT / "docs/chapters/img/lstm-vs-transformer.png"
TABLE = ROOT / "docs/results/lstm-vs-transformer.md"


def seconds_per_step(model_args: ModelArgs, vocab_size: int, train: TrainConfig) -> float:
    """Time a few training steps (forward, backward, AdamW) on random tokens."""
    torch.manual_seed(0)
    net = build_model(model_args.build_config(vocab_size))
    opt = torch.optim.AdamW(net.parameters(), lr=train.lr)
    times = []
    for _ in range(6):
        x = torch.randint(0, vocab_size, (train.batch_size, train.seq_len + 1))
        start = time.perf_counter()
        loss = causal_lm_loss(net(x[:, :-1]), x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]  # median after warm-up


def train_one(config_path: str, out: Path, shards: Path, budget: float) -> None:
    recipe = read_yaml(ROOT / config_path)
    model_args = ModelArgs(**recipe["model"])
    data = DataConfig(**{**recipe.get("data", {}), "shards": shards})
    meta = corpus.read_meta(shards)
    train = TrainConfig(**recipe["train"])
    per_step = seconds_per_step(model_args, meta["vocab_size"], train)
    steps = max(20, int(0.85 * budget / per_step))  # 15% for evaluations and checkpoints
    print(f"{config_path}: {per_step:.2f} s/step -> {steps} steps in {budget:.0f} s", flush=True)
    fields = {**recipe["train"], "max_steps": steps, "max_time": budget}
    fields.update(eval_every=max(steps // 12, 1), warmup_steps=min(50, steps // 10))
    fields.update(progress=False, tensorboard=False)
    pretrain(model=model_args, data=data, train_config=TrainConfig(**fields), out=out)


def read_curves(run: Path) -> dict[str, Any]:
    """Validation loss against wall time and tokens, and training throughput, from a run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = read_yaml(run / "config.yaml")
    tokens_per_step = config["train"]["batch_size"] * config["train"]["seq_len"]
    wall, last_tokens, clock = {0: 0.0}, 0, 0.0
    for row in rows:
        if "tokens_per_s" in row:
            clock += (row["tokens"] - last_tokens) / row["tokens_per_s"]
            last_tokens = row["tokens"]
            wall[row["step"]] = clock
    logged = sorted(wall)
    val = [r for r in rows if "val_loss" in r]

    def wall_at(step: int) -> float:  # interpolate between logged steps
        lo = max(s for s in logged if s <= step)
        hi = min((s for s in logged if s >= step), default=lo)
        if hi == lo:
            return wall[lo]
        return wall[lo] + (wall[hi] - wall[lo]) * (step - lo) / (hi - lo)

    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    net = build_model_from_run(config)
    return dict(
        steps=[r["step"] for r in val],
        tokens=[r["step"] * tokens_per_step for r in val],
        seconds=[wall_at(r["step"]) for r in val],
        val_loss=[r["val_loss"] for r in val],
        val_bpb=[r["val_bpb"] for r in val],
        tokens_per_s=sorted(speeds)[len(speeds) // 2],
        params=sum(p.numel() for p in net.parameters()),
        total_seconds=clock,
    )


def build_model_from_run(config: dict[str, Any]) -> torch.nn.Module:
    from groundwork.models.registry import config_from_dict as model_config_from_dict

    return build_model(model_config_from_dict(config["model"]))


def plot(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, c in curves.items():
        axes[0].plot(c["seconds"], c["val_loss"], marker="o", ms=3, label=name)
        axes[1].plot([t / 1e6 for t in c["tokens"]], c["val_loss"], marker="o", ms=3, label=name)
    axes[0].set_xlabel("wall time (s; one thread each, on a shared 2-core CPU)")
    axes[1].set_xlabel("training tokens (millions)")
    axes[0].set_ylabel("validation loss (nats/token)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LSTM vs Transformer on Shakespeare, same parameters and wall time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def table(curves: dict[str, dict[str, Any]], budget: float) -> str:
    lines = [
        "| model | parameters | tokens/s (median) | steps | tokens seen | final val loss "
        "| bits/byte |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in curves.items():
        lines.append(
            f"| {name} | {c['params']:,} | {c['tokens_per_s']:,.0f} | {c['steps'][-1]} "
            f"| {c['tokens'][-1] / 1e6:.2f} M | {c['val_loss'][-1]:.3f} | {c['val_bpb'][-1]:.3f} |"
        )
    threads = torch.get_num_threads()
    lines += [
        "",
        f"*Same data (Shakespeare, 2048-token BPE), batch 32 x 128 tokens, AdamW with cosine "
        f"schedule, a budget of {budget:.0f} s of wall time each, both runs at the same time on a "
        f"2-core {platform.machine()} CPU ({threads} thread each, PyTorch {torch.__version__}); "
        "the machine was shared with other jobs at the time, so the absolute speeds are noisy. "
        "Validation loss on the first 20 batches of the validation split; bits per byte = "
        "loss / ln 2 / (bytes per token).*",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per model")
    parser.add_argument("--shards", type=Path, default=ROOT / "runs/shakespeare-data/shards")
    parser.add_argument("--reuse", action="store_true", help="read existing runs, train none")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--only", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only is not None:  # one of the two concurrent training processes
        train_one(CONFIGS[args.only], ROOT / RUNS[args.only], args.shards, args.budget)
        return
    if not args.reuse:  # both at once, one thread each: the same machine load for both
        children = [
            subprocess.Popen(
                [
                    *(sys.executable, __file__, "--only", name, "--budget", str(args.budget)),
                    *("--shards", str(args.shards), "--threads", str(args.threads)),
                ]
            )
            for name in CONFIGS
        ]
        if any(child.wait() for child in children):
            raise SystemExit("a training run failed")
    curves = {name: read_curves(ROOT / run) for name, run in RUNS.items()}
    plot(curves, IMAGE)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(table(curves, args.budget))
    print(TABLE.read_text())
    for name, c in curves.items():
        assert all(math.isfinite(v) for v in c["val_loss"]), name


if __name__ == "__main__":
    main()
