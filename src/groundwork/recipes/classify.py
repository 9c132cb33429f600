r"""Text classification on a labelled source: a Kim CNN or a BiLSTM, trained on CPU in a minute.

``groundwork classify`` runs :func:`classify`: it loads the labelled examples of ``sms-spam``
(Almeida & Hidalgo 2011, "Contributions to the study of SMS spam filtering"), builds a word
vocabulary from the training split only, trains :class:`~groundwork.models.cnn.TextCNN` or
:class:`~groundwork.models.rnn_classifier.BiLSTMClassifier` with AdamW and cross-entropy, keeps
the epoch with the best validation F1 of the spam class, and scores the test split. The output
directory receives ``model.safetensors``, ``vocab.json``, ``config.json`` and ``metrics.json``.

Data. :func:`groundwork.corpus.load_examples` splits ``sms-spam`` by a hash of each message's id
(90% train, 10% test), but the collection holds many copies of the same message (spam campaigns
especially), so an id split puts copies of test messages in train. :func:`load_splits` therefore
removes duplicates first: messages with the same token sequence (after :func:`tokenize_words`)
are one message, kept where its first copy (lowest id) lies, so no test text is seen in training.
A further 10% of the training messages, chosen by a salted hash of the id, is held out as the
validation split for model selection; the test split is used once, at the end.

Tokenizer. :func:`tokenize_words` lowercases and splits with the regex :data:`TOKEN_PATTERN`:
runs of letters and digits (with an optional apostrophe suffix, ``don't``, ``i'm``) and single
punctuation or symbol characters (``!``, ``£``, ``&``). Words seen fewer than ``min_count`` times
in the training split map to ``<unk>`` (id 1); ``<pad>`` is id 0. A message with no tokens at all
(empty, or only spaces) is encoded as a single ``<unk>``, so every sequence has length >= 1.

Chapter 4 of the docs ("Recurrent and convolutional models") shows the results.
"""

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import CheckpointError, ConfigError, DataError, EmptyCorpusError
from groundwork.evaluate.classification import ClassificationReport, classification_report
from groundwork.fileio import read_json, write_json
from groundwork.models.cnn import TextCNN, TextCNNConfig
from groundwork.models.rnn_classifier import BiLSTMClassifier, BiLSTMClassifierConfig
from groundwork.runtime import torch_threads
from groundwork.tokenize.words import Vocabulary, tokenize_words
from groundwork.train.checkpoint import load_model_weights, save_model
from groundwork.train.optim import build_adamw

ModelName = Literal["cnn", "bilstm"]
MODELS: tuple[str, ...] = ("cnn", "bilstm")
LABELS: tuple[str, ...] = ("ham", "spam")
"""Class names by id; the positive class (scored by F1) is ``spam`` (id 1)."""
POSITIVE = 1
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


def label_id(example: dict[str, Any]) -> int:
    """The class id of an example's label (``ham`` -> 0, ``spam`` -> 1).

    Raises:
        DataError: The label is not one of :data:`LABELS`.
    """
    label = example.get("label")
    if label not in LABELS:
        raise DataError(
            f"example {example.get('id', '?')!r} has label {label!r}; "
            f"the classifier expects one of {list(LABELS)}"
        )
    return LABELS.index(label)


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
        y = label_id(e)
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


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``ids (B, T)`` and ``lengths (B,)``.

    >>> pad_batch([[5, 6, 7], [8]])
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([3, 1]))
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths


def batches(
    encoded: Sequence[list[int]],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[list[int]]:
    """Index batches of similar lengths (less padding): without a generator, in length order;
    with one, shuffled, then sorted by length within pools of 50 batches, in shuffled order."""
    n = len(encoded)
    if generator is None:
        order = sorted(range(n), key=lambda i: len(encoded[i]))
        yield from (order[i : i + batch_size] for i in range(0, n, batch_size))
        return
    perm = torch.randperm(n, generator=generator).tolist()
    pool = 50 * batch_size
    chunks: list[list[int]] = []
    for start in range(0, n, pool):
        part = sorted(perm[start : start + pool], key=lambda i: len(encoded[i]))
        chunks += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    for j in torch.randperm(len(chunks), generator=generator).tolist():
        yield chunks[j]


# ---------------------------------------------------------------------------------------------
# models, training, prediction

Classifier = TextCNN | BiLSTMClassifier


def build_classifier(model: str, vocab_size: int, **overrides: Any) -> Classifier:
    """A fresh ``TextCNN`` (``"cnn"``) or ``BiLSTMClassifier`` (``"bilstm"``) for two classes.

    Raises:
        ConfigError: Unknown model name or a bad config field.
    """
    configs: dict[str, type[TextCNNConfig] | type[BiLSTMClassifierConfig]] = {
        "cnn": TextCNNConfig,
        "bilstm": BiLSTMClassifierConfig,
    }
    if model in configs:
        cls = configs[model]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(known)}")
        config = cls(vocab_size=vocab_size, num_classes=len(LABELS), **overrides)
        if isinstance(config, TextCNNConfig):
            return TextCNN(config)
        return BiLSTMClassifier(config)
    raise ConfigError(f"unknown model {model!r}; choose one of {list(MODELS)}")


@torch.no_grad()
def logits_of(
    net: Classifier, encoded: Sequence[list[int]], *, batch_size: int = 256
) -> torch.Tensor:
    """Logits ``(N, num_classes)`` of encoded texts, in input order (eval mode)."""
    was_training = net.training
    net.eval()
    out = torch.empty(len(encoded), net.config.num_classes)
    for idx in batches(encoded, batch_size):
        ids, lengths = pad_batch([encoded[i] for i in idx])
        out[idx] = net(ids, lengths)
    net.train(was_training)
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
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")


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
    splits: Splits, config: ClassifyConfig, *, progress: bool = False
) -> ClassifyResult:
    """Train on ``splits.train``, select the epoch by validation spam F1, score ``splits.test``.

    Each epoch takes AdamW steps on cross-entropy over length-bucketed shuffled batches, then
    scores the validation split; the weights of the best epoch (highest spam F1, then lowest
    validation loss) are restored at the end.
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
    optimizer = build_adamw(net, lr=c.lr, weight_decay=c.weight_decay, betas=(0.9, 0.999))
    generator = torch.Generator().manual_seed(c.seed)
    best: tuple[float, float] = (-1.0, math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, history, start = 0, [], time.perf_counter()
    for epoch in range(1, c.epochs + 1):
        net.train()
        total, seen = 0.0, 0
        for idx in batches(x_train, c.batch_size, generator=generator):
            ids, lengths = pad_batch([x_train[i] for i in idx])  # (B, T), (B,)
            target = torch.tensor([y_train[i] for i in idx])  # (B,)
            loss = F.cross_entropy(net(ids, lengths), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), c.grad_clip)
            optimizer.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        report, val_loss = evaluate(net, x_val, y_val)
        f1 = report.f1[POSITIVE]
        history.append(
            {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_f1": f1}
        )
        if progress:
            print(
                f"epoch {epoch}: train loss {total / seen:.4f}, val loss {val_loss:.4f}, "
                f"val spam F1 {f1:.4f}"
            )
        if (f1, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (f1, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= c.patience:
            break
    seconds = time.perf_counter() - start
    net.load_state_dict(best_state)
    val_report, _ = evaluate(net, x_val, y_val)
    test_report, _ = evaluate(net, x_test, y_test)
    return ClassifyResult(net, vocab, c, test_report, val_report, best_epoch, history, seconds)


# --8<-- [end:train]


# ---------------------------------------------------------------------------------------------
# the output directory

MODEL_FILE, VOCAB_FILE, CONFIG_FILE, METRICS_FILE = (
    "model.safetensors",
    "vocab.json",
    "config.json",
    "metrics.json",
)


def save_classifier(result: ClassifyResult, out: Path) -> Path:
    """Write ``model.safetensors``, ``vocab.json``, ``config.json``, ``metrics.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.net, out / MODEL_FILE)
    write_json(out / VOCAB_FILE, result.vocab.to_json())
    train_config = asdict(result.config)
    write_json(
        out / CONFIG_FILE,
        {
            "model": result.config.model,
            "labels": list(LABELS),
            "model_config": asdict(result.net.config),
            "train": train_config,
        },
    )
    write_json(out / METRICS_FILE, result.metrics())
    return out


