r"""Fine-tuning a task head over a pretrained backbone: ``groundwork finetune MODEL --task TASK``
for sequence classification (Devlin et al. 2019; Radford et al. 2018).

The backbone is a named pretrained model (``all-minilm-l6-v2``, ``smollm2-135m-instruct``) or a
run directory; :func:`groundwork.adapt.head_for` puts its family's head on it (BERT: the pooler
over ``[CLS]``; GPT/Llama: the last token) and every weight is trained through the engine with
:class:`~groundwork.train.objectives.ClassificationObjective`, the validation split choosing the
best evaluation (the positive class's F1 for a binary task, else macro-F1), restored at the end.
The test split is scored once, beside a **bag-of-words logistic regression** (word counts of the
training vocabulary, our own :func:`~groundwork.adapt.probe.fit_probe`): the baseline a
fine-tuned transformer has to beat to be worth its cost.

Tasks: ``dreaddit`` (stress in Reddit posts, Turcan & McKeown 2019: 2,838 training and 715 test
posts; the paper's best logistic regression reaches F1 79.8, BERT-base 80.7), ``sms-spam`` and
``privacy-qa`` (is a privacy-policy clause relevant to a user's question; the pair is one text,
``question [SEP] clause``, which a BERT tokenizer reads as its separator token; the test clauses
are those the ``privacy-qa`` evaluation task holds out, so prompting and fine-tuning meet on the
same questions).
The validation split is 10% of the training examples, by a salted hash of their ids.

The run directory (``kind: task-head``) holds ``config.yaml`` (the backbone's name and config,
the head, the task and its labels), ``model.safetensors`` (the head with its backbone),
``metrics.json`` and the engine's log. Chapters 12 and 24.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, DataError, UnknownNameError, did_you_mean
from groundwork.evaluate.classification import ClassificationReport, classification_report
from groundwork.fileio import write_json
from groundwork.peft.lora import trainable_parameters
from groundwork.runs import check_writable
from groundwork.runtime import peak_rss_mb, reset_peak_rss
from groundwork.train.config import TrainConfig
from groundwork.train.data import Batch, LabelledSequences, pad_with_mask

__all__ = [
    "CLASSIFICATION_TASKS",
    "ClassificationTask",
    "LabelledTexts",
    "bag_of_words_baseline",
    "finetune_classifier",
    "privacy_qa_text",
]

METRICS_FILE = "metrics.json"
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class ClassificationTask:
    """A labelled-text task: ``examples(split)`` gives ``(id, text, label id)`` for ``train``
    and ``test``; ``positive`` is the class whose F1 is the score of a binary task."""

    name: str
    description: str
    labels: tuple[str, ...]
    examples: Callable[[str], list[tuple[str, str, int]]]
    positive: int | None = None


def _source_examples(source: str, labels: Sequence[str] | None = None) -> Callable[[str], Any]:
    def examples(split: str) -> list[tuple[str, str, int]]:
        from groundwork.corpus import load_examples

        out = []
        for e in load_examples(source, split=split):  # type: ignore[arg-type]
            label = e["label"] if labels is None else list(labels).index(e["label"])
            out.append((str(e["id"]), str(e["text"]), int(label)))
        return out

    return examples


def privacy_qa_text(doc: dict[str, Any]) -> str:
    """The one text a head reads for a Privacy-Policy QA row: ``question [SEP] clause``."""
    return f"{doc['question'].strip()} [SEP] {doc['context'].strip()}"


def _privacy_qa(split: str) -> list[tuple[str, str, int]]:
    """Privacy-Policy QA as text pairs ``question [SEP] clause``: the harness task's held-out
    clauses are the test split, the rest the training split (:mod:`groundwork.evaluate.tasks`)."""
    from groundwork.evaluate.tasks import privacy_qa_split

    rows = privacy_qa_split()[split]
    return [
        (
            f"{split}/{n:05d}",
            privacy_qa_text(d),
            int(str(d["answer"]).strip().lower() == "true"),
        )
        for n, d in enumerate(rows)
    ]


CLASSIFICATION_TASKS: dict[str, ClassificationTask] = {
    "dreaddit": ClassificationTask(
        "dreaddit",
        "stress or not in Reddit posts (Turcan & McKeown 2019)",
        ("no stress", "stress"),
        _source_examples("dreaddit"),
        positive=1,
    ),
    "sms-spam": ClassificationTask(
        "sms-spam",
        "spam or ham text messages (Almeida & Hidalgo 2011)",
        ("ham", "spam"),
        _source_examples("sms-spam", ("ham", "spam")),
        positive=1,
    ),
    "privacy-qa": ClassificationTask(
        "privacy-qa",
        "is a privacy-policy clause relevant to a user's question (LegalBench; Ravichander "
        "et al. 2019)",
        ("irrelevant", "relevant"),
        _privacy_qa,
        positive=1,
    ),
}
"""The classification tasks ``groundwork finetune --task`` knows."""


def task_splits(
    task: ClassificationTask,
) -> dict[str, list[tuple[str, int]]]:
    """``train``/``val``/``test`` as ``(text, label)``: validation is the training examples whose
    salted id hash is below :data:`VAL_FRACTION`."""
    train = task.examples("train")
    test = task.examples("test")
    if not train or not test:
        raise DataError(f"task {task.name} needs training and test examples")
    val = {i for i, _, _ in train if hash_fraction(i, f"{task.name}-val") < VAL_FRACTION}
    for _, text, label in train + test:
        if not 0 <= label < len(task.labels):
            raise DataError(
                f"task {task.name}: label {label} is not one of 0..{len(task.labels) - 1}"
            )
        if not text.strip():
            raise DataError(f"task {task.name} has an empty text")
    return {
        "train": [(t, y) for i, t, y in train if i not in val],
        "val": [(t, y) for i, t, y in train if i in val],
        "test": [(t, y) for _, t, y in test],
    }


# ---------------------------------------------------------------------------------------------
# data


class LabelledTexts(LabelledSequences):
    """Token id sequences with a class each, in shuffled length-bucketed epochs, as the dict
    batches a task head reads: ``input_ids``, ``attention_mask`` ``(B, T)`` (right-padded) and
    ``labels`` ``(B,)``."""

    def _batch(self, idx: list[int], seqs: Sequence[Sequence[int]], labels: Sequence[Any]) -> Batch:
        input_ids, attention_mask = pad_with_mask([seqs[i] for i in idx], self.pad_id)  # (B, T)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([labels[i] for i in idx], dtype=torch.long),
        }


def encode_for(
    tokenizer: Any, family: str, texts: Sequence[str], max_tokens: int
) -> list[list[int]]:
    """Token ids of each text as the family reads them: BERT ``[CLS] text [SEP]``, decoders the
    text alone; cut to ``max_tokens``."""
    from groundwork.evaluate.embeddings import encode_for_encoder

    if family == "bert":
        return [encode_for_encoder(tokenizer, t, max_tokens) for t in texts]
    return [tokenizer.encode(t)[:max_tokens] or [0] for t in texts]


@torch.no_grad()
def predict(head: nn.Module, data: LabelledTexts, seqs: Sequence[Sequence[int]]) -> list[int]:
    """The head's class for every sequence, in order."""
    was_training = head.training
    head.eval()
    out = [0] * len(seqs)
    zeros = [0] * len(seqs)
    for batch_idx in range(0, len(seqs), data.val_batch_size):
        idx = list(range(batch_idx, min(batch_idx + data.val_batch_size, len(seqs))))
        batch = data._batch(idx, seqs, zeros)
        logits = head(batch["input_ids"], batch["attention_mask"])  # (B, C)
        for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
            out[i] = p
    head.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# the baseline


