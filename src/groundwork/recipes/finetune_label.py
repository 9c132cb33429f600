r"""Fine-tuning a token head for sequence labelling: ``groundwork finetune MODEL --task conll-ner``.

Named-entity recognition on the CoNLL-2003 sample (226 sentences, BIO tags of PER, LOC, ORG and
MISC; :mod:`groundwork.corpus.conll`). Words are split into sub-tokens by the model's tokenizer;
each word's label sits on its **first** sub-token and the others are ignored (-100), as in
Devlin et al. 2019 §5.3; a BERT reads ``[CLS] pieces [SEP]``. The head
(:class:`~groundwork.adapt.heads.TokenClassifier`) and every backbone weight are trained with
:class:`~groundwork.train.objectives.TokenClassificationObjective` through the engine. Scores are
entity-level precision, recall and F1 (:func:`~groundwork.evaluate.labelling.entity_scores`,
equal to seqeval), beside the classic baseline of the CoNLL shared task: each word's most frequent
tag in the training sentences (``O`` for unseen words).

Sentences are split by a hash of their index: 20% test, 10% of the rest validation (the best
evaluation by validation entity F1 is kept). Chapter 12.
"""

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError
from groundwork.evaluate.labelling import EntityReport, entity_scores
from groundwork.fileio import write_json
from groundwork.runs import check_writable
from groundwork.train.config import TrainConfig
from groundwork.train.data import Batch, LabelledSequences, pad_batch, pad_with_mask
from groundwork.train.objectives import IGNORE_INDEX

__all__ = ["LABELLING_TASKS", "LabelledTokens", "align_labels", "finetune_labeller", "word_pieces"]

LABELLING_TASKS = ("conll-ner",)
"""The sequence-labelling tasks ``groundwork finetune --task`` knows."""
METRICS_FILE = "metrics.json"


def word_pieces(tokenizer: Any, words: Sequence[str], family: str) -> tuple[list[int], list[int]]:
    """A sentence's ids as the family reads them (a BERT: ``[CLS] pieces [SEP]``; a decoder: the
    words joined by spaces) and the position of each word's first sub-token."""
    ids: list[int] = [tokenizer.token_to_id("[CLS]")] if family == "bert" else []
    first: list[int] = []
    for k, word in enumerate(words):
        first.append(len(ids))
        ids += tokenizer.encode(word if family == "bert" or k == 0 else " " + word) or [0]
    if family == "bert":
        ids.append(tokenizer.token_to_id("[SEP]"))
    return ids, first


def align_labels(
    tokenizer: Any, words: Sequence[str], labels: Sequence[int], family: str
) -> tuple[list[int], list[int], list[int]]:
    """Ids of a sentence (:func:`word_pieces`), the label of each id (a word's on its first
    sub-token, -100 on the rest and on ``[CLS]``/``[SEP]``), and each word's first position."""
    ids, first = word_pieces(tokenizer, words, family)
    targets = [IGNORE_INDEX] * len(ids)
    for position, label in zip(first, labels, strict=True):
        targets[position] = label
    return ids, targets, first


class LabelledTokens(LabelledSequences):
    """Token id sequences with a label per token, as the dict batches a token head reads:
    ``input_ids``, ``attention_mask`` and ``labels`` ``(B, T)`` (-100 on padding)."""

    def _batch(self, idx: list[int], seqs: Sequence[Sequence[int]], labels: Sequence[Any]) -> Batch:
        input_ids, attention_mask = pad_with_mask([seqs[i] for i in idx], self.pad_id)  # (B, T)
        targets, _ = pad_batch([labels[i] for i in idx], IGNORE_INDEX)  # (B, T)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": targets,
        }


def majority_tag_baseline(
    train: Sequence[tuple[Sequence[str], Sequence[str]]], test: Sequence[Sequence[str]]
) -> list[list[str]]:
    """Each test word's most frequent training tag (ties: the first seen), ``O`` if unseen."""
    seen: dict[str, Counter[str]] = {}
    for words, tags in train:
        for w, t in zip(words, tags, strict=True):
            seen.setdefault(w, Counter())[t] += 1
    return [[seen[w].most_common(1)[0][0] if w in seen else "O" for w in words] for words in test]


@torch.no_grad()
def predict_tags(
    head: nn.Module,
    seqs: Sequence[Sequence[int]],
    firsts: Sequence[Sequence[int]],
    names: Sequence[str],
) -> list[list[str]]:
    """The predicted tag of every word (read at its first sub-token), sentence by sentence."""
    was_training = head.training
    head.eval()
    out = []
    for ids, first in zip(seqs, firsts, strict=True):
        logits = head(torch.tensor([list(ids)]))[0]  # (T, C)
        out.append([names[int(logits[i].argmax())] for i in first])
    head.train(was_training)
    return out


