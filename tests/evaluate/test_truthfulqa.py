"""TruthfulQA MC1/MC2 (``groundwork.evaluate.truthfulqa``): the scores on hand-computed
log-likelihoods (and against lm-eval's ``process_results_mc2``), the prompt against lm-eval's
task file, the loader's errors, and the harness tasks with a tiny random model. Parity of whole
runs with lm-eval is in ``test_lm_eval_parity.py``."""

import json
import math
from pathlib import Path

import pytest

from groundwork.errors import ConfigError, DataError
from groundwork.evaluate import evaluate_task, get_task
from groundwork.evaluate.truthfulqa import (
    MC_FILE,
    MC_SOURCE,
    QA_PROMPT,
    load_truthfulqa_mc,
    mc1_correct,
    mc1_metrics,
    mc2_metrics,
    mc2_score,
    register_truthfulqa_tasks,
    truthfulqa_prompt,
    truthfulqa_tasks,
)
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt

ROWS = [
    {
        "question": "Is the moon made of cheese?",
        "mc1_targets": {"choices": ["No.", "Yes.", "Partly."], "labels": [1, 0, 0]},
        "mc2_targets": {"choices": ["No.", "It is rock.", "Yes."], "labels": [1, 1, 0]},
    },
    {
        "question": "Do cats bark?",
        "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
        "mc2_targets": {"choices": ["No.", "Yes.", "Loudly."], "labels": [1, 0, 0]},
    },
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mc1_and_mc2_on_hand_computed_loglikelihoods() -> None:
    assert mc1_correct([-1.0, -2.0, -3.0]) and not mc1_correct([-2.0, -1.0])
    assert mc1_correct([-1.0, -1.0])  # a tie: the first (the true answer) wins, as np.argmax
    # probabilities 0.2, 0.1, 0.1, true answers 0 and 2: (0.2 + 0.1) / 0.4
    lls = [math.log(0.2), math.log(0.1), math.log(0.1)]
    assert mc2_score(lls, [1, 0, 1]) == pytest.approx(0.75)
    assert mc2_score([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))
    m1 = mc1_metrics(ROWS, [[-1.0, -2.0, -3.0], [-2.0, -1.0]])
    assert m1["mc1"] == 0.5 and m1["mc1_ci_low"] < 0.5 < m1["mc1_ci_high"]
    m2 = mc2_metrics(ROWS, [lls, [math.log(0.5), math.log(0.25), math.log(0.25)]])
    assert m2["mc2"] == pytest.approx((0.75 + 0.5) / 2)
    assert m2["mc2_stderr"] == pytest.approx(0.125)  # sd of (0.75, 0.5) / sqrt(2)
    with pytest.raises(ConfigError):
        mc2_score([-1.0], [1, 0])
    with pytest.raises(ConfigError):
        mc2_score([-1.0, -2.0], [1, 2])
    with pytest.raises(ConfigError):
        mc1_correct([])


def test_mc2_equals_lm_evals_process_results() -> None:
    utils = pytest.importorskip("lm_eval.tasks.truthfulqa.utils")
    lls = [-3.5, -2.25, -7.0, -1.5]
    labels = [1, 1, 0, 0]
    doc = {"mc2_targets": {"choices": ["a", "b", "c", "d"], "labels": labels}}
    theirs = utils.process_results_mc2(doc, [(ll, False) for ll in lls])["acc"]
    assert mc2_score(lls, labels) == pytest.approx(float(theirs), abs=1e-12)


def test_the_prompt_is_lm_evals() -> None:
    pytest.importorskip("lm_eval")
    jinja2 = pytest.importorskip("jinja2")
    yaml = pytest.importorskip("yaml")
    import lm_eval

    config = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa" / "truthfulqa_mc1.yaml"
    template = yaml.safe_load(config.read_text())["doc_to_text"]
    rendered = jinja2.Template(template).render(question="Do cats bark?")
    assert truthfulqa_prompt("Do cats bark?") == rendered
    assert rendered.startswith(QA_PROMPT) and rendered.endswith("\n\nQ: Do cats bark?\nA:")


def test_loader_checks_the_rows(tmp_path: Path) -> None:
    assert load_truthfulqa_mc(_write(tmp_path / "ok.jsonl", ROWS)) == ROWS
    bad_mc1 = [{**ROWS[0], "mc1_targets": {"choices": ["Yes.", "No."], "labels": [0, 1]}}]
    with pytest.raises(DataError, match="true answer first"):
        load_truthfulqa_mc(_write(tmp_path / "mc1.jsonl", bad_mc1))
    bad_mc2 = [{**ROWS[0], "mc2_targets": {"choices": ["a"], "labels": [1, 0]}}]
    with pytest.raises(DataError, match="mc2_targets"):
        load_truthfulqa_mc(_write(tmp_path / "mc2.jsonl", bad_mc2))
    with pytest.raises(DataError, match="question"):
        load_truthfulqa_mc(_write(tmp_path / "q.jsonl", [{"mc1_targets": {}}]))


def test_registered_always_and_saying_where_the_data_goes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from groundwork.evaluate import task as task_module
    from groundwork.evaluate.truthfulqa import truthfulqa_data_missing

    monkeypatch.setattr(task_module, "TASKS", {})
    monkeypatch.setenv("GROUNDWORK_HOME", str(tmp_path))
    names = [t.name for t in register_truthfulqa_tasks()]
    assert names == ["truthfulqa-mc1", "truthfulqa-mc2"] and truthfulqa_data_missing()
    with pytest.raises(DataError, match="only the true answers"):
        get_task("truthfulqa-mc1").docs()
    path = tmp_path / "data" / MC_SOURCE / MC_FILE
    path.parent.mkdir(parents=True)
    _write(path, ROWS)
    assert not truthfulqa_data_missing()
    assert get_task("truthfulqa-mc2").docs() == ROWS


def test_harness_tasks_with_a_tiny_model(tmp_path: Path) -> None:
    path = _write(tmp_path / "mc.jsonl", ROWS)
    mc1, mc2 = truthfulqa_tasks(path)
    texts = [truthfulqa_prompt(r["question"]) for r in ROWS]
    texts += [c for r in ROWS for k in ("mc1_targets", "mc2_targets") for c in r[k]["choices"]]
    tok = CharTokenizer.train(texts, vocab_size=97)
    model = tiny_gpt(max_seq_len=1024)
    r1 = evaluate_task(model, tok, mc1, keep_examples=True)
    assert r1["mc1"] == r1["acc"]  # MC1 is the harness's accuracy with the true answer first
    assert r1["mc1"] == sum(mc1_correct(e["loglikelihoods"]) for e in r1["examples"]) / 2
    r2 = evaluate_task(model, tok, mc2, keep_examples=True)
    expected = [
        mc2_score(e["loglikelihoods"], r["mc2_targets"]["labels"])
        for e, r in zip(r2["examples"], ROWS, strict=True)
    ]
    assert r2["mc2"] == pytest.approx(sum(expected) / 2) and 0 < r2["mc2"] < 1
    assert r2["metrics"] == ["mc2"] and r1["metrics"] == ["mc1", "mc1_ci_low", "mc1_ci_high"]
