r"""Chapter 14: the five alignment methods on SmolLM2-135M-Instruct, on 2 CPU cores, in one table
and one figure.

Runs, one process each (so each peak resident memory is its own), in order::

    groundwork align sft    smollm2-135m-instruct --config configs/align-sft-smollm2.yaml
    groundwork align reward smollm2-135m-instruct --config configs/align-reward-smollm2.yaml
    groundwork align dpo    smollm2-135m-instruct --config configs/align-dpo-smollm2.yaml
    groundwork align ppo    smollm2-135m-instruct --config configs/align-ppo-smollm2.yaml
    groundwork align grpo   smollm2-135m-instruct --config configs/align-grpo-smollm2.yaml

(PPO scores with the reward run.) Writes ``docs/results/alignment.md`` (the table and sample
answers), ``docs/chapters/img/alignment-curves.png`` (each method's own metric against its
steps, from the runs' ``metrics.jsonl``) and ``benchmarks/results/alignment-cpu.json``::

    python scripts/align_runs.py                 # about an hour on 2 CPU cores
    python scripts/align_runs.py --reuse         # read back runs that finished already
    python scripts/align_runs.py --from-record   # table and figure from the record
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from groundwork.tables import markdown_table  # noqa: E402
from machine import machine  # noqa: E402

TABLE = ROOT / "docs/results/alignment.md"
PLOT = ROOT / "docs/chapters/img/alignment-curves.png"
RECORD = ROOT / "benchmarks/results/alignment-cpu.json"
MODEL = "smollm2-135m-instruct"
METHODS = ("sft", "reward", "dpo", "ppo", "grpo")
CURVES = {
    # method: (logged metric, its label)
    "sft": ("loss", "SFT: loss per answer token"),
    "reward": ("accuracy", "reward model: batch pairwise accuracy"),
    "dpo": ("reward_margin", "DPO: reward margin (chosen - rejected)"),
    "ppo": ("score", "PPO: reward-model score of the rollouts"),
    "ppo-kl": ("kl", "PPO: KL to the reference (per answer)"),
    "grpo": ("reward", "GRPO: exact-answer reward of the rollouts"),
}


def run_dir(method: str) -> Path:
    return ROOT / f"runs/align-{method}-smollm2"


def run(method: str, reuse: bool) -> dict[str, Any]:
    out = run_dir(method)
    command = [
        sys.executable, "-m", "groundwork.cli", "align", method, MODEL,
        "--config", str(ROOT / f"configs/align-{method}-smollm2.yaml"),
        "--train.progress", "false", "--train.tensorboard", "false",
        "--out", str(out), "--overwrite", "true",
    ]  # fmt: skip
    started = time.perf_counter()
    if reuse and (out / "metrics.json").is_file():
        wall = None  # a run of an earlier invocation, read back
    else:
        subprocess.run(command, check=True, cwd=ROOT)
        wall = round(time.perf_counter() - started, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = {k for k, _ in CURVES.values()}
    curves = {
        key: [[row["step"], row[key]] for row in log if key in row and "val_loss" not in row]
        for key in keys
    }
    return {
        "method": method,
        "command": " ".join(["groundwork", *command[3:]]).replace(f"{ROOT}/", ""),
        "metrics": metrics,
        "curves": {k: v for k, v in curves.items() if v},
        "wall_seconds": wall,
    }


def headline(method: str, m: dict[str, Any]) -> tuple[str, str, str]:
    """(what is measured on held-out data, before, after)."""
    if method == "sft":
        loss = m["test_answer_loss"]
        return "loss per answer token (nats)", f"{loss['before']:.3f}", f"{loss['after']:.3f}"
    if method == "reward":
        acc = m["test_pairwise_accuracy"]
        return (
            "pairwise accuracy",
            f"{100 * acc['before']['all']:.1f}%",
            f"{100 * acc['after']['all']:.1f}%",
        )
    if method == "dpo":
        before, after = m["test"]["before"], m["test"]["after"]
        return (
            "DPO loss; implicit reward's preference accuracy, margin; KL to the reference",
            f"{before['loss']:.4f}",
            f"{after['loss']:.4f}; {100 * after['reward_accuracy']:.1f}%, "
            f"{after['reward_margin']:.3f}; {after['kl_sampled']:.2f}",
        )
    if method == "ppo":
        before, after = m["test"]["before"], m["test"]["after"]
        return (
            "reward-model score (KL to the reference)",
            f"{before['score']:.3f} ({before['kl']:.2f})",
            f"{after['score']:.3f} ({after['kl']:.2f})",
        )
    acc = m["test_accuracy"]
    return "ASDiv accuracy, greedy", f"{100 * acc['before']:.1f}%", f"{100 * acc['after']:.1f}%"


def table(rows: list[dict[str, Any]]) -> str:
    columns = ["method", "held-out measure", "before", "after", "models in memory"]
    columns += ["trainable params", "peak RSS (MiB)", "s / step", "steps"]
    lines = []
    for r in rows:
        m = r["metrics"]
        what, before, after = headline(r["method"], m)
        steps = m["training"].split(" at step ")[1].split(" of ")[0]
        lines.append(
            [
                r["method"],
                what,
                before,
                after,
                str(m["models_resident"]),
                f"{m['trainable_parameters']:,}",
                f"{m['peak_rss_mb']:,.0f}",
                f"{m['seconds_per_step']:.1f}",
                steps,
            ]
        )
    return markdown_table(columns, lines)


def samples(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        for s in r["metrics"].get("samples", [])[:2]:
            q = s["question"].replace("\n", " ")[:160]
            if r["method"] == "sft":
                parts.append(
                    f"- **sft** · *{q}* — reference: {s['reference']!r}; after: {s['answer']!r}"
                )
            elif r["method"] == "ppo":
                parts.append(f"- **ppo** · *{q}* — before: {s['before']!r}; after: {s['after']!r}")
            elif r["method"] == "grpo":
                parts.append(
                    f"- **grpo** · *{q}* (answer {s['target']}) — before: {s['before']!r}; "
                    f"after: {s['after']!r}"
                )
    return "\n".join(parts)


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method = {r["method"]: r for r in rows}
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (panel, (key, label)) in zip(axes.flat, CURVES.items(), strict=True):
        r = by_method.get(panel.split("-")[0])
        points = r["curves"].get(key, []) if r else []
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", ms=3, lw=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{MODEL}, alignment on 2 CPU cores (training batches)", fontsize=10)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def _machine(m: dict[str, Any]) -> str:
    return f"{m['processor']}, {m['cpu_count']} CPU cores, {m['platform']}, Python {m['python']}"


def write_table(record: dict[str, Any]) -> None:
    rows = record["rows"]
    body = [
        "<!-- written by scripts/align_runs.py: do not edit by hand -->",
        "",
        table(rows),
        "",
        f"Machine: {_machine(record['machine'])}. Commands:",
        "",
        *[f"- `{r['command']}`" for r in rows],
        "",
        "Answers (greedy, held-out questions):",
        "",
        samples(rows),
        "",
    ]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(body), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--from-record", action="store_true", help="only redraw from the record")
    parser.add_argument(
        "--reuse", action="store_true", help="read back runs that finished already, not rerun them"
    )
    args = parser.parse_args(argv)
    if args.from_record:
        record = json.loads(RECORD.read_text())
    else:
        record = {"machine": machine(), "model": MODEL, "rows": []}
        for method in args.methods:
            record["rows"].append(run(method, args.reuse))
            print(f"{method} done", flush=True)
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_table(record)
    plot(record["rows"])
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
