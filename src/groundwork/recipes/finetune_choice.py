r"""Fine-tuning a multiple-choice head: ``groundwork finetune MODEL --task medqa``.

A multiple-choice question with :math:`C` options becomes :math:`C` texts, the question paired
with each option; the backbone reads each pair, a head maps its pooled state to one score, and a
softmax over the :math:`C` scores is trained with cross-entropy against the right option
(:class:`~groundwork.adapt.heads.MultipleChoiceClassifier`, as ``BertForMultipleChoice``;
Devlin et al. 2019 fine-tune BERT on SWAG this way, Radford et al. 2018 GPT on RACE and Story
Cloze). Every weight is trained through the engine with
:class:`~groundwork.train.objectives.ClassificationObjective`: the "classes" are the options.

A pair is ``[CLS] question [SEP] option [SEP]`` for BERT and ``question\nAnswer: option`` for a
decoder (whose last token then sees both). When it does not fit in ``max_tokens`` the question
loses its *beginning*: the end of a MedQA question is where it asks what it asks ("Which of the
following is the most likely diagnosis?").

Task: ``medqa`` (US medical licensing exam questions with five options, Jin et al. 2021), split
as the ``medqa-test`` evaluation task splits it (:func:`groundwork.evaluate.tasks.medqa_split`:
70% of the questions to train on, 30% held out), so chapter 24 compares prompting SmolLM2 and
fine-tuning a head on the same questions. The test split is scored beside two baselines that read
no question: **random** (the expected accuracy of a uniform guess) and **longest option**. The
run directory is a ``task-head`` run (head ``kind: choice``). Chapter 24.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, DataError
from groundwork.fileio import write_json
from groundwork.runs import check_writable
from groundwork.train.config import TrainConfig
from groundwork.train.data import Batch, LabelledSequences, pad_with_mask

__all__ = [
    "CHOICE_TASKS",
    "ChoiceExample",
    "ChoiceResult",
    "ChoiceTask",
    "ChoiceTexts",
    "encode_choices",
    "finetune_choice",
    "lettered_example",
    "results_table",
]

METRICS_FILE = "metrics.json"
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class ChoiceExample:
    """One question, its options and the index of the right one."""

    id: str
    question: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class ChoiceTask:
    """A multiple-choice task: ``examples(split)`` for ``train`` and ``test``."""

    name: str
    description: str
    examples: Callable[[str], list[ChoiceExample]]


def lettered_example(example_id: str, doc: dict[str, Any]) -> ChoiceExample:
    """A lettered multiple-choice row of the harness (``question``, ``choices``, ``label``)."""
    return ChoiceExample(example_id, doc["question"].strip(), tuple(doc["choices"]), doc["label"])


def _medqa(split: str) -> list[ChoiceExample]:
    from groundwork.evaluate.tasks import medqa_split

    return [lettered_example(f"{split}/{n:04d}", d) for n, d in enumerate(medqa_split()[split])]


CHOICE_TASKS: dict[str, ChoiceTask] = {
    "medqa": ChoiceTask(
        "medqa", "US medical licensing exam questions, five options (Jin et al. 2021)", _medqa
    ),
}
"""The multiple-choice tasks ``groundwork finetune --task`` knows."""


def task_splits(task: ChoiceTask) -> dict[str, list[ChoiceExample]]:
    """``train``/``val``/``test``: validation is the training questions whose salted id hash is
    below :data:`VAL_FRACTION`. Every question of a task must have the same number of options."""
    train, test = task.examples("train"), task.examples("test")
    if not train or not test:
        raise DataError(f"task {task.name} needs training and test questions")
    n_choices = len(train[0].choices)
    for ex in train + test:
        if len(ex.choices) != n_choices or n_choices < 2:
            raise DataError(
                f"task {task.name}: question {ex.id} has {len(ex.choices)} options, the first "
                f"has {n_choices}; a multiple-choice task needs the same number (>= 2) everywhere"
            )
        if not 0 <= ex.label < n_choices:
            raise DataError(f"task {task.name}: question {ex.id} has answer {ex.label}")
        if not ex.question.strip() or not all(c.strip() for c in ex.choices):
            raise DataError(f"task {task.name}: question {ex.id} has an empty question or option")
    val = [ex for ex in train if hash_fraction(ex.id, f"{task.name}-val") < VAL_FRACTION]
    val_ids = {ex.id for ex in val}
    return {"train": [ex for ex in train if ex.id not in val_ids], "val": val, "test": test}


# ---------------------------------------------------------------------------------------------
# data


# --8<-- [start:encode_choices]
def encode_choices(
    tokenizer: Any, family: str, example: ChoiceExample, max_tokens: int
) -> list[list[int]]:
    """The token ids of the question paired with each option, each at most ``max_tokens``
    long; the question is cut from the left to fit (an option alone never is)."""
    if family == "bert":
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        question = tokenizer.encode(example.question)
        options = [tokenizer.encode(c) for c in example.choices]
        out = []
        for option in options:
            room = max_tokens - len(option) - 3  # [CLS] question [SEP] option [SEP]
            if room < 1:
                raise ConfigError(
                    f"an option of question {example.id} takes {len(option)} tokens: raise "
                    f"max_tokens above {max_tokens}"
                )
            out.append([cls_id, *question[-room:], sep_id, *option, sep_id])
        return out
    question = tokenizer.encode(example.question + "\nAnswer:")
    out = []
    for choice in example.choices:
        option = tokenizer.encode(" " + choice)
        room = max_tokens - len(option)
        if room < 1:
            raise ConfigError(
                f"an option of question {example.id} takes {len(option)} tokens: raise "
                f"max_tokens above {max_tokens}"
            )
        out.append([*question[-room:], *option])
    return out


# --8<-- [end:encode_choices]


class ChoiceTexts(LabelledSequences):
    """Questions as lists of ``C`` option sequences, with the right option's index, as the dict
    batches a multiple-choice head reads: ``input_ids``, ``attention_mask`` ``(B, C, T)``
    (right-padded to the longest of the batch) and ``labels`` ``(B,)``."""

    def _batch(self, idx: list[int], seqs: Sequence[Any], labels: Sequence[Any]) -> Batch:
        n_choices = len(seqs[idx[0]])
        flat = [ids for i in idx for ids in seqs[i]]
        input_ids, attention_mask = pad_with_mask(flat, self.pad_id)  # (B*C, T)
        shape = (len(idx), n_choices, input_ids.shape[1])
        return {
            "input_ids": input_ids.view(shape),  # (B, C, T)
            "attention_mask": attention_mask.view(shape),  # (B, C, T)
            "labels": torch.tensor([labels[i] for i in idx], dtype=torch.long),
        }


@torch.no_grad()
def predict(head: nn.Module, data: ChoiceTexts, seqs: Sequence[Any]) -> list[int]:
    """The head's option for every question, in order."""
    was_training = head.training
    head.eval()
    out: list[int] = []
    zeros = [0] * len(seqs)
    for start in range(0, len(seqs), data.val_batch_size):
        idx = list(range(start, min(start + data.val_batch_size, len(seqs))))
        batch = data._batch(idx, seqs, zeros)
        out += head(batch["input_ids"], batch["attention_mask"]).argmax(-1).tolist()  # (B, C)
    head.train(was_training)
    return out


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """The share of questions answered right."""
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


