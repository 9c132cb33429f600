r"""Text classification on a labelled source: a Kim CNN or a BiLSTM, trained on CPU in a minute.

``groundwork classify`` runs :func:`classify`: it loads the labelled examples of ``sms-spam``
(Almeida & Hidalgo 2011, "Contributions to the study of SMS spam filtering"), builds a word
vocabulary from the training split only, trains a :class:`~groundwork.models.cnn.TextCNN` or a
:class:`~groundwork.models.rnn_classifier.BiLSTMClassifier` with the training engine (AdamW,
cross-entropy, an evaluation per epoch), keeps the epoch with the best validation F1 of the spam
class, and scores the test split. The output is a run directory of kind ``classifier``
(``config.yaml``, ``model.safetensors``, ``vocab.json``, ``metrics.json``, the engine's log).

Data. :func:`groundwork.corpus.load_examples` splits ``sms-spam`` by a hash of each message's id
(90% train, 10% test), but the collection holds many copies of the same message (spam campaigns
especially), so an id split puts copies of test messages in train. :func:`load_splits` therefore
removes duplicates first: messages with the same token sequence (after :func:`tokenize_words`)
are one message, kept where its first copy (lowest id) lies, so no test text is seen in training.
A further 10% of the training messages, chosen by a salted hash of the id, is held out as the
validation split for model selection; the test split is used once, at the end.

Words: :func:`tokenize_words` and a :class:`~groundwork.tokenize.words.Vocabulary` of the training
split (words seen fewer than ``min_count`` times become ``<unk>``).

Chapter 4 of the docs ("Recurrent and convolutional models") shows the results.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from groundwork.checks import positive_int, positive_number
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import CheckpointError, ConfigError, DataError, EmptyCorpusError
from groundwork.evaluate.classification import ClassificationReport, classification_report
from groundwork.fileio import atomic_write, write_json
from groundwork.models import registry
from groundwork.models.cnn import TextCNN
from groundwork.models.rnn_classifier import BiLSTMClassifier
from groundwork.runs import CONFIG_FILE, VOCAB_FILE, check_writable, load_run, write_run
from groundwork.runtime import eval_mode, torch_threads
from groundwork.tables import markdown_table
from groundwork.tokenize.words import Vocabulary, tokenize_words
from groundwork.train import ClassificationObjective, LabelledSequences, TrainConfig, train
from groundwork.train.data import batches, pad_batch

ModelName = Literal["cnn", "bilstm"]
MODELS: tuple[str, ...] = ("cnn", "bilstm")
LABELS: tuple[str, ...] = ("ham", "spam")
"""Class names by id; the positive class (scored by F1) is ``spam`` (id 1)."""
POSITIVE = 1

METRICS_FILE = "metrics.json"  # the scores: test and validation reports, per-epoch history
# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Splits:
    """Texts and label ids of the train, validation and test splits."""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    duplicates_removed: int = 0
    """Messages dropped because an earlier message had the same tokens."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per split and class, e.g. ``{"train": {"ham": 3000, "spam": 400}, ...}``."""
        return {
            name: {label: sum(y == i for _, y in part) for i, label in enumerate(LABELS)}
            for name, part in (("train", self.train), ("val", self.val), ("test", self.test))
        }


