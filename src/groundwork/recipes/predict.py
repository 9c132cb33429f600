r"""Using a fine-tuned task head: ``groundwork predict RUN TEXT...`` (chapter 12).

A ``task-head`` run (written by ``groundwork finetune MODEL --task dreaddit|sms-spam|conll-ner``,
read back by :func:`groundwork.runs.load_run`) holds a head over its backbone, the backbone's
tokenizer and, in ``config.yaml``, the head's ``kind`` and class ``labels``. The texts are read
exactly as the head was trained on them, by the same code:

* a **sequence** head (one label per text): each text's ids from
  :func:`~groundwork.recipes.finetune_classify.encode_for` (a BERT reads ``[CLS] text [SEP]``),
  cut to the run's ``max_tokens``; the class probabilities are the softmax of the logits,
  :math:`p_c = e^{z_c} / \sum_k e^{z_k}`, and the predicted label their argmax;
* a **token** head (one label per word): the text is split into words on whitespace, each word
  into sub-tokens by :func:`~groundwork.recipes.finetune_label.word_pieces`, and a word's tag is
  the argmax at its **first** sub-token (Devlin et al. 2019, §5.3), where it was trained.

Texts go through the head ``batch_size`` at a time, right-padded with an attention mask, so a
text's prediction does not depend on its neighbours in the batch.
"""

import json as _json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError, DataError, InputEncodingError
from groundwork.runs import CONFIG_FILE, is_run, load_run, read_config

__all__ = [
    "LabelPrediction",
    "TagPrediction",
    "TaskHeadRun",
    "label_texts",
    "load_task_head_run",
    "predict",
    "predict_texts",
    "read_texts",
    "tag_texts",
]

TASK_HEAD_KIND = "task-head"
DEFAULT_MAX_TOKENS = 128
"""The ``max_tokens`` of a run whose config does not record one (``groundwork finetune``'s
default)."""


@dataclass(frozen=True)
class TaskHeadRun:
    """A loaded ``task-head`` run: what predicting needs."""

    head: nn.Module
    """The head over its backbone, in eval mode."""
    tokenizer: Any
    """The backbone's tokenizer."""
    family: str
    """The backbone's architecture (``bert``, ``gpt``, ``llama``): how texts become ids."""
    kind: Literal["sequence", "token"]
    """One label per text, or one per word."""
    labels: tuple[str, ...]
    """The class names, in the order of the head's outputs."""
    max_tokens: int
    """The longest input the head was trained on, in tokens."""
    pad_id: int
    """The id that pads a batch (masked out)."""


@dataclass(frozen=True)
class LabelPrediction:
    """A sequence head's verdict on one text."""

    text: str
    label: str
    """The most probable class."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Every class's probability (softmax of the logits), in the head's order."""

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "probabilities": self.probabilities}


@dataclass(frozen=True)
class TagPrediction:
    """A token head's tags for one text, one per whitespace-separated word."""

    text: str
    words: tuple[str, ...]
    tags: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "words": list(self.words), "tags": list(self.tags)}

    def pairs(self) -> str:
        """``word/TAG`` for every word, space-separated (``EU/B-ORG rejects/O``)."""
        return " ".join(f"{w}/{t}" for w, t in zip(self.words, self.tags, strict=True))


