r"""Chapter 24: three domains, one protocol; the table of each from one command.

For each application, a small instruction-tuned decoder *prompted* (SmolLM2-135M-Instruct, zero
and three solved examples, scored by log-likelihood through the evaluation harness of chapter 11)
meets a small encoder *fine-tuned* with a task head (all-MiniLM-L6-v2, ``groundwork finetune``),
on the same held-out questions, beside guesses that read nothing:

* social science, ``dreaddit``: is the writer of a Reddit post stressed?
* biomedical, ``medqa-test``: US medical licensing exam questions, five options;
* legal, ``privacy-qa``: is a privacy-policy clause relevant to a user's question?

The fine-tuned runs must exist first (``runs/dreaddit-minilm``, ``runs/medqa-minilm``,
``runs/privacy-qa-minilm``: the three ``groundwork finetune ... --config configs/...`` commands
of the chapter). Prompting a 135M model is the slow part on a CPU, so it reads the first
``--limit`` test questions (``--limit-shots`` with shots) and the fine-tuned head is scored on the
same questions as well as on the whole test split. Writes ``docs/results/applications.md`` and
``benchmarks/results/applications-cpu.json``::

    python scripts/applications.py                      # about 15 minutes on 2 CPU cores
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from groundwork.evaluate.classification import classification_report
from groundwork.evaluate.harness import evaluate_task
from groundwork.evaluate.task import Doc, get_task
from groundwork.recipes import finetune_choice as fch
from groundwork.recipes import finetune_classify as fc
from groundwork.recipes.generate import load_model
from groundwork.runs import load_run, read_config
from groundwork.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs/results/applications.md"
RECORD = ROOT / "benchmarks/results/applications-cpu.json"


@dataclass(frozen=True)
class Application:
    """One domain: its harness task, its fine-tuned run, how a document becomes the head's input."""

    title: str
    task: str
    run: str
    kind: str  # "sequence" or "choice"
    positive: str | None = None  # binary tasks: the class whose F1 is reported


APPLICATIONS = (
    Application(
        "Social science: stress in Reddit posts", "dreaddit", "dreaddit-minilm", "sequence", "yes"
    ),
    Application("Biomedical: MedQA", "medqa-test", "medqa-minilm", "choice"),
    Application("Legal: privacy-policy QA", "privacy-qa", "privacy-qa-minilm", "sequence", "yes"),
)


def head_text(app: Application, doc: Doc) -> str:
    """The text ``groundwork finetune`` built from this document."""
    if app.task == "privacy-qa":
        return fc.privacy_qa_text(doc)
    return str(doc["text"])


@torch.no_grad()
def head_predictions(app: Application, run_dir: Path, docs: Sequence[Doc]) -> list[int]:
    """The fine-tuned head's answer (an option or class index) for every document."""
    head, tokenizer, config = load_run(run_dir, device="cpu")
    from groundwork.models import registry

    family = registry.arch_of(head.backbone.config).name
    max_tokens = int(config["max_tokens"])
    pad = int(getattr(head.backbone.config, "pad_id", 0) or 0)
    if app.kind == "choice":
        examples = [fch.lettered_example(str(i), d) for i, d in enumerate(docs)]
        seqs: list[Any] = [fch.encode_choices(tokenizer, family, e, max_tokens) for e in examples]
        data = fch.ChoiceTexts(seqs, [0] * len(seqs), batch_size=8, val_batch_size=16, pad_id=pad)
        return fch.predict(head, data, seqs)
    texts = [head_text(app, d) for d in docs]
    seqs = fc.encode_for(tokenizer, family, texts, max_tokens)
    data2 = fc.LabelledTexts(seqs, [0] * len(seqs), batch_size=32, val_batch_size=32, pad_id=pad)
    return fc.predict(head, data2, seqs)


def scores(
    gold: Sequence[int], pred: Sequence[int], n_classes: int, positive: int | None
) -> dict[str, Any]:
    """Accuracy, the positive class's F1 (binary tasks) and how often each answer was given."""
    report = classification_report(list(gold), list(pred), num_classes=n_classes)
    out: dict[str, Any] = {"n": len(gold), "accuracy": report.accuracy}
    if positive is not None:
        out["f1"] = report.f1[positive]
        out["predicted_positive"] = sum(p == positive for p in pred) / len(pred)
    return out