def bag_of_words_baseline(
    splits: dict[str, list[tuple[str, int]]], num_labels: int, *, min_count: int = 2, C: float = 1.0
) -> ClassificationReport:
    """Test report of a logistic regression on word counts (log(1 + count), vocabulary of the
    training words seen ``min_count`` times), trained on the training split."""
    from groundwork.adapt.probe import fit_probe
    from groundwork.tokenize.words import Vocabulary

    vocab = Vocabulary.build([t for t, _ in splits["train"]], min_count=min_count)

    def features(texts: Sequence[str]) -> torch.Tensor:
        x = torch.zeros(len(texts), len(vocab), dtype=torch.float64)  # (N, V) word counts
        for row, text in enumerate(texts):
            for i in vocab.ids(vocab.split(text)):
                x[row, i] += 1
        return torch.log1p(x)

    probe = fit_probe(
        features([t for t, _ in splits["train"]]),
        torch.tensor([y for _, y in splits["train"]]),
        C=C,
        max_iter=500,
    )
    test_x = features([t for t, _ in splits["test"]])
    predicted = probe.predict(test_x).tolist()
    return classification_report([y for _, y in splits["test"]], predicted, num_classes=num_labels)


# ---------------------------------------------------------------------------------------------
# fine-tuning


@dataclass
class ClassifierResult:
    """The test reports of the fine-tuned head and of the bag-of-words baseline."""

    run_dir: Path
    summary: str
    stopped: str
    model: ClassificationReport
    baseline: ClassificationReport
    task: ClassificationTask
    sizes: dict[str, int]