def load_task_head_run(run: Path | str, *, device: str = "auto") -> TaskHeadRun:
    """Load a ``task-head`` run for prediction.

    Raises:
        CheckpointError: ``run`` is not a run directory, is a run of another kind, or its
            ``head`` section does not fit its weights.
    """
    from groundwork.models import registry

    run_dir = Path(run)
    hint = (
        "give a run written by `groundwork finetune MODEL --task dreaddit|sms-spam|conll-ner` "
        "(its config.yaml says kind: task-head)"
    )
    if not is_run(run_dir):
        raise CheckpointError(f"{run_dir} is not a run directory (no {CONFIG_FILE}): {hint}")
    kind = str(read_config(run_dir).get("kind", "lm"))
    if kind != TASK_HEAD_KIND:
        raise CheckpointError(
            f"{run_dir} is a {kind!r} run, not a task-head run: `groundwork predict` needs a "
            f"fine-tuned head; {hint}"
        )
    head, tokenizer, config = load_run(run_dir, device=device)
    head_config = config.get("head") or {}
    head_kind = head_config.get("kind")
    labels = tuple(str(label) for label in head_config.get("labels") or ())
    if head_kind not in ("sequence", "token"):
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: head kind {head_kind!r} is neither 'sequence' nor 'token'"
        )
    if len(labels) != getattr(head, "num_labels", None):
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: the head has {getattr(head, 'num_labels', '?')} outputs "
            f"but {len(labels)} labels are named; the files come from different runs"
        )
    backbone = head.backbone
    return TaskHeadRun(
        head=head,
        tokenizer=tokenizer,
        family=registry.arch_of(backbone.config).name,
        kind=head_kind,
        labels=labels,
        max_tokens=int(config.get("max_tokens") or DEFAULT_MAX_TOKENS),
        pad_id=int(getattr(backbone.config, "pad_id", 0) or 0),
    )


def _check_texts(texts: Sequence[str]) -> None:
    if not texts:
        raise ConfigError("no texts to predict: give one or more TEXTs, or --file PATH")
    for k, text in enumerate(texts, start=1):
        if not text.strip():
            raise DataError(f"text {k} is empty: every text needs at least one word")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")