# ---------------------------------------------------------------------------------------------
# fine-tuning


@dataclass
class ChoiceResult:
    """Test accuracy of the fine-tuned head and of the baselines that read no question."""

    run_dir: Path
    summary: str
    stopped: str
    accuracy: float
    baselines: dict[str, float]
    task: ChoiceTask
    sizes: dict[str, int]


def finetune_choice(
    model: str,
    *,
    task: str,
    train_config: TrainConfig,
    out: Path,
    overwrite: bool = False,
    max_tokens: int = 256,
    pooling: str | None = None,
) -> ChoiceResult:
    """Fine-tune ``model`` with a multiple-choice head on ``task``; write the run to ``out`` and
    score the test split beside the random and longest-option baselines."""
    from groundwork.adapt import head_for
    from groundwork.adapt.runs import train_task_head
    from groundwork.recipes.finetune_classify import load_backbone
    from groundwork.train.objectives import ClassificationObjective

    the_task = CHOICE_TASKS[task]
    if max_tokens < 8:
        raise ConfigError(f"max_tokens must be >= 8 for a question and an option, got {max_tokens}")
    check_writable(out, overwrite=overwrite)
    if train_config.best_metric == "val_loss":  # the engine's default: choose by accuracy
        train_config = dataclasses.replace(
            train_config, best_metric="val_accuracy", best_mode="max"
        )
    backbone, tokenizer, family = load_backbone(model)
    head = head_for(backbone, "choice", 1, pooling)  # type: ignore[arg-type]
    splits = task_splits(the_task)
    seqs: dict[str, list[Any]] = {  # per question, its C option sequences
        s: [encode_choices(tokenizer, family, ex, max_tokens) for ex in part]
        for s, part in splits.items()
    }
    labels = {s: [ex.label for ex in part] for s, part in splits.items()}
    pad = int(getattr(backbone.config, "pad_id", 0) or 0)
    data = ChoiceTexts(
        seqs["train"],
        labels["train"],
        batch_size=train_config.batch_size,
        val_seqs=seqs["val"],
        val_labels=labels["val"],
        val_batch_size=16,
        pad_id=pad,
    )

    def evaluate(net: nn.Module) -> dict[str, float]:
        return {"val_accuracy": accuracy(labels["val"], predict(net, data, seqs["val"]))}

    n_choices = len(splits["train"][0].choices)
    head_section = {
        "kind": "choice",
        "pooling": getattr(head, "pooling", pooling),
        "num_labels": 1,
        "labels": [chr(ord("A") + i) for i in range(n_choices)],
    }
    result = train_task_head(
        head,
        tokenizer,
        data,
        ClassificationObjective(),
        train_config,
        out,
        backbone=model,
        head_section=head_section,
        evaluate=evaluate,
        task=task,
        max_tokens=max_tokens,
    )
    test = splits["test"]
    test_accuracy = accuracy(labels["test"], predict(head, data, seqs["test"]))
    longest = [max(range(n_choices), key=lambda j: len(ex.choices[j])) for ex in test]
    baselines = {"random": 1 / n_choices, "longest option": accuracy(labels["test"], longest)}
    write_json(
        out / METRICS_FILE,
        {
            "task": task,
            "backbone": model,
            "test": {"accuracy": test_accuracy, "n": len(test)},
            "baselines": baselines,
            "training": result.summary(),
        },
    )
    sizes = {s: len(v) for s, v in seqs.items()}
    return ChoiceResult(
        out, result.summary(), result.stopped, test_accuracy, baselines, the_task, sizes
    )


def results_table(result: ChoiceResult, model: str) -> str:
    """Test accuracy of the baselines and of the fine-tuned head."""
    from groundwork.tables import markdown_table

    rows = [[name, f"{100 * acc:.1f}"] for name, acc in result.baselines.items()]
    rows.append([f"{model} fine-tuned", f"{100 * result.accuracy:.1f}"])
    return markdown_table(["system", "accuracy"], rows)