def prompted(
    model: Any, tokenizer: Any, app: Application, shots: int, limit: int
) -> dict[str, Any]:
    """SmolLM2's answers by log-likelihood (``acc``: the raw sum, as lm-evaluation-harness)."""
    start = time.perf_counter()
    row = evaluate_task(
        model, tokenizer, app.task, shots, limit=limit, keep_examples=True, progress=True
    )
    gold = [e["gold"] for e in row["examples"]]
    pred = [e["pred"] for e in row["examples"]]
    n_classes = len(row["examples"][0]["loglikelihoods"])
    out = scores(gold, pred, n_classes, 1 if app.positive else None)
    out.update(
        shots=shots, truncated=row["truncated"], seconds=round(time.perf_counter() - start, 1)
    )
    return out


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def table(app: Application, record: dict[str, Any]) -> str:
    """One application's Markdown table."""
    binary = app.positive is not None
    columns = ["system", "test items", "accuracy"] + (["F1 (yes)", "answers yes"] if binary else [])
    rows = []

    def row(name: str, s: dict[str, Any]) -> None:
        cells = [name, f"{s['n']:,}", pct(s["accuracy"])]
        if binary:
            cells += [pct(s.get("f1")), pct(s.get("predicted_positive"))]
        rows.append(cells)

    for name, s in record["baselines"].items():
        row(name, s)
    for s in record["prompted"]:
        row(f"SmolLM2-135M-Instruct, {s['shots']}-shot prompt", s)
    row("all-MiniLM-L6-v2 fine-tuned, same questions", record["fine_tuned_same"])
    row("all-MiniLM-L6-v2 fine-tuned, whole test split", record["fine_tuned_all"])
    for name, s in record.get("other", {}).items():
        row(name, s)
    body = markdown_table(columns, rows).rstrip("\n")
    # sections the chapter includes one by one (pymdownx.snippets)
    return (
        f"**{app.title}** (`{app.task}`)\n\n<!-- --8<-- [start:{app.task}] -->\n{body}\n"
        f"<!-- --8<-- [end:{app.task}] -->"
    )


def run_application(
    app: Application, model: Any, tokenizer: Any, args: argparse.Namespace
) -> dict[str, Any]:
    task = get_task(app.task)
    docs = task.docs()
    assert task.doc_to_choices is not None
    n_classes = len(task.doc_to_choices(docs[0]))
    positive = 1 if app.positive else None
    gold_all = [int(task.doc_to_target(d)) for d in docs]
    run_dir = ROOT / "runs" / app.run
    pred_all = head_predictions(app, run_dir, docs)
    head_same = scores(gold_all[: args.limit], pred_all[: args.limit], n_classes, positive)
    head_all = scores(gold_all, pred_all, n_classes, positive)
    subset = gold_all[: args.limit]
    baselines: dict[str, dict[str, Any]] = {
        "random guess (expected)": {"n": len(subset), "accuracy": 1 / n_classes}
    }
    if positive is not None:
        baselines["random guess (expected)"].update(f1=None, predicted_positive=0.5)
        share = sum(g == positive for g in subset) / len(subset)
        baselines["always yes"] = {
            "n": len(subset),
            "accuracy": share,
            "f1": 2 * share / (1 + share),
            "predicted_positive": 1.0,
        }
    metrics = json.loads((run_dir / "metrics.json").read_text())
    other: dict[str, dict[str, Any]] = {}
    if "bag_of_words_baseline" in metrics:
        bow = metrics["bag_of_words_baseline"]
        label = read_config(run_dir)["head"]["labels"][1]
        other["bag-of-words logistic regression, whole test split"] = {
            "n": len(docs),
            "accuracy": bow["accuracy"],
            "f1": bow["per_class"][label]["f1"],
            "predicted_positive": (bow["confusion"][0][1] + bow["confusion"][1][1]) / len(docs),
        }
    if "baselines" in metrics:
        other["longest option, whole test split"] = {
            "n": len(docs),
            "accuracy": metrics["baselines"]["longest option"],
        }
    prompts = [
        prompted(model, tokenizer, app, k, args.limit if k == 0 else args.limit_shots)
        for k in args.shots
    ]
    return {
        "task": app.task,
        "run": f"runs/{app.run}",
        "baselines": baselines,
        "prompted": prompts,
        "fine_tuned_same": head_same,
        "fine_tuned_all": head_all,
        "other": other,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--limit", type=int, default=200, help="test questions prompted with 0 shots"
    )
    parser.add_argument(
        "--limit-shots", type=int, default=100, help="test questions prompted with shots"
    )
    parser.add_argument("--shots", default="0,3")
    parser.add_argument("--only", default="", help="comma-separated tasks (default: all three)")
    parser.add_argument(
        "--from-record",
        action="store_true",
        help=f"only write the tables again from {RECORD.relative_to(ROOT)}",
    )
    args = parser.parse_args()
    if args.from_record:
        saved = json.loads(RECORD.read_text())["applications"]
        TABLE.write_text(
            "\n\n".join(table(a, saved[a.task]) for a in APPLICATIONS if a.task in saved) + "\n"
        )
        print(f"wrote {TABLE.relative_to(ROOT)}")
        return
    args.shots = [int(s) for s in args.shots.split(",")]
    model, tokenizer, _ = load_model(args.model)
    records, tables = {}, []
    start = time.perf_counter()
    for app in APPLICATIONS:
        if args.only and app.task not in args.only.split(","):
            continue
        records[app.task] = run_application(app, model, tokenizer, args)
        tables.append(table(app, records[app.task]))
        print(tables[-1], flush=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import machine

    record = {
        "command": "python scripts/applications.py",
        "machine": machine(torch=torch.__version__),
        "model": args.model,
        "limit": args.limit,
        "limit_shots": args.limit_shots,
        "seconds": round(time.perf_counter() - start, 1),
        "applications": records,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    TABLE.write_text("\n\n".join(tables) + "\n")
    print(f"wrote {TABLE.relative_to(ROOT)} and {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