@dataclasses.dataclass
class LabellerResult:
    """Test entity scores of the fine-tuned head and of the majority-tag baseline."""

    run_dir: Path
    summary: str
    model: EntityReport
    baseline: EntityReport
    sizes: dict[str, int]


def finetune_labeller(
    model: str,
    *,
    task: str,
    train_config: TrainConfig,
    out: Path,
    overwrite: bool = False,
    max_tokens: int = 128,
) -> LabellerResult:
    """Fine-tune ``model`` with a token head on ``task``; write the run to ``out`` and score the
    test sentences beside the majority-tag baseline."""
    from groundwork.adapt import head_for
    from groundwork.adapt.runs import train_task_head
    from groundwork.corpus.conll import conll_sample
    from groundwork.recipes.finetune_classify import load_backbone
    from groundwork.train.objectives import TokenClassificationObjective

    if task not in LABELLING_TASKS:
        raise ConfigError(f"unknown labelling task {task!r}: use {', '.join(LABELLING_TASKS)}")
    check_writable(out, overwrite=overwrite)
    if train_config.best_metric == "val_loss":  # choose the best evaluation by entity F1
        train_config = dataclasses.replace(train_config, best_metric="val_f1", best_mode="max")
    sentences = conll_sample()
    names = sorted({t for s in sentences for t in s.ner})
    backbone, tokenizer, family = load_backbone(model)
    head = head_for(backbone, "token", len(names))
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for k in range(len(sentences)):
        u = hash_fraction(str(k), "conll-ner")
        split["test" if u < 0.2 else "val" if u < 0.28 else "train"].append(k)
    encoded = [
        align_labels(tokenizer, s.words, [names.index(t) for t in s.ner], family) for s in sentences
    ]
    too_long = [k for k, (ids, _, _) in enumerate(encoded) if len(ids) > max_tokens]
    if too_long:
        raise ConfigError(
            f"{len(too_long)} sentences are longer than max_tokens={max_tokens} sub-tokens "
            f"(sentence {too_long[0]}: {len(encoded[too_long[0]][0])}); raise --max-tokens"
        )
    pad = int(getattr(backbone.config, "pad_id", 0) or 0)
    data = LabelledTokens(
        [encoded[k][0] for k in split["train"]],
        [encoded[k][1] for k in split["train"]],
        batch_size=train_config.batch_size,
        pad_id=pad,
    )

    def tags_of(part: str, net: nn.Module) -> list[list[str]]:
        ks = split[part]
        return predict_tags(net, [encoded[k][0] for k in ks], [encoded[k][2] for k in ks], names)

    def gold(part: str) -> list[list[str]]:
        return [list(sentences[k].ner) for k in split[part]]

    def evaluate(net: nn.Module) -> dict[str, float]:
        return {"val_f1": entity_scores(gold("val"), tags_of("val", net)).f1}

    result = train_task_head(
        head,
        tokenizer,
        data,
        TokenClassificationObjective(),
        train_config,
        out,
        backbone=model,
        head_section={"kind": "token", "num_labels": len(names), "labels": names},
        evaluate=evaluate,
        task=task,
        max_tokens=max_tokens,
    )
    report = entity_scores(gold("test"), tags_of("test", head))
    train_pairs = [(sentences[k].words, sentences[k].ner) for k in split["train"]]
    baseline = entity_scores(
        gold("test"),
        majority_tag_baseline(train_pairs, [sentences[k].words for k in split["test"]]),
    )
    write_json(
        out / METRICS_FILE,
        {
            "task": task,
            "backbone": model,
            "test": report.as_dict(),
            "majority_tag_baseline": baseline.as_dict(),
            "training": result.summary(),
        },
    )
    sizes = {part: len(ks) for part, ks in split.items()}
    return LabellerResult(out, result.summary(), report, baseline, sizes)


def results_table(result: LabellerResult, model: str) -> str:
    """Entity precision, recall and F1 (micro), head vs baseline, then F1 per type."""
    from groundwork.tables import markdown_table

    types = sorted(set(result.model.per_type) | set(result.baseline.per_type))
    rows = []
    for name, r in (
        ("most frequent tag per word", result.baseline),
        (f"{model} fine-tuned", result.model),
    ):
        per_type = [f"{100 * r.per_type[t].f1:.1f}" if t in r.per_type else "-" for t in types]
        rows.append(
            [
                name,
                f"{100 * r.precision:.1f}",
                f"{100 * r.recall:.1f}",
                f"{100 * r.f1:.1f}",
                *per_type,
            ]
        )
    return markdown_table(
        ["system", "precision", "recall", "F1", *(f"F1 {t}" for t in types)], rows
    )
