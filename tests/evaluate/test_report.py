"""The model comparison table, random-guess baseline and accuracy-vs-shots plot."""

from pathlib import Path

import pytest

from groundwork.errors import UnknownNameError
from groundwork.evaluate import TASKS
from groundwork.evaluate.report import compare_markdown, plot_accuracy_vs_shots, random_baseline


def _result(acc: dict[tuple[str, int], float], limit: int | None = 4) -> dict:
    rows = []
    for (task, shots), value in acc.items():
        key = "exact_match" if TASKS[task].kind == "generate" else "acc"
        rows.append(dict(task=task, shots=shots, n=4, truncated=shots, **{key: value}))
    return dict(results=rows, config=dict(limit=limit))


def test_random_baseline_is_one_over_the_number_of_choices() -> None:
    assert random_baseline("piqa") == 0.5 and random_baseline("boolq", limit=3) == 0.5
    assert random_baseline("mmlu", limit=10) == 0.25
    assert random_baseline("asdiv") == 0.0  # a random string is never the answer
    with pytest.raises(UnknownNameError, match="did you mean 'piqa'"):
        random_baseline("piqaa")


def test_compare_markdown_rows_columns_and_notes() -> None:
    results = {
        "big": _result({("piqa", 0): 0.75, ("piqa", 5): 1.0, ("asdiv", 0): 0.25}),
        "small": _result({("piqa", 0): 0.5, ("asdiv", 0): 0.0}),
    }
    results["big"]["results"][0]["acc_norm"] = 0.5
    lines = compare_markdown(results).splitlines()
    assert (
        lines[0]
        == "| task | shots | n | big acc | big acc_norm | small acc | small acc_norm | random |"
    )
    assert lines[2] == "| piqa | 0 | 4 | 75.0 | 50.0 | 50.0 |  | 50.0 |"
    assert lines[3] == "| piqa | 5 | 4 | 100.0 |  |  |  | 50.0 |"  # missing cells stay empty
    assert lines[4] == "| asdiv | 0 | 4 | 25.0 |  | 0.0 |  | 0.0 |"
    assert "big piqa 5-shot 5/4" in lines[-1]
    assert "random" not in compare_markdown(results, baseline=False).splitlines()[0]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    results = {"m": _result({("piqa", 0): 0.5, ("piqa", 5): 0.75, ("boolq", 0): 0.6})}
    path = plot_accuracy_vs_shots(results, tmp_path / "sub" / "acc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["acc.png"]  # no temporary file left
