"""Comparing models on the task harness: a random-guess baseline, one table, one plot.

A score means little alone: 30% on MMLU is chance level (four letters), 30% on ASDiv is not.
This module puts several models' :func:`~groundwork.evaluate.harness.evaluate_tasks` results next
to the score of guessing uniformly at random, in a Markdown table (rows: task at k shots;
columns: each model's ``acc`` and ``acc_norm``, and the random guess) and a plot of accuracy
against the number of shots, one panel per task (the view of Brown et al. 2020, figure 1.2).
Chapter 11 (Evaluation) is produced with it.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundwork.evaluate.task import Task, get_task
from groundwork.fileio import atomic_path
from groundwork.tables import markdown_table

RANDOM = "random guess"
METRICS = ("acc", "acc_norm")
"""The columns of each model in :func:`compare_markdown`."""


def headline(row: Mapping[str, Any]) -> float:
    """The score a results row is judged by: ``acc`` (multiple choice) or ``exact_match``."""
    return float(row["acc"] if "acc" in row else row["exact_match"])


def plotted(row: Mapping[str, Any]) -> float:
    """The accuracy a plot shows: ``acc_norm`` for multiple choice (answers of different lengths
    are compared fairly), ``exact_match`` for generation."""
    return float(row["acc_norm"]) if "acc_norm" in row else headline(row)


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


def _baselines(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The random-guess accuracy of every task in ``results``, over the documents evaluated."""
    limit = next(iter(results.values()))["config"].get("limit") if results else None
    tasks = dict.fromkeys(task for task, _ in _columns(results))
    return {task: random_baseline(task, limit=limit) for task in tasks}


def compare_markdown(results: Mapping[str, Mapping[str, Any]], *, baseline: bool = True) -> str:
    """A Markdown table: one row per task and number of shots; for each model its ``acc`` and
    ``acc_norm`` (multiple choice) or exact match (generation, in the ``acc`` column), in percent;
    then the random-guess column. Left-truncated contexts are listed under the table.

    Args:
        results: Model name -> its :func:`~groundwork.evaluate.harness.evaluate_tasks` result.
        baseline: Add the random-guess column.
    """
    columns = _columns(results)
    names = list(results)
    header = ["task", "shots", "n", *(f"{m} {metric}" for m in names for metric in METRICS)]
    header += ["random"] if baseline else []
    notes: list[str] = []
    by_key = {
        name: {(r["task"], int(r["shots"])): r for r in result["results"]}
        for name, result in results.items()
    }
    baselines = _baselines(results) if baseline else {}
    rows = []
    for task, shots in columns:
        cells: list[str] = []
        n = ""
        for name in names:
            row = by_key[name].get((task, shots))
            if row is None:
                cells += ["", ""]
                continue
            n = str(row["n"])
            cells.append(f"{100 * headline(row):.1f}")
            cells.append(f"{100 * row['acc_norm']:.1f}" if "acc_norm" in row else "")
            if row.get("truncated"):
                notes.append(f"{name} {task} {shots}-shot {row['truncated']}/{row['n']}")
        if baseline:
            cells.append(f"{100 * baselines[task]:.1f}")
        rows.append([task, shots, n, *cells])
    lines = [markdown_table(header, rows, align="l" + "r" * (len(header) - 1))]
    lines.append(
        "Accuracy in percent: `acc` picks the choice with the highest log-likelihood, `acc_norm` "
        "the highest log-likelihood per byte; generation tasks (exact match) fill `acc` only."
    )
    if notes:
        lines.append(
            "Contexts cut from the left to fit the model's window: " + "; ".join(notes) + "."
        )
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_shots(
    results: Mapping[str, Mapping[str, Any]], path: str | Path, *, baseline: bool = True
) -> Path:
    """One panel per task: accuracy against the number of shots, a line per model, and the
    random-guess level dashed (see :func:`plotted` for which accuracy). Written atomically as a
    PNG."""
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
    baselines = _baselines(results) if baseline else {}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for name, result in results.items():
            rows = sorted(
                (r for r in result["results"] if r["task"] == task), key=lambda r: r["shots"]
            )
            ax.plot([r["shots"] for r in rows], [plotted(r) for r in rows], "o-", label=name)
        if baseline:
            ax.axhline(baselines[task], color="grey", ls="--", label=RANDOM)
        ax.set_title(task)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("shots")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.suptitle("acc_norm (multiple choice) or exact match (generation)", fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
