"""Chapter 18 experiment: distilling SmolLM2-135M into a small Llama on the wiki sample.

Every run is :func:`groundwork.recipes.distill.distill` (``groundwork distill``) with the same
teacher (SmolLM2-135M-Instruct, run in bf16: about twice as fast on this CPU as fp32 and within
0.003 nats/token of it), the same student (``DEFAULT_STUDENT``: a Llama of width 256, 4 blocks,
4 query heads over 2 key/value heads, SwiGLU 688, SmolLM2's tokenizer, so 12.6M embedding
parameters tied with the head and 2.9M in the blocks), the same data (the wiki sample's
training articles in SmolLM2's tokenizer), seed, batch (8 x 64 tokens), optimizer, schedule and
number of steps (300); they differ in what the student learns from:

* ``ce``: the text alone, plain cross-entropy (``--kd.method none``): the baseline;
* ``hinton-a0.5``: Hinton et al.'s loss, tau 2, half soft loss and half cross-entropy;
* ``seqkd``: sequence-level distillation (Kim and Rush 2016): the teacher continues 256
  prompts of 16 real tokens greedily by up to 112 tokens, and the student is trained with the
  plain cross-entropy on those ~32k tokens (about five epochs of them in 300 steps);
* ``hinton-a0.9``: Hinton's loss with 90% soft loss;
* ``ce-670``: the baseline given about the wall time of ``hinton-a0.5`` instead of its steps
  (670 steps: a distillation step, with the teacher's forward pass, took 2.2 times as long).

The measure is the student's bits per byte over the whole held-out split of the wiki sample
(its ``val`` articles, ~57k tokens) in windows of 64 tokens, and over its first 8k tokens (the
engine's evaluation windows, on which every run also scores the teacher). Runs are one after
another in this process, in the order above (``--runs`` picks some); a finished run is skipped
and an interrupted one resumed, and the results are written after each run. ``--parts
teacher`` scores the teacher on the whole held-out split too (slow); ``--parts analyse``
writes ``docs/results/distill.md``, ``docs/chapters/img/distill-curves.png`` and
``benchmarks/results/distill-smollm2.json`` from the runs finished so far. The CPU is shared:
``torch.set_num_threads(1)``. Run::

    nohup .venv/bin/python scripts/distill_runs.py --parts train teacher analyse \\
        > /tmp/fm/distill-runs.log 2>&1 &

(the parts run in the order given).
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

OUT = ROOT / "runs" / "distill"
IMG = ROOT / "docs" / "chapters" / "img" / "distill-curves.png"
TABLE = ROOT / "docs" / "results" / "distill.md"
JSON = ROOT / "benchmarks" / "results" / "distill-smollm2.json"
TEACHER = "smollm2-135m-instruct"

RUNS: dict[str, dict[str, Any]] = {  # in the order they run
    "ce": {"method": "none"},
    "hinton-a0.5": {"method": "hinton", "temperature": 2.0, "alpha": 0.5},
    "seqkd": {"method": "sequence", "prompts": 256, "prompt_len": 16, "max_new_tokens": 112},
    "hinton-a0.9": {"method": "hinton", "temperature": 2.0, "alpha": 0.9},
    "ce-670": {"method": "none"},
}
STEPS = {"ce-670": 670}
"""Runs of other lengths than 300 steps: ``ce-670`` takes about the wall time of
``hinton-a0.5`` (whose steps, with the teacher's forward pass, took 2.2 times as long)."""
LABELS = {
    "ce": "no teacher (cross-entropy on the text)",
    "hinton-a0.5": "Hinton KD, tau 2, alpha 0.5",
    "seqkd": "sequence-level KD (greedy teacher text)",
    "hinton-a0.9": "Hinton KD, tau 2, alpha 0.9",
    "ce-670": "no teacher, 670 steps (about the Hinton run's time)",
}


def train_config(name: str = "ce") -> Any:
    from groundwork.recipes.distill import DEFAULT_TRAIN

    steps = STEPS.get(name, DEFAULT_TRAIN.max_steps)
    return dataclasses.replace(
        DEFAULT_TRAIN, device="cpu", tensorboard=False, max_time=7200, max_steps=steps
    )


def finished(run: Path) -> bool:
    metrics = run / "metrics.json"
    return metrics.exists() and "student_val" in json.loads(metrics.read_text())


def train(names: list[str]) -> None:
    from groundwork.recipes.distill import DistillArgs, distill

    for name in names:
        run = OUT / name
        if finished(run):
            print(f"{name}: finished, skipped", flush=True)
            continue
        resume = (run / "trainer_state.json").exists()
        kd = DistillArgs(teacher_dtype="bf16", **RUNS[name])
        print(f"=== {name} ({'resumed' if resume else 'fresh'}): {kd}", flush=True)
        start = time.perf_counter()
        distill(
            teacher=TEACHER,
            kd=kd,
            source="wiki-sample",
            train=train_config(name),
            out=run,
            resume=resume,
            overwrite=not resume,
        )
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        analyse()  # the results so far


# ----------------------------------------------------------------------------------------------
# analysis
def teacher_bpb(shards: Path, batch_size: int, seq_len: int) -> dict[str, float]:
    """The teacher's (bf16) bits per byte over the whole val split, in the students' windows."""
    from groundwork import corpus
    from groundwork.numerics import loss_to_bits_per_byte
    from groundwork.recipes.distill import load_teacher
    from groundwork.train.loop import evaluate_loss

    net, _ = load_teacher(TEACHER, "bf16", torch.device("cpu"))
    val = corpus.TokenShards(shards, "val")
    start = time.perf_counter()
    total, count = evaluate_loss(net, val, batch_size=batch_size, seq_len=seq_len)
    meta = corpus.read_meta(shards)["splits"]["val"]
    loss = total / count
    bpb = loss_to_bits_per_byte(loss, meta["bytes"] / meta["tokens"])
    print(f"teacher: {bpb:.4f} bits/byte ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"val_loss": loss, "val_bpb": float(bpb or math.nan), "tokens": count}


def curves(name: str) -> list[tuple[int, float]]:
    from groundwork.train.metrics import read_metrics

    rows = read_metrics(OUT / name / "metrics.jsonl")
    return [(r["step"], r["val_bpb"]) for r in rows if r.get("val_bpb") is not None]


def plot(names: list[str], teacher_windows: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for name in names:
        points = curves(name)
        if points:
            ax.plot(*zip(*points, strict=True), "o-", ms=3, label=LABELS[name])
    if teacher_windows is not None:
        ax.axhline(teacher_windows, color="k", ls=":", lw=1, label="teacher (SmolLM2-135M)")
    ax.set_xlabel("step (8 x 64 tokens each)")
    ax.set_ylabel("validation bits per byte (first 16 batches)")
    ax.set_title("Distilling SmolLM2-135M into a 15.5M-parameter Llama (wiki sample)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG)
    plt.close(fig)


def last_windows_bpb(name: str) -> float | None:
    """The run's last evaluation: bits per byte on the first 16 validation batches of 8 x 64
    tokens, the windows the teacher is scored on at the start of every run."""
    points = curves(name)
    return points[-1][1] if points else None


def shards_of(name: str) -> Path:
    config = (OUT / name / "config.yaml").read_text()
    return Path(config.split("shards: ")[1].split()[0])


def score_teacher() -> None:
    """The teacher's bits per byte over the whole val split (slow on a shared CPU: a part of
    its own), kept in the JSON for ``analyse``."""
    cfg = train_config()
    record: dict[str, Any] = json.loads(JSON.read_text()) if JSON.exists() else {}
    record["teacher_whole_val"] = teacher_bpb(shards_of("ce"), cfg.batch_size, cfg.seq_len)
    JSON.parent.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(record, indent=2) + "\n")


def analyse() -> None:
    names = [n for n in RUNS if finished(OUT / n)]
    if not names:
        print("no finished run to analyse")
        return
    old: dict[str, Any] = json.loads(JSON.read_text()) if JSON.exists() else {}
    first = json.loads((OUT / names[0] / "metrics.json").read_text())
    cfg = train_config()
    rows = []
    for name in names:
        m = json.loads((OUT / name / "metrics.json").read_text())
        rows.append(
            {
                "run": name,
                "label": LABELS[name],
                "kd": m["kd"],
                "val_bpb": m["student_val"]["val_bpb"],
                "val_tokens": m["student_val"]["tokens"],
                "val_bpb_windows": last_windows_bpb(name),
                "train_tokens_available": m["data"]["train_tokens"],
                "tokens_trained": m["training"]["tokens_trained"],
                "steps": m["training"]["steps"],
                "train_seconds": m["training"]["train_seconds"],
                "wall_seconds": m["wall_seconds"],
                "curve": curves(name),
            }
        )
    record = {
        "machine": machine(),
        "teacher": TEACHER,
        "teacher_dtype": "bf16",
        "student_params": first["student_params"],
        "train": dataclasses.asdict(cfg),
        "teacher_val_windows": first["teacher_val"],
        "teacher_whole_val": old.get("teacher_whole_val"),
        "runs": rows,
        "missing": [n for n in RUNS if n not in names],
        "command": "python scripts/distill_runs.py --parts train analyse",
    }
    JSON.parent.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    plot(names, first["teacher_val"]["val_bpb"])
    write_table(record)


def write_table(record: dict[str, Any]) -> None:
    rows = record["runs"]
    base = next((r for r in rows if r["run"] == "ce"), None)
    teacher_windows = record["teacher_val_windows"]
    teacher_whole = record.get("teacher_whole_val")
    lines = [
        "<!-- --8<-- [start:runs] -->",
        "| student trained with | val bits/byte, whole split | vs no teacher "
        "| val bits/byte, first 8k tokens | wall time | s/step |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        delta = "" if base is None or r is base else f"{r['val_bpb'] - base['val_bpb']:+.4f}"
        windows = "" if r["val_bpb_windows"] is None else f"{r['val_bpb_windows']:.4f}"
        lines.append(
            f"| {r['label']} | {r['val_bpb']:.4f} | {delta} | {windows} "
            f"| {r['wall_seconds'] / 60:.1f} min | {r['train_seconds'] / max(r['steps'], 1):.2f} |"
        )
    whole = "" if not teacher_whole else f"{teacher_whole['val_bpb']:.4f}"
    lines.append(
        f"| *the teacher, SmolLM2-135M (bf16), same windows* | {whole} | "
        f"| {teacher_windows['val_bpb']:.4f} | | |"
    )
    val_tokens = rows[0]["val_tokens"]
    lines += [
        "<!-- --8<-- [end:runs] -->",
        "",
        f"Student: a Llama of {record['student_params']:,} parameters (width 256, 4 blocks, "
        "GQA 4/2, SmolLM2's 49,152-token vocabulary, embedding tied with the head); 300 steps "
        "(unless the row says otherwise) of 8 x 64 tokens, the same seed and data order; "
        f"the teacher in bf16; validation: the held-out split of the wiki sample ({val_tokens:,} "
        f"tokens) and its first {teacher_windows['tokens']:,} tokens, in windows of 64 tokens. "
        "Wall time: the whole run (the teacher's generation for sequence-level KD, scoring "
        "the teacher, training, evaluations); one CPU thread on a machine shared with other "
        "jobs, so times are rough.",
        "",
    ]
    if record["missing"]:
        lines += [f"Not yet run: {', '.join(record['missing'])}.", ""]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(lines))
    print(TABLE.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["train", "analyse"], choices=["train", "teacher", "analyse"]
    )
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for part in args.parts:
        if part == "train":
            train(args.runs)
        elif part == "teacher":
            score_teacher()
        else:
            analyse()