def split_examples(
    train: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    *,
    val_fraction: float = 0.1,
    dedup: bool = True,
) -> Splits:
    """Deduplicate, check labels and carve a validation split out of ``train``.

    Duplicates (same :func:`tokenize_words` tokens) are removed over train and test together,
    keeping the copy with the smallest id. Validation holds the training examples whose salted
    id hash is below ``val_fraction`` (at least one).

    Raises:
        EmptyCorpusError: No training or no test examples.
        DataError: A label is not ``ham``/``spam``, or fewer than 2 training examples remain.
        ConfigError: ``val_fraction`` not in (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not train or not test:
        raise EmptyCorpusError(
            f"need labelled examples in both splits, got {len(train)} train and {len(test)} test"
        )
    tagged = [(str(e["id"]), "train", e) for e in train] + [(str(e["id"]), "test", e) for e in test]
    seen: set[tuple[str, ...]] = set()
    kept: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
    removed = 0
    for ex_id, part, e in sorted(tagged, key=lambda x: x[0]):
        if e.get("label") not in LABELS:
            raise DataError(
                f"example {ex_id!r} has label {e.get('label')!r}; "
                f"the classifier expects one of {list(LABELS)}"
            )
        y = LABELS.index(e["label"])
        key = tuple(tokenize_words(e["text"]))
        if dedup and key in seen:
            removed += 1
            continue
        seen.add(key)
        kept[part].append((ex_id, e["text"], y))
    if len(kept["train"]) < 2 or not kept["test"]:
        raise DataError(
            f"after removing duplicates {len(kept['train'])} train and {len(kept['test'])} test "
            "examples are left; need at least 2 and 1"
        )
    u = [hash_fraction(i, salt="classify-val") for i, _, _ in kept["train"]]
    is_val = [x < val_fraction for x in u]
    if not any(is_val):
        is_val[min(range(len(u)), key=u.__getitem__)] = True
    if all(is_val):
        is_val[max(range(len(u)), key=u.__getitem__)] = False
    return Splits(
        train=[(t, y) for (_, t, y), v in zip(kept["train"], is_val, strict=True) if not v],
        val=[(t, y) for (_, t, y), v in zip(kept["train"], is_val, strict=True) if v],
        test=[(t, y) for _, t, y in kept["test"]],
        duplicates_removed=removed,
    )


def load_splits(source: str = "sms-spam", *, val_fraction: float = 0.1) -> Splits:
    """The deduplicated train/validation/test splits of a labelled source (see the module doc)."""
    from groundwork.corpus import load_examples

    return split_examples(
        load_examples(source, split="train"),
        load_examples(source, split="test"),
        val_fraction=val_fraction,
    )


# ---------------------------------------------------------------------------------------------
# models, prediction

Classifier = TextCNN | BiLSTMClassifier


def build_classifier(model: str, vocab_size: int, **overrides: Any) -> Classifier:
    """A fresh ``TextCNN`` (``"cnn"``) or ``BiLSTMClassifier`` (``"bilstm"``) for two classes.

    Raises:
        ConfigError: Unknown model name or a bad config field.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    arch = registry.get(model)  # the registered classifier families: cnn, bilstm
    unknown = sorted(set(overrides) - arch.field_names())
    if unknown:
        name, known = arch.config_cls.__name__, sorted(arch.field_names())
        raise ConfigError(f"{name} has no field(s) {unknown}; fields: {known}")
    config = arch.config_cls(vocab_size=vocab_size, num_classes=len(LABELS), **overrides)
    return registry.build_model(config)


@torch.no_grad()
def logits_of(
    net: Classifier, encoded: Sequence[list[int]], *, batch_size: int = 256
) -> torch.Tensor:
    """Logits ``(N, num_classes)`` of encoded texts, in input order (eval mode)."""
    out = torch.empty(len(encoded), net.config.num_classes)
    with eval_mode(net):
        for idx in batches(encoded, batch_size):
            ids, lengths = pad_batch([encoded[i] for i in idx])  # (B, L), (B,)
            out[idx] = net(ids, lengths)
    return out


def evaluate(
    net: Classifier, encoded: Sequence[list[int]], labels: Sequence[int]
) -> tuple[ClassificationReport, float]:
    """Metrics and mean cross-entropy of ``net`` on encoded texts with their label ids."""
    logits = logits_of(net, encoded)
    target = torch.tensor(list(labels), dtype=torch.long)
    loss = float(F.cross_entropy(logits, target))
    report = classification_report(target, logits.argmax(dim=-1), num_classes=len(LABELS))
    return report, loss


# ---------------------------------------------------------------------------------------------
# training


@dataclass(kw_only=True)
class ClassifyConfig:
    """Training options of :func:`train_classifier`."""

    model: ModelName = "cnn"
    """``"cnn"`` (Kim 2014) or ``"bilstm"``."""
    epochs: int = 15
    """Passes over the training split (at most; see ``patience``)."""
    batch_size: int = 64
    """Examples per optimizer step."""
    lr: float = 1e-3
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not on embeddings and biases)."""
    patience: int = 3
    """Stop when validation spam F1 has not improved for this many epochs."""
    min_count: int = 2
    """Words seen fewer times in training become ``<unk>``."""
    max_len: int = 100
    """Longest encoded message in words (longer ones are cut)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the model config to change, e.g. ``{"n_filters": 50}``."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {list(MODELS)}")
        for name in ("epochs", "batch_size", "patience", "min_count", "max_len"):
            positive_int(name, getattr(self, name))
        positive_number("lr", self.lr)
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")

    def engine_config(self, steps_per_epoch: int, *, progress: bool = False) -> TrainConfig:
        """The engine's settings: AdamW (0.9, 0.999) at a constant rate, an evaluation per epoch,
        the best by validation spam F1 (ties: lower loss), patience in epochs, best restored."""
        return TrainConfig(
            max_steps=self.epochs * steps_per_epoch,
            batch_size=self.batch_size,
            lr=self.lr,
            min_lr=self.lr,
            warmup_steps=0,
            schedule="constant",
            weight_decay=self.weight_decay,
            beta2=0.999,  # beta1: 0.9
            grad_clip=self.grad_clip,
            device="cpu",
            seed=self.seed,
            eval_every=steps_per_epoch,
            best_metric="val_f1",
            best_mode="max",
            patience=self.patience,
            restore_best=True,
            progress=progress,
            tensorboard=False,
        )


