"""`groundwork finetune MODEL --task medqa`: a multiple-choice head over a backbone run, trained
through the engine on question-option pairs and scored beside random and longest-option guesses;
the pair encoding; the run directory; errors."""

import json
from pathlib import Path

import pytest

import helpers
from groundwork import cli
from groundwork.errors import ConfigError, DataError
from groundwork.recipes import finetune_choice as fch
from groundwork.recipes.finetune_classify import load_backbone
from groundwork.runs import load_run, read_config

WORDS = ["red", "green", "blue", "sky", "grass", "blood", "colour", "of", "the", "is", "what"]
FACTS = [("the sky", "blue"), ("the grass", "green"), ("blood", "red")]


def _examples(split: str) -> list[fch.ChoiceExample]:
    """What colour is X? The right option is always "blue", at a position that rotates; the
    head must score options, not positions."""
    colours = ("red", "green", "blue")
    out = []
    for i in range(24 if split == "train" else 6):
        thing, _ = FACTS[i % 3]
        order = colours[i % 3 :] + colours[: i % 3]
        out.append(
            fch.ChoiceExample(f"{split}{i}", f"what colour is {thing}", order, order.index("blue"))
        )
    return out


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [f"what colour is {t} {a}" for t, a in FACTS] + [" ".join(WORDS)]
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), texts)


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(fch.CHOICE_TASKS, "toy", fch.ChoiceTask("toy", "colours", _examples))
    return "toy"


def test_a_choice_head_is_fine_tuned_and_scored_beside_the_baselines(
    bert_run: Path, toy_task: str, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    result = fch.finetune_choice(
        str(bert_run),
        task=toy_task,
        train_config=helpers.tiny_train(batch_size=4, lr=3e-3, max_steps=60, eval_every=30),
        out=out,
        max_tokens=16,
    )
    assert result.stopped == "finished"
    config = read_config(out)
    assert config["kind"] == "task-head" and config["task"] == "toy"
    assert config["head"]["kind"] == "choice" and config["head"]["labels"] == ["A", "B", "C"]
    metrics = json.loads((out / fch.METRICS_FILE).read_text())
    assert metrics["baselines"]["random"] == pytest.approx(1 / 3)
    assert result.accuracy == metrics["test"]["accuracy"] == 1.0  # blue is learnt
    # the run loads back as the trained head
    head, tokenizer, _ = load_run(out, device="cpu")
    seqs = [fch.encode_choices(tokenizer, "bert", ex, 16) for ex in _examples("test")]
    data = fch.ChoiceTexts(seqs, [0] * len(seqs), batch_size=4)
    assert fch.predict(head, data, seqs) == [ex.label for ex in _examples("test")]


def test_batches_are_questions_by_options_by_tokens(bert_run: Path) -> None:
    _, tokenizer, family = load_backbone(str(bert_run))
    seqs = [fch.encode_choices(tokenizer, family, ex, 16) for ex in _examples("test")[:2]]
    data = fch.ChoiceTexts(seqs, [0, 2], batch_size=2, pad_id=0)
    batch = data._batch([0, 1], seqs, [0, 2])
    longest = max(len(s) for q in seqs for s in q)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 3, longest)
    assert batch["labels"].tolist() == [0, 2]
    for q in range(2):
        for c in range(3):
            n = len(seqs[q][c])
            assert batch["input_ids"][q, c, :n].tolist() == seqs[q][c]
            assert batch["attention_mask"][q, c].sum() == n


def test_a_long_question_loses_its_beginning_never_an_option(bert_run: Path) -> None:
    _, tokenizer, family = load_backbone(str(bert_run))
    ex = fch.ChoiceExample("q", " ".join(["what"] * 30 + ["colour is the sky"]), ("blue",), 0)
    (ids,) = fch.encode_choices(tokenizer, family, ex, 12)
    assert len(ids) == 12
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert ids[0] == cls_id and ids[-1] == sep_id
    assert ids[-3:-1] == [sep_id, *tokenizer.encode("blue")]
    assert ids[-6:-3] == tokenizer.encode("is the sky")  # the end of the question is kept
    with pytest.raises(ConfigError, match="raise max_tokens"):
        fch.encode_choices(tokenizer, family, fch.ChoiceExample("q", "x", ("red " * 9,), 0), 12)


def test_decoders_read_the_question_then_the_option(tmp_path: Path) -> None:
    class Chars:
        def encode(self, text: str) -> list[int]:
            return [ord(c) for c in text]

    ex = fch.ChoiceExample("q", "abc", ("x", "yz"), 1)
    assert fch.encode_choices(Chars(), "llama", ex, 64) == [
        [ord(c) for c in "abc\nAnswer: x"],
        [ord(c) for c in "abc\nAnswer: yz"],
    ]
    assert fch.encode_choices(Chars(), "llama", ex, 5)[1] == [ord(c) for c in "er: yz"][-5:]


def test_bad_tasks_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def uneven(split: str) -> list[fch.ChoiceExample]:
        return [fch.ChoiceExample("a", "q", ("x", "y"), 0), fch.ChoiceExample("b", "q", ("x",), 0)]

    with pytest.raises(DataError, match="same number"):
        fch.task_splits(fch.ChoiceTask("bad", "", uneven))

    def wrong_answer(split: str) -> list[fch.ChoiceExample]:
        return [fch.ChoiceExample("a", "q", ("x", "y"), 2)]

    with pytest.raises(DataError, match="answer 2"):
        fch.task_splits(fch.ChoiceTask("bad", "", wrong_answer))

    def empty_option(split: str) -> list[fch.ChoiceExample]:
        return [fch.ChoiceExample("a", "q", ("x", " "), 0)]

    with pytest.raises(DataError, match="empty"):
        fch.task_splits(fch.ChoiceTask("bad", "", empty_option))


def test_medqa_is_split_as_the_evaluation_task_splits_it() -> None:
    from groundwork.evaluate.tasks import medqa_split

    splits = fch.task_splits(fch.CHOICE_TASKS["medqa"])
    assert len(splits["train"]) + len(splits["val"]) == len(medqa_split()["train"])
    assert [ex.question for ex in splits["test"]] == [
        d["question"].strip() for d in medqa_split()["test"]
    ]
    assert {len(ex.choices) for ex in splits["test"]} == {5}


def test_the_cli_runs_a_choice_task(bert_run: Path, toy_task: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["finetune", str(bert_run), "--task", toy_task, "--out", str(out), "--max-tokens", "16"]
    argv += ["--train.max-steps", "4", "--train.batch-size", "4", "--train.eval-every", "2"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "longest option" in printed and "fine-tuned" in printed
    assert (out / "model.safetensors").exists()
