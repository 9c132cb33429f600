"""The few-shot harness on synthetic tasks: a toy model with known log-probs, and a tiny GPT."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError, DataError, EmptyCorpusError, UnknownNameError
from groundwork.evaluate.harness import (
    build_examples,
    evaluate_task,
    evaluate_tasks,
    format_markdown,
    loglikelihoods,
    make_request,
    sample_shots,
)
from groundwork.evaluate.task import Doc, Task, get_task, read_jsonl
from groundwork.generate import GenerationConfig, generate_text
from groundwork.models import GPT, GPTConfig
from groundwork.tokenize.char import CharTokenizer

TOKENIZER = CharTokenizer.train(["q ab:xyz\n"], vocab_size=32)


class BigramToy(nn.Module):
    """A "model" whose next-token distribution depends only on the current token: a fixed table."""

    def __init__(self, probs: dict[str, dict[str, float]], max_seq_len: int = 64) -> None:
        super().__init__()
        V = TOKENIZER.vocab_size
        table = torch.full((V, V), 1e-6)
        for current, nexts in probs.items():
            for nxt, p in nexts.items():
                table[TOKENIZER.encode(current)[0], TOKENIZER.encode(nxt)[0]] = p
        table = table / table.sum(dim=1, keepdim=True)
        self.log_table = nn.Parameter(table.log(), requires_grad=False)  # (V, V)
        self.config = SimpleNamespace(max_seq_len=max_seq_len)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.log_table[idx]  # (B, T, V): log-probs are valid logits

    def log_p(self, current: str, nxt: str) -> float:
        i, j = TOKENIZER.encode(current)[0], TOKENIZER.encode(nxt)[0]
        return float(self.log_table[i, j])


def _task(docs: list[Doc], **kw: object) -> Task:
    defaults: dict[str, object] = dict(
        name="toy",
        docs=lambda: docs,
        doc_to_text=lambda d: d["q"],
        doc_to_choices=lambda d: d["choices"],
        doc_to_target=lambda d: d["gold"],
    )
    return Task(**{**defaults, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_name(
        "tiny", vocab_size=TOKENIZER.vocab_size, max_seq_len=48, d_model=32, n_layers=2
    )
    return GPT(config).eval()


def test_toy_model_gives_the_accuracy_worked_out_by_hand() -> None:
    # After "q" comes " " for sure; after " ": "a" with 0.6, "b" with 0.4; after "b": "b" surely.
    # ll(" a") = log .6 = -0.51 beats ll(" bb") = log .4 + log 1 = -0.92: acc always picks "a".
    # Per byte: -0.51 / 1 < -0.92 / 2 = -0.46: acc_norm always picks "bb".
    toy = BigramToy({"q": {" ": 1.0}, " ": {"a": 0.6, "b": 0.4}, "b": {"b": 1.0}})
    golds = [0, 0, 0, 1]
    docs = [{"q": "q", "choices": ["a", "bb"], "gold": g} for g in golds]
    row = evaluate_task(toy, TOKENIZER, _task(docs), 0, keep_examples=True)
    assert row["acc"] == 0.75
    assert row["acc_norm"] == 0.25
    assert row["n"] == 4 and row["truncated"] == 0
    expected_a = toy.log_p("q", " ") + toy.log_p(" ", "a")
    assert row["examples"][0]["loglikelihoods"][0] == pytest.approx(expected_a, abs=1e-6)
    assert row["acc_stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))


def test_loglikelihood_equals_a_direct_computation(gpt: GPT) -> None:
    context, continuation = "q ab:", " xyz"
    request = make_request(TOKENIZER, context, continuation, max_len=48)
    [(ll, greedy)] = loglikelihoods(gpt, [request])
    ids = TOKENIZER.encode(context + continuation)
    n = len(TOKENIZER.encode(continuation))
    with torch.no_grad():
        log_probs = torch.log_softmax(gpt(torch.tensor([ids[:-1]])), dim=-1)[0]  # (T, V)
    expected = sum(float(log_probs[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
    assert ll == pytest.approx(expected, abs=1e-6)
    is_greedy = all(int(log_probs[t - 1].argmax()) == ids[t] for t in range(len(ids) - n, len(ids)))
    assert greedy == is_greedy


def test_batching_does_not_change_scores(gpt: GPT) -> None:
    pairs = [("q", " a"), ("q ab:xyz q", " b"), ("ab", " xyz\nq"), ("z:", " q"), ("qq", " ab")]
    requests = [make_request(TOKENIZER, c, x, max_len=48) for c, x in pairs]
    one = [ll for ll, _ in loglikelihoods(gpt, requests, batch_size=1)]
    four = [ll for ll, _ in loglikelihoods(gpt, requests, batch_size=4)]
    assert one == pytest.approx(four, abs=1e-5)
    alone = [loglikelihoods(gpt, [r])[0][0] for r in requests]  # results keep the input order
    assert four == pytest.approx(alone, abs=1e-5)


def test_choices_with_the_same_input_share_one_forward_pass(gpt: GPT) -> None:
    # "a" and "b" are single tokens: both requests feed the model the context alone.
    requests = [make_request(TOKENIZER, "q ab:", c, max_len=48) for c in ("a", "b", "xyz")]
    assert len(requests[0].continuation_ids) == len(requests[1].continuation_ids) == 1
    rows = []

    def count_rows(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        rows.append(args[0].shape[0])

    handle = gpt.register_forward_pre_hook(count_rows)
    try:
        shared = loglikelihoods(gpt, requests, batch_size=8)
    finally:
        handle.remove()
    assert rows == [2]  # three requests, two distinct inputs, one batch
    alone = [loglikelihoods(gpt, [r])[0] for r in requests]
    assert [ll for ll, _ in shared] == pytest.approx([ll for ll, _ in alone], abs=1e-5)
    assert shared[0][0] != pytest.approx(shared[1][0])  # each scores its own token


def test_fewshot_sampling_is_seeded_and_never_includes_the_test_example() -> None:
    docs = [{"q": f"q{i}", "choices": ["a", "b"], "gold": i % 2, "i": i} for i in range(10)]
    task = _task(docs)
    for index in range(10):
        shots = sample_shots(task, docs, index, 5, seed=1, pool=None)
        assert len({s["i"] for s in shots}) == 5 and index not in {s["i"] for s in shots}
        assert shots == sample_shots(task, docs, index, 5, seed=1, pool=None)
    draws = {
        tuple(s["i"] for s in sample_shots(task, docs, 3, 5, seed=s, pool=None)) for s in range(5)
    }
    assert len(draws) > 1  # the seed matters
    assert sample_shots(task, docs, 0, 9, seed=1, pool=None)  # every other example fits
    with pytest.raises(ConfigError, match="shots"):
        sample_shots(task, docs, 0, 10, seed=1, pool=None)
    # the rendered context holds the shots, solved, before the question
    [example] = build_examples(task, 2, limit=1, seed=7)
    assert example.context.count("\n\n") == 2 and example.context.endswith("q0")


def test_fewshot_split_is_used_when_the_task_has_one() -> None:
    docs = [{"q": "q", "choices": ["a", "b"], "gold": 0}]
    train = [{"q": "x", "choices": ["a", "b"], "gold": 1}]
    task = _task(docs, fewshot_docs=lambda: train)
    assert build_examples(task, 1)[0].context == "x b\n\nq"
    with pytest.raises(ConfigError, match="few-shot split"):
        build_examples(task, 2)


def test_long_contexts_are_cut_from_the_left_and_counted() -> None:
    toy = BigramToy({"q": {" ": 1.0}, " ": {"a": 0.6, "b": 0.4}}, max_seq_len=8)
    docs = [
        {"q": "q", "choices": ["a", "b"], "gold": 0},
        {"q": "ab" * 10 + "q", "choices": ["a", "b"], "gold": 0},
    ]
    row = evaluate_task(toy, TOKENIZER, _task(docs), 0)
    assert row["truncated"] == 1
    assert row["acc"] == 1.0  # a bigram model only sees the last token: cutting changes nothing
    request = make_request(TOKENIZER, "ab" * 10 + "q", " a", max_len=8)
    assert len(request.context_ids) + len(request.continuation_ids) == 9 and request.truncated


def test_generation_task_scores_exact_match(gpt: GPT) -> None:
    config = GenerationConfig(temperature=0, max_new_tokens=4, stop_strings=("\n",))
    prompts = ["q", "ab", "x:", "zz"]
    predictions = [generate_text(gpt, TOKENIZER, p, config) for p in prompts]
    # gold = the model's own greedy answer for the first two, something else for the others
    golds = [predictions[0], predictions[1], predictions[2] + "q", "\n"]
    docs = [{"q": p, "gold": g} for p, g in zip(prompts, golds, strict=True)]
    task = _task(
        docs, kind="generate", doc_to_choices=None, max_new_tokens=4, normalize=lambda s: s
    )
    row = evaluate_task(gpt, TOKENIZER, task, 0, keep_examples=True)
    assert [e["prediction"] for e in row["examples"]] == predictions
    assert row["exact_match"] == 0.5


def test_results_are_json_and_markdown(gpt: GPT) -> None:
    docs = [{"q": "q", "choices": ["a", "b"], "gold": i % 2} for i in range(4)]
    results = evaluate_tasks(gpt, TOKENIZER, [_task(docs)], [0, 2], limit=3, progress=False)
    assert [(r["shots"], r["n"]) for r in results["results"]] == [(0, 3), (2, 3)]
    assert json.loads(json.dumps(results)) == results
    table = format_markdown(results)
    assert "| toy | 2 | 3 | acc_norm |" in table
    assert all(0 <= r["acc"] <= 1 for r in results["results"])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'piqa'"):
        get_task("pika")
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n\n{"question": "c"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"task\.jsonl, line 3: missing field 'answer'"):
        read_jsonl(bad, ("question", "answer"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(EmptyCorpusError):
        read_jsonl(empty)
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(EmptyCorpusError):
        build_examples(_task([]), 0)
    with pytest.raises(ConfigError, match="limit"):
        build_examples(_task([{"q": "q", "choices": ["a"], "gold": 0}]), 0, limit=0)
    with pytest.raises(ConfigError, match="doc_to_choices"):
        _task([], doc_to_choices=None)


@pytest.mark.parametrize("name", ["harness", "task", "tasks"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"groundwork.evaluate.{name}"))
    assert result.failed == 0 and result.attempted > 0


def test_the_registry_is_filled_by_importing_the_package() -> None:
    import groundwork.evaluate
    from groundwork.evaluate import task

    assert groundwork.evaluate.TASKS is task.TASKS and "piqa" in task.TASKS
    assert task.get_task("piqa").name == "piqa"