@dataclass
class ClassifyResult:
    """What :func:`train_classifier` returns."""

    net: Classifier
    vocab: Vocabulary
    config: ClassifyConfig
    test: ClassificationReport
    val: ClassificationReport
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float

    def metrics(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``metrics.json`` holds)."""
        return {
            "model": self.config.model,
            "parameters": self.net.num_parameters(),
            "vocab_size": len(self.vocab),
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.train_seconds, 2),
            "test": self.test.as_dict(LABELS),
            "val": self.val.as_dict(LABELS),
            "history": self.history,
        }


# --8<-- [start:train]
def train_classifier(
    splits: Splits,
    config: ClassifyConfig,
    out: Path | None = None,
    *,
    progress: bool = False,
    overwrite: bool = False,
) -> ClassifyResult:
    """Train on ``splits.train``, select the epoch by validation spam F1, score ``splits.test``;
    with ``out``, write the run directory there (without, the engine's files are temporary).

    Each epoch takes AdamW steps on cross-entropy over length-bucketed shuffled batches, then
    scores the validation split; the weights of the best epoch (highest spam F1, then lowest
    validation loss) are restored at the end. The loop is the training engine's.
    """
    c = config
    torch.manual_seed(c.seed)
    vocab = Vocabulary.build([t for t, _ in splits.train], min_count=c.min_count)

    def encode(part: list[tuple[str, int]]) -> tuple[list[list[int]], list[int]]:
        return [vocab.encode(t, c.max_len) for t, _ in part], [y for _, y in part]

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(
        encode, (splits.train, splits.val, splits.test)
    )
    net = build_classifier(c.model, len(vocab), **c.model_overrides)
    data = LabelledSequences(x_train, y_train, batch_size=c.batch_size)  # batches(..., generator)
    epoch = data.steps_per_epoch

    def validate(_: Any) -> dict[str, float]:
        report, loss = evaluate(net, x_val, y_val)
        return {"val_loss": loss, "val_f1": report.f1[POSITIVE]}

    if out is not None:
        check_writable(Path(out), overwrite=overwrite, resume_hint=False)
    engine = c.engine_config(epoch, progress=progress)
    run = train(net, data, ClassificationObjective(), engine, out, evaluate=validate)
    keys = ("train_loss", "val_loss", "val_f1")
    history = [{"epoch": e["step"] // epoch, **{k: e[k] for k in keys}} for e in run.evals]
    best_epoch = (run.state.best_step or 0) // epoch
    val_report, _ = evaluate(net, x_val, y_val)
    test_report, _ = evaluate(net, x_test, y_test)
    result = ClassifyResult(
        net, vocab, c, test_report, val_report, best_epoch, history, run.state.elapsed_seconds
    )
    if out is not None:
        save_classifier(result, out)
    return result


# --8<-- [end:train]


def save_classifier(result: ClassifyResult, out: Path) -> Path:
    """Write a classifier run into ``out``: ``config.yaml`` (kind ``classifier``: model config,
    labels, training options), ``model.safetensors``, ``vocab.json`` and ``metrics.json``."""
    out = write_run(
        result.net, Path(out), kind="classifier", labels=list(LABELS), train=result.config
    )
    write_json(out / VOCAB_FILE, result.vocab.to_json())
    write_json(out / METRICS_FILE, result.metrics())
    return out


def load_classifier(out: Path) -> tuple[Classifier, Vocabulary, int]:
    """Rebuild a saved classifier: ``(model in eval mode, vocabulary, max_len)``.

    Raises:
        CheckpointError: A file is missing or corrupt, the weights do not fit the config, or the
            run is not a text classifier.
    """
    out = Path(out)
    if not out.exists():
        raise CheckpointError(f"{out} does not exist")
    net, vocab, config = load_run(out, device="cpu")
    if not isinstance(net, TextCNN | BiLSTMClassifier):
        kind = config.get("kind", "lm")
        raise CheckpointError(f"{out} holds a {kind!r} run, not a text classifier")
    try:
        max_len = int(config["train"]["max_len"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{out / CONFIG_FILE} is incomplete: {err!r}") from err
    return net, vocab, max_len


def classify_texts(out: Path, texts: Sequence[str]) -> list[str]:
    """Labels (``"ham"``/``"spam"``) that the classifier in ``out`` gives ``texts`` (an empty
    text is one unknown word)."""
    net, vocab, max_len = load_classifier(out)
    logits = logits_of(net, [vocab.encode(t, max_len) for t in texts])
    return [LABELS[i] for i in logits.argmax(dim=-1).tolist()]


# ---------------------------------------------------------------------------------------------
# baseline, table, command


def majority_baseline(splits: Splits) -> ClassificationReport:
    """Scores of always predicting the most frequent training class (ham): the floor to beat."""
    counts = Counter(y for _, y in splits.train)
    majority = max(sorted(counts), key=counts.__getitem__)
    y_test = [y for _, y in splits.test]
    return classification_report(y_test, [majority] * len(y_test), num_classes=len(LABELS))


Row = tuple[str, int | None, ClassificationReport, float | None]


def results_table(rows: Sequence[Row]) -> str:
    """A Markdown table: one row per ``(name, parameters, test report, train seconds)``."""
    cells = []
    for name, params, r, seconds in rows:
        scores = (r.accuracy, r.precision[POSITIVE], r.recall[POSITIVE], r.f1[POSITIVE], r.macro_f1)
        p = "–" if params is None else f"{params:,}"
        s = "–" if seconds is None else f"{seconds:.0f}"
        cells.append([name, p, *(f"{v:.4f}" for v in scores), s])
    scores_header = ["accuracy", "spam precision", "spam recall", "spam F1", "macro F1"]
    header = ["model", "parameters", *scores_header, "train time (s)"]
    return markdown_table(header, cells, align="lrrrrrrr")


def _caption(source: str, splits: Splits, config: ClassifyConfig) -> str:
    n = splits.counts()
    return (
        f"\n`{source}` test split: {len(splits.test)} messages ({n['test']['spam']} spam), "
        f"after removing {splits.duplicates_removed} duplicate messages; trained on "
        f"{len(splits.train)} ({n['train']['spam']} spam), model selection on {len(splits.val)}. "
        f"{config.epochs} epochs at most (patience {config.patience}), batch {config.batch_size}, "
        f"AdamW lr {config.lr:g}, seed {config.seed}; "
        "training times with one PyTorch thread on a 2-core CPU shared with other jobs.\n"
    )


def _print_report(name: str, r: ClassificationReport) -> None:
    print(
        f"{name}: accuracy {r.accuracy:.4f}, spam precision {r.precision[POSITIVE]:.4f}, "
        f"recall {r.recall[POSITIVE]:.4f}, F1 {r.f1[POSITIVE]:.4f}"
    )


# --8<-- [start:classify]
def classify(
    model: ModelName = "cnn",
    source: str = "sms-spam",
    out: Path = Path("runs/classify"),
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    markdown: Path | None = None,
    compare: bool = False,
    threads: int = 1,
    overwrite: bool = False,
) -> None:
    """Train a text classifier (Kim CNN or BiLSTM) on SMS spam and report test F1 for spam.

    Writes a run directory (config.yaml, model.safetensors, vocab.json, metrics.json, the
    training log). With --compare, trains both models and scores the majority-class baseline
    into one table.

    Args:
        model: cnn (Kim 2014 convolutional network) or bilstm (bidirectional LSTM).
        source: Labelled source with ham/spam labels.
        out: Output directory (with --compare: one subdirectory per model).
        epochs: Training epochs at most (early stopping on validation spam F1).
        batch_size: Messages per optimizer step.
        lr: AdamW learning rate.
        seed: Random seed (initialisation and batch order).
        markdown: Also write the results as a Markdown table to this file.
        compare: Train both models and add a majority-class baseline row.
        threads: CPU threads for PyTorch (0: PyTorch's default). These models are small: one
            thread is usually faster than several.
        overwrite: Replace an existing run in --out.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    names: list[ModelName] = ["cnn", "bilstm"] if compare else [model]
    runs = {name: Path(out) / name if compare else Path(out) for name in names}
    with torch_threads(threads):
        for run in runs.values():  # before any training: refuse to replace a run
            check_writable(run, overwrite=overwrite, resume_hint=False)
        splits = load_splits(source)
        n = splits.counts()
        print(
            f"{source}: {len(splits.train)} train, {len(splits.val)} validation, "
            f"{len(splits.test)} test messages ({n['test']['spam']} spam in test); "
            f"{splits.duplicates_removed} duplicates removed"
        )
        rows: list[Row] = []
        if compare:
            baseline = majority_baseline(splits)
            _print_report("majority class (ham)", baseline)
            rows.append(("majority class (always ham)", None, baseline, None))
        for name, run in runs.items():
            config = ClassifyConfig(
                model=name, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed
            )
            result = train_classifier(splits, config, run, overwrite=overwrite)
            seconds = result.train_seconds
            _print_report(f"{name} (best epoch {result.best_epoch}, {seconds:.0f} s)", result.test)
            print(f"saved to {run}")
            label = {"cnn": "TextCNN (Kim 2014)", "bilstm": "BiLSTM"}[name]
            rows.append((label, result.net.num_parameters(), result.test, seconds))
    if markdown is not None:
        text = results_table(rows) + _caption(source, splits, config)
        atomic_write(Path(markdown), text.encode("utf-8"))
        print(f"table written to {markdown}")


# --8<-- [end:classify]
