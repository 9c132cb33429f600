"""Comparing models on the task harness: a random-guess baseline, one table, one plot.

A score means little alone: 30% on MMLU is chance level (four letters), 30% on ASDiv is not.
This module puts several models' :func:`~groundwork.evaluate.harness.evaluate_tasks` results next
to the score of guessing uniformly at random, in a Markdown table (rows: models; columns: task at
k shots) and a plot of accuracy against the number of shots, one panel per task (the view of
Brown et al. 2020, figure 1.2). Chapter 11 (Evaluation) is produced with it.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundwork.evaluate.harness import Task, get_task
from groundwork.fileio import atomic_path

RANDOM = "random guess"


def headline(row: Mapping[str, Any]) -> float:
    """The score a results row is judged by: ``acc`` (multiple choice) or ``exact_match``."""
    return float(row["acc"] if "acc" in row else row["exact_match"])


# --8<-- [start:random_baseline]
def random_baseline(task: str | Task, *, limit: int | None = None) -> float:
    """Expected accuracy of picking a choice uniformly at random, over the evaluated documents.

    $\\mathbb{E}[\\text{acc}] = \\frac{1}{N}\\sum_i 1/|C_i|$ for documents with $|C_i|$ choices:
    0.5 for PIQA and BoolQ, 0.25 for MMLU. A generation task (exact match) gets 0: a random
    string is never the answer.
    """
    task = get_task(task)
    if task.kind == "generate" or task.doc_to_choices is None:
        return 0.0
    docs = task.docs()
    docs = docs if limit is None else docs[:limit]
    return sum(1 / len(task.doc_to_choices(d)) for d in docs) / len(docs)


# --8<-- [end:random_baseline]


def _columns(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(task, shots) pairs in the order first seen."""
    seen: dict[tuple[str, int], None] = {}
    for result in results.values():
        for row in result["results"]:
            seen.setdefault((row["task"], int(row["shots"])), None)
    return list(seen)


def compare_markdown(results: Mapping[str, Mapping[str, Any]], *, baseline: bool = True) -> str:
    """A Markdown table: one row per model (and the random-guess row), one column per task and
    number of shots; cells hold ``acc`` (or ``exact_match``) in percent, with the number of
    evaluated examples and of left-truncated contexts under the table.

    Args:
        results: Model name -> its :func:`~groundwork.evaluate.harness.evaluate_tasks` result.
        baseline: Add the random-guess row.
    """
    columns = _columns(results)
    header = "| model | " + " | ".join(f"{t} {k}-shot" for t, k in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    notes: list[str] = []
    for name, result in results.items():
        by_key = {(r["task"], int(r["shots"])): r for r in result["results"]}
        cells = []
        for key in columns:
            row = by_key.get(key)
            cells.append("" if row is None else f"{100 * headline(row):.1f}")
            if row is not None and row.get("truncated"):
                notes.append(
                    f"{name}, {key[0]} {key[1]}-shot: {row['truncated']} of {row['n']} "
                    "contexts cut from the left to fit the model's window"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if baseline:
        limit = next(iter(results.values()))["config"].get("limit") if results else None
        cells = [f"{100 * random_baseline(t, limit=limit):.1f}" for t, _ in columns]
        lines.append(f"| *{RANDOM}* | " + " | ".join(cells) + " |")
    sizes = sorted({(r["task"], r["n"]) for res in results.values() for r in res["results"]})
    lines.append("")
    lines.append(
        "Accuracy in percent (exact match for generation tasks); examples per task: "
        + ", ".join(f"{t} {n}" for t, n in sizes)
        + "."
    )
    if notes:
        lines.append("Truncated: " + "; ".join(notes) + ".")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_shots(
    results: Mapping[str, Mapping[str, Any]], path: str | Path, *, baseline: bool = True
) -> Path:
    """One panel per task: accuracy against the number of shots, a line per model, and the
    random-guess level dashed. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(results)
    tasks = list(dict.fromkeys(t for t, _ in columns))
    n_cols = min(3, len(tasks))
    n_rows = -(-len(tasks) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.6 * n_cols, 2.8 * n_rows), squeeze=False, sharex=True
    )
    limit = next(iter(results.values()))["config"].get("limit") if results else None
    for ax, task in zip(axes.flat, tasks, strict=False):
        for name, result in results.items():
            rows = sorted(
                (r for r in result["results"] if r["task"] == task), key=lambda r: r["shots"]
            )
            ax.plot([r["shots"] for r in rows], [headline(r) for r in rows], "o-", label=name)
        if baseline:
            ax.axhline(random_baseline(task, limit=limit), color="grey", ls="--", label=RANDOM)
        ax.set_title(task)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("shots")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