def load_backbone(name: str) -> tuple[nn.Module, Any, str]:
    """A named pretrained model or a run directory: ``(model, tokenizer, family)``."""
    from groundwork.models import registry
    from groundwork.recipes.generate import load_model

    model, tokenizer, _ = load_model(name, any_family=True)
    return model, tokenizer, registry.arch_of(model.config).name


def _score(report: ClassificationReport, task: ClassificationTask) -> float:
    return report.f1[task.positive] if task.positive is not None else report.macro_f1


def finetune_classifier(
    model: str,
    *,
    task: str | ClassificationTask,
    train_config: TrainConfig,
    out: Path,
    overwrite: bool = False,
    max_tokens: int = 128,
    pooling: str | None = None,
    task_files: dict[str, str] | None = None,
    method: str = "full",
    peft: dict[str, Any] | None = None,
) -> ClassifierResult:
    """Fine-tune ``model`` with a sequence-classification head on ``task`` (a name of
    :data:`CLASSIFICATION_TASKS`, or a task of one's own, e.g. from
    :func:`groundwork.recipes.task_files.task_from_files`, whose files ``task_files`` records in
    the run's config); write the run to ``out`` and score the test split beside the
    bag-of-words baseline. ``method`` (a name of :data:`groundwork.peft.methods.METHODS`) and
    ``peft`` (its options) fine-tune with a PEFT method instead of every weight; the head always
    trains. ``metrics.json`` records the trainable parameters, the peak resident memory of the
    training (``peak_rss_mb``; of loading the backbone: ``setup_peak_rss_mb``) and the seconds per
    training step (the training call's wall time less its evaluations)."""
    from groundwork.adapt import head_for
    from groundwork.adapt.runs import train_task_head
    from groundwork.train.objectives import ClassificationObjective

    if isinstance(task, str) and task not in CLASSIFICATION_TASKS:
        raise UnknownNameError(f"unknown task {task!r}: {did_you_mean(task, CLASSIFICATION_TASKS)}")
    if max_tokens < 2:
        raise ConfigError(f"max_tokens must be >= 2, got {max_tokens}")
    the_task = CLASSIFICATION_TASKS[task] if isinstance(task, str) else task
    task = the_task.name
    check_writable(out, overwrite=overwrite)
    if train_config.best_metric == "val_loss":  # the engine's default: choose by F1 instead
        train_config = dataclasses.replace(train_config, best_metric="val_f1", best_mode="max")
    backbone, tokenizer, family = load_backbone(model)
    peft_section = None
    if method != "full" or peft:
        backbone, peft_section = adapt_backbone(backbone, tokenizer, method, peft, the_task)
    head = head_for(backbone, "sequence", len(the_task.labels), pooling)  # type: ignore[arg-type]
    trainable, total = trainable_parameters(head)
    splits = task_splits(the_task)
    seqs = {
        s: encode_for(tokenizer, family, [t for t, _ in part], max_tokens)
        for s, part in splits.items()
    }
    labels = {s: [y for _, y in part] for s, part in splits.items()}
    pad = int(getattr(backbone.config, "pad_id", 0) or 0)
    data = LabelledTexts(
        seqs["train"],
        labels["train"],
        batch_size=train_config.batch_size,
        val_seqs=seqs["val"],
        val_labels=labels["val"],
        val_batch_size=64,
        pad_id=pad,
    )

    eval_seconds = [0.0]

    def evaluate(net: nn.Module) -> dict[str, float]:
        started = time.perf_counter()
        report = classification_report(
            labels["val"], predict(net, data, seqs["val"]), num_classes=len(the_task.labels)
        )
        eval_seconds[0] += time.perf_counter() - started
        return {"val_f1": _score(report, the_task), "val_accuracy": report.accuracy}

    head_section = {
        "kind": "sequence",
        "pooling": getattr(head, "pooling", pooling),
        "num_labels": len(the_task.labels),
        "labels": list(the_task.labels),
    }
    setup_peak = peak_rss_mb()  # loading (and quantising) the backbone
    reset_peak_rss()  # from here, the training's peak
    started = time.perf_counter()
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
        **({"task_files": task_files} if task_files else {}),
        **({"peft": peft_section} if peft_section else {}),
        max_tokens=max_tokens,
    )
    train_seconds = time.perf_counter() - started - eval_seconds[0]
    training_peak = peak_rss_mb()
    steps = max(result.state.step, 1)
    test_report = classification_report(
        labels["test"], predict(head, data, seqs["test"]), num_classes=len(the_task.labels)
    )
    baseline = bag_of_words_baseline(splits, len(the_task.labels))
    names = list(the_task.labels)
    write_json(
        out / METRICS_FILE,
        {
            "task": task,
            "backbone": model,
            "test": test_report.as_dict(names),
            "bag_of_words_baseline": baseline.as_dict(names),
            "training": result.summary(),
            "method": method,
            "peft": peft_section,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "peak_rss_mb": round(training_peak, 1),
            "setup_peak_rss_mb": round(setup_peak, 1),
            "seconds_per_step": round(train_seconds / steps, 3),
        },
    )
    sizes = {s: len(v) for s, v in seqs.items()}
    return ClassifierResult(
        out, result.summary(), result.stopped, test_report, baseline, the_task, sizes
    )