def load_classifier(out: Path) -> tuple[Classifier, Vocabulary, int]:
    """Rebuild a saved classifier: ``(model in eval mode, vocabulary, max_len)``.

    Raises:
        CheckpointError: A file is missing or corrupt, or the weights do not fit the config.
    """
    out = Path(out)
    config = read_json(out / CONFIG_FILE)
    vocab = Vocabulary.from_json(read_json(out / VOCAB_FILE))
    try:
        model_fields = dict(config["model_config"])
        model_fields["vocab_size"] = int(model_fields["vocab_size"])
        name = config["model"]
        max_len = int(config["train"]["max_len"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{out / CONFIG_FILE} is incomplete: {err!r}") from err
    if model_fields["vocab_size"] != len(vocab):
        raise CheckpointError(
            f"{out}: the model expects {model_fields['vocab_size']} words but vocab.json has "
            f"{len(vocab)}; the files come from different runs"
        )
    model_fields.pop("num_classes", None)
    if name == "cnn":
        model_fields["kernel_sizes"] = tuple(model_fields["kernel_sizes"])
    net = build_classifier(name, **model_fields)
    load_model_weights(net, out / MODEL_FILE)
    return net.eval(), vocab, max_len


def classify_texts(out: Path, texts: Sequence[str]) -> list[str]:
    """Labels (``"ham"``/``"spam"``) that the classifier saved in ``out`` gives ``texts``.

    An empty text is classified as a single unknown word.
    """
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


def markdown_table(
    rows: Sequence[tuple[str, int | None, ClassificationReport, float | None]],
) -> str:
    """A Markdown table: one row per ``(name, parameters, test report, train seconds)``."""
    lines = [
        "| model | parameters | accuracy | spam precision | spam recall | spam F1 | macro F1 "
        "| train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, params, r, seconds in rows:
        p = "–" if params is None else f"{params:,}"
        s = "–" if seconds is None else f"{seconds:.0f}"
        lines.append(
            f"| {name} | {p} | {r.accuracy:.4f} | {r.precision[POSITIVE]:.4f} "
            f"| {r.recall[POSITIVE]:.4f} | {r.f1[POSITIVE]:.4f} | {r.macro_f1:.4f} | {s} |"
        )
    return "\n".join(lines) + "\n"


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
) -> None:
    """Train a text classifier (Kim CNN or BiLSTM) on SMS spam and report test F1 for spam.

    Writes model.safetensors, vocab.json, config.json and metrics.json to the output directory.
    With --compare, trains both models and scores the majority-class baseline into one table.

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
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {list(MODELS)}")
    with torch_threads(threads):
        _classify(model, source, out, epochs, batch_size, lr, seed, markdown, compare)


def _classify(
    model: ModelName,
    source: str,
    out: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    markdown: Path | None,
    compare: bool,
) -> None:
    splits = load_splits(source)
    n = splits.counts()
    print(
        f"{source}: {len(splits.train)} train, {len(splits.val)} validation, {len(splits.test)} "
        f"test messages ({n['test']['spam']} spam in test); "
        f"{splits.duplicates_removed} duplicates removed"
    )
    names: list[ModelName] = ["cnn", "bilstm"] if compare else [model]
    rows: list[tuple[str, int | None, ClassificationReport, float | None]] = []
    if compare:
        baseline = majority_baseline(splits)
        _print_report("majority class (ham)", baseline)
        rows.append(("majority class (always ham)", None, baseline, None))
    for name in names:
        config = ClassifyConfig(
            model=name,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
        )
        result = train_classifier(splits, config)
        run = save_classifier(result, Path(out) / name if compare else Path(out))
        _print_report(
            f"{name} (best epoch {result.best_epoch}, {result.train_seconds:.0f} s)", result.test
        )
        print(f"saved to {run}")
        label = {"cnn": "TextCNN (Kim 2014)", "bilstm": "BiLSTM"}[name]
        rows.append((label, result.net.num_parameters(), result.test, result.train_seconds))
    if markdown is not None:
        from groundwork.fileio import atomic_write

        text = markdown_table(rows) + _caption(source, splits, config)
        atomic_write(Path(markdown), text.encode("utf-8"))
        print(f"table written to {markdown}")


# --8<-- [end:classify]
