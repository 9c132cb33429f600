r"""Chapter 13: every fine-tuning method on one model and one task, in one table and one plot.

SmolLM2-135M-Instruct gets a classification head (the last token's state) and learns SMS spam
(``configs/sms-spam-smollm2-peft.yaml``: 120 steps of 16 messages on 2 CPU cores) with each
``groundwork finetune --method``: full fine-tuning, LoRA, QLoRA, bottleneck adapters, prefix
tuning, prompt tuning, IA3 and BitFit. Each runs in its own process (so its peak resident memory
is its own) with the learning rate its method is usually trained with. Writes
``docs/results/peft-methods.md`` (the table), ``docs/chapters/img/peft-methods.png`` (accuracy and
spam F1 against trainable parameters) and ``benchmarks/results/peft-methods-cpu.json``::

    python scripts/peft_methods.py                       # about an hour on 2 CPU cores
    python scripts/peft_methods.py --from-record          # table and plot from the record
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

CONFIG = ROOT / "configs/sms-spam-smollm2-peft.yaml"
TABLE = ROOT / "docs/results/peft-methods.md"
PLOT = ROOT / "docs/chapters/img/peft-methods.png"
RECORD = ROOT / "benchmarks/results/peft-methods-cpu.json"
MODEL = "smollm2-135m-instruct"

METHODS: dict[str, tuple[str, float]] = {
    # method: (what trains, learning rate)
    "full": ("every weight", 5e-5),
    "lora": ("rank-8 updates of the 7 linear layers of every block", 5e-4),
    "qlora": ("the same, over a 4-bit NF4 base", 5e-4),
    "adapter": ("Houlsby adapters, bottleneck 16", 1e-3),
    "prefix": ("10 key/value prefixes per layer, through an MLP", 1e-3),
    "prompt": ("20 soft-prompt vectors, from the task's description", 3e-2),
    "ia3": ("rescaling of keys, values and MLP activations", 5e-3),
    "bitfit": ("bias vectors of every linear layer", 1e-3),
}


def run(method: str, lr: float, out: Path, reuse: bool = False) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "groundwork.cli", "finetune", MODEL,
        "--config", str(CONFIG), "--method", method, "--train.lr", str(lr),
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
    return {
        "method": method,
        "lr": lr,
        "command": " ".join(["groundwork", *command[3:]]).replace(f"{ROOT}/", ""),
        "trainable_parameters": metrics["trainable_parameters"],
        "total_parameters": metrics["total_parameters"],
        "peak_rss_mb": metrics["peak_rss_mb"],
        "setup_peak_rss_mb": metrics["setup_peak_rss_mb"],
        "seconds_per_step": metrics["seconds_per_step"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1_spam": metrics["test"]["per_class"]["spam"]["f1"],
        "training": metrics["training"],
        "wall_seconds": wall,
    }


def table(rows: list[dict[str, Any]]) -> str:
    full = next((r for r in rows if r["method"] == "full"), None)
    base = full["trainable_parameters"] if full else rows[0]["total_parameters"]
    columns = ["method", "trains", "trainable params", "% of the model", "peak RSS (MiB)"]
    columns += ["vs full", "s / step", "accuracy", "F1 (spam)"]
    lines = []
    for r in rows:
        share = 100 * r["trainable_parameters"] / base  # the base model's own parameters
        memory = f"{r['peak_rss_mb'] / full['peak_rss_mb']:.0%}" if full else "n/a"
        lines.append(
            [
                r["method"],
                METHODS[r["method"]][0],
                f"{r['trainable_parameters']:,}",
                f"{share:.3g}",
                f"{r['peak_rss_mb']:,.0f}",
                memory,
                f"{r['seconds_per_step']:.2f}",
                f"{100 * r['test_accuracy']:.1f}",
                f"{100 * r['test_f1_spam']:.1f}",
            ]
        )
    return markdown_table(columns, lines)


def plot(rows: list[dict[str, Any]], baseline: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    panels = (
        ("test_accuracy", "test accuracy (%)"),
        ("test_f1_spam", "test F1 of the spam class (%)"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for r in rows:
            x, y = r["trainable_parameters"], 100 * r[key]
            ax.scatter([x], [y], s=30)
            ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
        if key in baseline:
            ax.axhline(100 * baseline[key], color="grey", ls="--", lw=1, label="bag of words")
            ax.legend(loc="lower right", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlim(5e3, 5e8)
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{MODEL} on SMS spam, 120 steps on 2 CPU cores", fontsize=10)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/peft-methods")
    parser.add_argument("--from-record", action="store_true", help="only redraw from the record")
    parser.add_argument(
        "--reuse", action="store_true", help="read back runs that finished already, not rerun them"
    )
    args = parser.parse_args(argv)
    if args.from_record:
        record = json.loads(RECORD.read_text())
    else:
        record = {"machine": machine(), "model": MODEL, "task": "sms-spam", "rows": []}
        for method in args.methods:
            try:
                row = run(method, METHODS[method][1], args.runs / method, args.reuse)
            except subprocess.CalledProcessError as e:
                print(f"{method} failed ({e}); going on with the others", flush=True)
                continue
            record["rows"].append(row)
            metrics = json.loads((args.runs / method / "metrics.json").read_text())
            words = metrics["bag_of_words_baseline"]
            record["bag_of_words_f1_spam"] = words["per_class"]["spam"]["f1"]
            record["bag_of_words_accuracy"] = words["accuracy"]
            RECORD.write_text(json.dumps(record, indent=2) + "\n")  # after each, kept on a crash
            print(json.dumps(row), flush=True)
    text = table(record["rows"])
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(text + "\n")
    baseline = {"test_f1_spam": record["bag_of_words_f1_spam"]}
    if "bag_of_words_accuracy" in record:
        baseline["test_accuracy"] = record["bag_of_words_accuracy"]
    plot(record["rows"], baseline)
    print(text)


if __name__ == "__main__":
    main()