def adapt_backbone(
    backbone: nn.Module,
    tokenizer: Any,
    method: str,
    options: dict[str, Any] | None,
    task: ClassificationTask,
) -> tuple[nn.Module, dict[str, Any]]:
    """``backbone`` adapted with PEFT ``method`` and the run's ``peft`` section (the method and
    its full options). Prompt tuning starts from the task's description unless told otherwise
    (Lester et al. 2021 §3: an init from real words beats a random one)."""
    from groundwork.peft.methods import apply_method, method_options

    options = dict(options or {})
    if method == "prompt" and "init_text" not in options:
        options["init_text"] = task.description
    recorded = method_options(method, backbone, options)
    init_ids = None
    if recorded.get("init_text"):
        init_ids = tokenizer.encode(recorded["init_text"])
    adapted = apply_method(backbone, method, options, init_ids=init_ids)
    return adapted, {"method": method, "options": recorded}


def results_table(result: ClassifierResult, model: str) -> str:
    """Test accuracy, macro-F1 and (binary tasks) the positive class's F1, head vs baseline."""
    from groundwork.tables import markdown_table

    task = result.task
    columns = ["system", "accuracy", "macro-F1"]
    if task.positive is not None:
        columns.append(f"F1 ({task.labels[task.positive]})")
    rows = []
    for name, r in (
        ("bag-of-words logistic regression", result.baseline),
        (f"{model} fine-tuned", result.model),
    ):
        row = [name, f"{100 * r.accuracy:.1f}", f"{100 * r.macro_f1:.1f}"]
        if task.positive is not None:
            row.append(f"{100 * r.f1[task.positive]:.1f}")
        rows.append(row)
    return markdown_table(columns, rows)
