"""The registered real tasks: each loads, has valid golds and renders; SmolLM2 runs on two."""

import time

import pytest

import groundwork.evaluate  # noqa: F401  (registers the tasks)
from groundwork.evaluate.harness import build_examples, evaluate_tasks
from groundwork.evaluate.task import TASKS
from groundwork.evaluate.tasks import lambada_shakespeare_docs, normalize_number

NAMES = sorted(TASKS)


def test_the_real_tasks_are_registered() -> None:
    expected = {"piqa", "boolq", "mmlu", "siqa", "openbookqa", "logiqa", "asdiv"}
    assert expected <= set(NAMES)
    assert "lambada-shakespeare" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_task_loads_with_valid_golds_and_renders(name: str) -> None:
    from groundwork.evaluate.truthfulqa import truthfulqa_data_missing

    if name.startswith("truthfulqa-") and truthfulqa_data_missing():
        pytest.skip(
            "TruthfulQA's multiple-choice rows ship in no package (see evaluate.truthfulqa)"
        )
    task = TASKS[name]
    docs = task.docs()
    assert len(docs) >= 50
    for doc in docs:
        target = task.doc_to_target(doc)
        if task.kind == "multiple_choice":
            assert task.doc_to_choices is not None
            assert 0 <= int(target) < len(task.doc_to_choices(doc)) >= 2
        else:
            assert isinstance(target, str) and task.normalize(target)
    zero = build_examples(task, 0, limit=2)
    two = build_examples(task, 2, limit=2, seed=1)
    for ex0, ex2 in zip(zero, two, strict=True):
        assert ex2.context.endswith(ex0.context.removeprefix(task.description).lstrip("\n"))
        assert len(ex2.context) > len(ex0.context)
        assert ex0.gold == ex2.gold and ex0.choices == ex2.choices


def test_gold_labels_match_the_files() -> None:
    piqa = TASKS["piqa"].docs()[0]  # answer "B. finish, woodgrain with  bobby pin "
    assert TASKS["piqa"].target_text(piqa) == "finish, woodgrain with  bobby pin"
    boolq = TASKS["boolq"].docs()[0]  # answer "False"
    assert TASKS["boolq"].target_text(boolq) == "no"
    assert normalize_number(TASKS["asdiv"].target_text(TASKS["asdiv"].docs()[0])) == "9"


def test_lambada_shakespeare_is_deterministic() -> None:
    docs = lambada_shakespeare_docs()
    assert docs[0]["target"].isalpha() and len(docs[0]["context"].split()) == 99
    lambada_shakespeare_docs.cache_clear()
    assert lambada_shakespeare_docs() == docs


def test_smollm2_on_piqa_and_boolq() -> None:
    import groundwork

    pre = groundwork.load("smollm2-135m-instruct")
    start = time.perf_counter()
    results = evaluate_tasks(
        pre.model, pre.tokenizer, ["piqa", "boolq"], [0], limit=8, batch_size=4, progress=False
    )
    rows = results["results"]
    assert [(r["task"], r["n"]) for r in rows] == [("piqa", 8), ("boolq", 8)]
    for row in rows:
        assert 0 <= row["acc"] <= 1 and 0 <= row["acc_norm"] <= 1
    assert time.perf_counter() - start < 120


def test_a_file_sorted_by_label_is_shuffled_so_a_limit_is_a_fair_sample() -> None:
    task = TASKS["contracts"]
    first = [task.doc_to_target(d) for d in task.docs()[:20]]
    assert 5 <= sum(first) <= 15  # the file itself starts with 39 "yes" in a row
    assert task.docs() == task.docs()  # a fixed order


@pytest.mark.parametrize(
    ("name", "key", "share"),
    [("medqa-test", "question", 0.3), ("privacy-qa", "context", 0.2)],
)
def test_application_tasks_hold_out_a_part_and_draw_shots_from_the_rest(
    name: str, key: str, share: float
) -> None:
    task = TASKS[name]
    assert task.fewshot_docs is not None
    test, train = task.docs(), task.fewshot_docs()
    assert {d[key] for d in test}.isdisjoint(d[key] for d in train)
    assert abs(len(test) / (len(test) + len(train)) - share) < 0.03
    assert [d[key] for d in task.docs()] == [d[key] for d in test]  # deterministic
    for doc, ex in zip(test, build_examples(task, 3, limit=5), strict=False):
        shots = ex.context.removesuffix(task.doc_to_text(doc))  # the three solved examples
        assert sum(str(d[key]).strip() in shots for d in train) >= 3
        assert not any(str(d[key]).strip() in shots for d in test)
