"""Data-parallel scaling: training tokens/s of ``groundwork pretrain`` in one process against
``torchrun --nproc-per-node N`` with DDP, our ZeRO-2 and FSDP2, same model, global batch and
steps.

Each configuration is one whole command on the demo recipe (``configs/shakespeare-tiny.yaml``,
the GPT of chapter 8), run for ``--steps`` optimizer steps with evaluation pushed past the end;
its tokens/s is the median of the rates the engine logs after the first ``--skip`` steps
(``metrics.jsonl``). Configurations alternate over ``--rounds`` so that machine noise hits all
alike. Prints tokens/s per configuration and the ratio to one process, and records
``benchmarks/results/data_parallel-<device>.json``.

    python benchmarks/data_parallel.py              # 2 processes on this machine's CPUs
    python benchmarks/data_parallel.py --quick      # a few steps, nothing written

On a CPU with 2 cores the point is correctness, not speed: one process already uses both cores
(two intra-op threads), and two processes get one thread each plus the gradient all-reduce, so
no speed-up is expected; the figures are recorded as measured. On GPUs each process has its own
device and the ratio approaches N.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import machine

ROOT = Path(__file__).resolve().parent.parent
CONFIGS: dict[str, list[str]] = {
    "one process": [],
    "DDP": ["--parallel.dp", "{n}"],
    "ZeRO-2": ["--parallel.dp", "{n}", "--parallel.zero", "2"],
    "FSDP": ["--parallel.dp", "{n}", "--parallel.fsdp", "true"],
}
SKIP = 10
"""Logged rates before this step (start-up, first allocations) are not counted."""


def run(name: str, n: int, steps: int, device: str, out: Path) -> float:
    """One command's median logged tokens/s (after the first ``skip`` steps)."""
    extra = [a.format(n=n) for a in CONFIGS[name]]
    args = ["--config", "configs/shakespeare-tiny.yaml", "--train.max_steps", str(steps)]
    args += ["--train.eval_every", str(10 * steps), "--train.log_every", "5"]
    args += ["--train.progress", "false", "--train.tensorboard", "false"]
    args += ["--train.device", device, "--out", str(out), "--overwrite", *extra]
    if extra:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, "--nproc-per-node", str(n), "-m", "groundwork", "pretrain", *args]
    else:
        command = [sys.executable, "-m", "groundwork", "pretrain", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > SKIP]
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 20, 1
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
            for name in order:
                out = Path(tmp) / name.replace(" ", "-")
                rates[name].append(run(name, args.processes, args.steps, args.device, out))
                print(f"round {r + 1}: {name:<12} {rates[name][-1]:>10,.0f} tokens/s", flush=True)
    tok_s = {name: statistics.median(v) for name, v in rates.items()}
    base = tok_s["one process"]
    for name, v in tok_s.items():
        print(f"{name:<12} {v:>10,.0f} tokens/s   {v / base:.2f}x one process")
    if args.quick:
        return
    result: dict[str, Any] = {
        "benchmark": "data_parallel",
        "recipe": "configs/shakespeare-tiny.yaml (GPT, 4 blocks, d 128; batch 32 x 128 tokens)",
        "processes": args.processes,
        "steps": args.steps,
        "tokens_per_s": {k: round(v, 1) for k, v in tok_s.items()},
        "ratio_to_one_process": {k: round(v / base, 3) for k, v in tok_s.items()},
        "machine": machine(device=args.device),
        "command": "python " + " ".join(sys.argv),
    }
    out = ROOT / "benchmarks" / "results" / f"data_parallel-{args.device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {out}")


if __name__ == "__main__":
    main()