@torch.no_grad()
def _logits(run: TaskHeadRun, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """The head's logits for one batch: ``(B, C)`` (sequence) or ``(B, T, C)`` (token)."""
    from groundwork.train.data import pad_with_mask

    device = next(run.head.parameters()).device
    input_ids, attention_mask = pad_with_mask(seqs, run.pad_id)  # (B, T), (B, T)
    return run.head(input_ids.to(device), attention_mask.to(device)).float().cpu()


def label_texts(
    run: TaskHeadRun, texts: Sequence[str], *, batch_size: int = 32
) -> list[LabelPrediction]:
    """A sequence head's label and class probabilities for every text, in order.

    Raises:
        ConfigError: No texts, a token head, or ``batch_size`` < 1.
        DataError: An empty text.
    """
    from groundwork.recipes.finetune_classify import encode_for

    if run.kind != "sequence":
        raise ConfigError("label_texts needs a sequence head; this run's head labels tokens")
    _check_texts(texts)
    _check_batch_size(batch_size)
    seqs = encode_for(run.tokenizer, run.family, texts, run.max_tokens)
    out: list[LabelPrediction] = []
    for start in range(0, len(seqs), batch_size):
        probs = torch.softmax(_logits(run, seqs[start : start + batch_size]), dim=-1)  # (B, C)
        for text, row in zip(texts[start : start + batch_size], probs.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)  # the argmax (first on ties)
            out.append(
                LabelPrediction(text, run.labels[best], dict(zip(run.labels, row, strict=True)))
            )
    return out


def tag_texts(
    run: TaskHeadRun, texts: Sequence[str], *, batch_size: int = 32
) -> list[TagPrediction]:
    """A token head's tag of every whitespace-separated word of every text, read at the word's
    first sub-token.

    Raises:
        ConfigError: No texts, a sequence head, ``batch_size`` < 1, or a text longer than the
            run's ``max_tokens`` sub-tokens.
        DataError: An empty text.
    """
    from groundwork.recipes.finetune_label import word_pieces

    if run.kind != "token":
        raise ConfigError("tag_texts needs a token head; this run's head labels whole texts")
    _check_texts(texts)
    _check_batch_size(batch_size)
    words = [text.split() for text in texts]
    encoded = [word_pieces(run.tokenizer, w, run.family) for w in words]
    for k, (ids, _) in enumerate(encoded, start=1):
        if len(ids) > run.max_tokens:
            raise ConfigError(
                f"text {k} is {len(ids)} sub-tokens long, more than the {run.max_tokens} the "
                "head was trained on (max_tokens): split it into shorter texts"
            )
    out: list[TagPrediction] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        best = _logits(run, [ids for ids, _ in batch]).argmax(dim=-1)  # (B, T)
        for row, (_, first) in enumerate(batch):
            k = start + row
            tags = tuple(run.labels[int(best[row, i])] for i in first)
            out.append(TagPrediction(texts[k], tuple(words[k]), tags))
    return out


def predict_texts(
    run: Path | str | TaskHeadRun,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    device: str = "auto",
) -> list[LabelPrediction] | list[TagPrediction]:
    """What a task-head run predicts for ``texts``: a label per text (sequence head, see
    :func:`label_texts`) or a tag per word (token head, :func:`tag_texts`).

    Raises:
        CheckpointError: ``run`` is not a task-head run.
        ConfigError: No texts, or ``batch_size`` < 1.
        DataError: An empty text.
    """
    _check_texts(texts)  # before the (slow) load
    loaded = run if isinstance(run, TaskHeadRun) else load_task_head_run(run, device=device)
    if loaded.kind == "sequence":
        return label_texts(loaded, texts, batch_size=batch_size)
    return tag_texts(loaded, texts, batch_size=batch_size)


def read_texts(path: Path) -> list[str]:
    """The texts of a file, one per line (a final newline is not an empty text).

    Raises:
        DataError: The file is missing or a line is empty (the message names the line).
        InputEncodingError: The file is not UTF-8.
    """
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(
            f"{path} does not exist: --file takes a text file, one text per line"
        ) from err
    except IsADirectoryError as err:
        raise DataError(f"{path} is a directory: --file takes a text file, one per line") from err
    except UnicodeDecodeError as err:
        raise InputEncodingError(f"{path} is not valid UTF-8 ({err.reason})") from err
    lines = content.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(
                f"{path} line {number} is empty: --file takes one text per line, no blank lines"
            )
    if not lines:
        raise DataError(f"{path} is empty: --file takes one text per line")
    return lines


def _cell(text: str, width: int = 40) -> str:
    """A one-line table cell (``|`` escaped, long texts cut with an ellipsis)."""
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= width else line[: width - 1] + "…"


def predict(
    run: str | None = None,
    *,
    texts: list[str],
    file: Path | None = None,
    json: bool = False,
    batch_size: int = 32,
    device: str = "auto",
) -> None:
    """Predict with a fine-tuned task head: each text's label and class probabilities (a
    classification run), or each word's tag (a labelling run such as conll-ner).

    Args:
        run: A task-head run directory, written by groundwork finetune MODEL --task TASK.
        texts: One or more texts (words are split on whitespace for a labelling run).
        file: A text file, one text per line, read after the TEXTs (`groundwork predict RUN
            --file PATH` alone reads only the file).
        json: Print one JSON object per text: {"text", "label", "probabilities"} or {"text",
            "words", "tags"}.
        batch_size: Texts per forward pass.
        device: auto (CUDA when there is one), cpu, cuda or cuda:N.
    """
    from groundwork.tables import markdown_table

    texts = list(texts)
    if run is None:  # the command line gives a lone word (`predict RUN --file F`) to TEXT
        if not texts:
            raise ConfigError("`groundwork predict` needs a RUN and TEXTs (or --file PATH)")
        run, texts = texts[0], texts[1:]
    if file is not None:
        texts += read_texts(file)
    predictions = predict_texts(run, texts, batch_size=batch_size, device=device)
    if json:
        for p in predictions:
            print(_json.dumps(p.as_dict(), ensure_ascii=False))
        return
    tagged = [p for p in predictions if isinstance(p, TagPrediction)]
    labelled = [p for p in predictions if isinstance(p, LabelPrediction)]
    for t in tagged:
        print(t.pairs())
    if not labelled:
        return
    labels = list(labelled[0].probabilities)
    rows = [
        [_cell(p.text), p.label, *(f"{v:.3f}" for v in p.probabilities.values())] for p in labelled
    ]
    header = ["text", "label", *(f"p({_cell(label, 20)})" for label in labels)]
    print(markdown_table(header, rows, align="ll" + "r" * len(labels)), end="")
