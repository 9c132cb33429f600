r"""Probing a model layer by layer: ``groundwork probe MODEL --task conll-pos``.

What does each layer of a pretrained model know? A **linear probe** (a logistic regression,
:func:`~groundwork.adapt.probe.fit_probe`) is trained on the frozen hidden states of one layer to
predict a linguistic label of each word: its part of speech (``conll-pos``) or its named-entity
tag (``conll-ner``), from the CoNLL-2003 sample (226 sentences, :mod:`groundwork.corpus.conll`).
A probe's accuracy alone says little, since a high-dimensional representation can memorise word
types; so each probe is paired with a **control task** (Hewitt & Liang 2019) in which every word
type gets a random label drawn from the real labels' distribution, learnable only by memorising
types. **Selectivity**, task accuracy minus control accuracy, is what the layer encodes beyond
the identity of the word.

A word is represented by the state of its first sub-token (as in sequence labelling, Devlin et
al. 2019); a BERT reads ``[CLS] words [SEP]``, a decoder the words alone. Sentences are split
80/20 by a hash of their index; all the words of a sentence are on one side. The command prints
accuracy by layer and writes a plot (accuracy vs layer, task vs control).

**Sentence tasks** put one label on a whole text: the classification tasks of
:mod:`~groundwork.recipes.finetune_classify` (``dreaddit``: stress or not in Reddit posts;
``sms-spam``), fitted on the training split (validation included) and scored on the test split.
A text is represented at each layer by its states pooled over its real tokens
(:func:`groundwork.adapt.heads.pool`, padding masked): ``mean`` (the default for BERT, as
sentence-transformers pool MiniLM), ``cls`` (the raw ``[CLS]`` state; BERT only) or ``last``
(the last real token, the only one a causal decoder lets see the whole text; the default for
GPT and Llama). Texts are cut to ``max_tokens`` and encoded in padded batches. Texts do not
repeat, so Hewitt & Liang's per-type control (solvable only by memorising types) has no direct
sentence analogue; the control task is its nearest one, **permuted labels**: the labels shuffled
across the examples of each split with a fixed seed, which keeps the label distribution and
breaks the relation of text to label, so a probe scores near chance on it (between the sum of
squared class frequencies and the majority rate) whatever the layer. Selectivity is, as for
words, task accuracy minus control accuracy: here, how far the layer's probe rises above what
the label distribution alone gives. Macro-F1 is reported beside accuracy, since ``sms-spam`` is
87% ham. Chapter 12.
"""

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError, UnknownNameError, did_you_mean
from groundwork.recipes.finetune_classify import CLASSIFICATION_TASKS

__all__ = [
    "PROBE_TASKS",
    "SENTENCE_POOLINGS",
    "parse_layers",
    "permuted_labels",
    "probe",
    "sentence_features",
    "sentence_tasks",
    "word_features",
]

PROBE_TASKS = ("conll-pos", "conll-ner")
"""The word-labelling tasks a probe can be trained on."""
TEST_FRACTION = 0.2
SentencePooling = Literal["mean", "cls", "last"]
SENTENCE_POOLINGS: tuple[str, ...] = ("mean", "cls", "last")
"""How a sentence probe reads a text at one layer: the mean of its real tokens' states, BERT's
``[CLS]`` state, or its last real token's state."""


def sentence_tasks() -> tuple[str, ...]:
    """The one-label-per-text tasks: those of ``groundwork finetune``
    (:data:`~groundwork.recipes.finetune_classify.CLASSIFICATION_TASKS`)."""
    return tuple(CLASSIFICATION_TASKS)


@torch.no_grad()
def word_features(
    model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], family: str
) -> list[torch.Tensor]:
    """Per layer (embeddings first), one ``(N, D)`` row per word of ``sentences``: the state of
    its first sub-token."""
    from groundwork.adapt.features import layer_states
    from groundwork.recipes.finetune_label import word_pieces

    model.eval()
    per_layer: list[list[torch.Tensor]] = []
    for words in sentences:
        ids, first = word_pieces(tokenizer, words, family)
        limit = getattr(model.config, "max_seq_len", len(ids))
        if len(ids) > limit:
            raise ConfigError(f"a sentence of {len(ids)} tokens exceeds the model's {limit}")
        states = layer_states(model, torch.tensor([ids]))  # each (1, T, D)
        if not per_layer:
            per_layer = [[] for _ in states]
        for layer, h in enumerate(states):
            per_layer[layer].append(h[0, first].double())  # (words, D)
    return [torch.cat(rows) for rows in per_layer]


def _is_decoder(model: Any) -> bool:
    from groundwork.models.gpt import GPT
    from groundwork.models.llama import Llama

    return isinstance(model, GPT | Llama)


def _check_pooling(pooling: str, model: Any) -> None:
    from groundwork.adapt.features import encoder_of

    if pooling not in SENTENCE_POOLINGS:
        raise ConfigError(
            f"unknown pooling {pooling!r}: {did_you_mean(pooling, SENTENCE_POOLINGS)}"
        )
    if pooling == "cls" and encoder_of(model) is None:
        raise ConfigError(
            f"pooling 'cls' reads BERT's [CLS] token, and a {type(model).__name__} has none: use "
            "'last' (the default for decoders) or 'mean'"
        )


# --8<-- [start:sentence_features]
@torch.no_grad()
def sentence_features(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    family: str,
    *,
    pooling: SentencePooling,
    max_tokens: int = 128,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Per layer (embeddings first), one ``(N, D)`` float32 row per text: its states pooled over
    its real tokens (``mean``, ``last``) or its ``[CLS]`` state (``cls``, BERT only).

    Texts are encoded as the family reads them (BERT ``[CLS] text [SEP]``, decoders the text
    alone), cut to ``max_tokens``, and run in right-padded batches of similar lengths with their
    attention masks; pooling reads only real tokens, so a text's row does not depend on the texts
    it was batched with.

    Raises:
        ConfigError: An unknown pooling, ``cls`` on a model that is not BERT, or ``max_tokens``
            below 2 or above the model's ``max_seq_len``.
    """
    from groundwork.adapt.features import layer_states
    from groundwork.adapt.heads import pool
    from groundwork.recipes.finetune_classify import encode_for
    from groundwork.train.data import batches, pad_with_mask

    _check_pooling(pooling, model)
    longest = getattr(model.config, "max_seq_len", max_tokens)
    if not 2 <= max_tokens <= longest:
        raise ConfigError(
            f"max_tokens must be in [2, {longest}] (the model's limit), got {max_tokens}"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    pad_id = int(getattr(model.config, "pad_id", 0) or 0)
    seqs = encode_for(tokenizer, family, texts, max_tokens)
    per_layer: list[torch.Tensor] = []
    for idx in batches(seqs, batch_size):  # in length order: little padding
        ids, mask = pad_with_mask([seqs[i] for i in idx], pad_id)  # (B, T), (B, T)
        ids, mask = ids.to(device), mask.to(device)
        states = layer_states(model, ids, mask)  # each (B, T, D)
        if not per_layer:
            per_layer = [torch.zeros(len(seqs), h.shape[-1]) for h in states]
        for layer, h in enumerate(states):
            # (B, D): the state of [CLS] (the first token), or the real tokens' states pooled
            pooled = h[:, 0] if pooling == "cls" else pool(h.float(), mask.bool(), pooling)
            per_layer[layer][idx] = pooled.float().cpu()
    return per_layer


# --8<-- [end:sentence_features]


def permuted_labels(labels: Sequence[int], seed: int = 0) -> list[int]:
    """The control task of a sentence probe: ``labels`` in a random order (a seeded permutation of
    the examples), so the label distribution is kept and the relation of text to label broken.

    Hewitt & Liang's control gives each *word type* a random label, which a probe can learn only
    by memorising types; texts do not repeat, so for sentences the analogue is a random label per
    example with the real distribution, here exactly the real labels shuffled.

    >>> sorted(permuted_labels([0, 0, 1, 1, 1], seed=3))
    [0, 0, 1, 1, 1]
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).tolist()
    return [labels[i] for i in order]


def _subset(examples: list[tuple[str, int]], limit: int | None, salt: str) -> list[tuple[str, int]]:
    """At most ``limit`` of ``examples``, chosen by a salted hash of their position (a fixed,
    order-independent sample rather than the first ones), kept in their order."""
    if limit is None or limit >= len(examples):
        return examples
    chosen = sorted(range(len(examples)), key=lambda i: hash_fraction(str(i), salt))[:limit]
    return [examples[i] for i in sorted(chosen)]


def _sentence_data(
    task: str, limit: int | None, seed: int
) -> tuple[list[str], list[int], list[int], list[int], list[int], tuple[str, ...]]:
    """``(texts, labels, control, train_idx, test_idx, label names)`` of a sentence task: the
    training split (validation included) then the test split, at most ``limit`` of each."""
    from groundwork.errors import DataError
    from groundwork.recipes.finetune_classify import task_splits

    the_task = CLASSIFICATION_TASKS[task]
    splits = task_splits(the_task)
    train = _subset(splits["train"] + splits["val"], limit, f"probe-{task}-train")
    test = _subset(splits["test"], limit, f"probe-{task}-test")
    if len({y for _, y in train}) < 2:
        raise DataError(
            f"the {len(train)} training texts of {task} hold a single class: raise --limit"
        )
    labels = [y for _, y in train + test]
    control = permuted_labels(labels[: len(train)], seed) + permuted_labels(
        labels[len(train) :], seed + 1
    )
    train_idx = list(range(len(train)))
    test_idx = list(range(len(train), len(train) + len(test)))
    return [t for t, _ in train + test], labels, control, train_idx, test_idx, the_task.labels


def _word_data(
    net: Any, tokenizer: Any, family: str, task: str, seed: int
) -> tuple[list[torch.Tensor], list[int], list[int], list[int], list[int], list[str]]:
    """``(features, labels, control, train_idx, test_idx, label names)`` of a word task: every
    word of the CoNLL sample, its sentence 80/20 on one side by a hash of its index."""
    from groundwork.adapt.probe import control_labels
    from groundwork.corpus.conll import conll_sample

    sentences = conll_sample()
    words = [w for s in sentences for w in s.words]
    tags = [t for s in sentences for t in (s.pos if task == "conll-pos" else s.ner)]
    names = sorted(set(tags))
    labels = [names.index(t) for t in tags]
    control = control_labels([w.lower() for w in words], labels, seed=seed)
    train_idx: list[int] = []
    test_idx: list[int] = []
    start = 0
    for k, s in enumerate(sentences):
        side = test_idx if hash_fraction(str(k), "probe") < TEST_FRACTION else train_idx
        side += range(start, start + len(s.words))
        start += len(s.words)
    features = word_features(net, tokenizer, [s.words for s in sentences], family)
    return features, labels, control, train_idx, test_idx, names


def parse_layers(layers: str | None, n_layers: int, name: str) -> list[int] | None:
    """The layer indices of ``--layers`` (``"0,3,6"``), checked against a model of ``n_layers``
    blocks (indices ``0..n_layers``, 0 the embeddings); ``None``: all of them.

    >>> parse_layers("6, 0", 6, "minilm")
    [0, 6]
    """
    if layers is None:
        return None
    try:
        wanted = sorted({int(x) for x in layers.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--layers takes comma-separated integers, got {layers!r}") from None
    bad = [i for i in wanted if not 0 <= i <= n_layers]
    if not wanted or bad:
        raise ConfigError(
            f"{name} has hidden states 0..{n_layers} (0: the embeddings, then one per block); "
            f"there is no layer {', '.join(map(str, bad)) or 'in ' + repr(layers)}"
        )
    return wanted


def probe(
    model: str,
    *,
    task: str = "conll-pos",
    pooling: SentencePooling | None = None,
    max_tokens: int = 128,
    limit: int | None = None,
    batch_size: int = 32,
    plot: Path | None = None,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    layers: str | None = None,
    json: bool = False,
) -> None:
    """Train a linear probe on every layer of a model to predict a word's or a text's label,
    beside a control task; print accuracy and selectivity by layer and plot them.

    Args:
        model: A named pretrained model (all-minilm-l6-v2, smollm2-135m-instruct) or a run
            directory.
        task: Words: conll-pos (part of speech) or conll-ner (named-entity BIO tags) of the
            CoNLL sample's words. Texts: dreaddit (stress in Reddit posts) or sms-spam.
        pooling: Texts: how a layer's states become one vector: mean (of the real tokens), cls
            (BERT's [CLS] state) or last (the last real token); default mean for BERT, last for
            decoders (GPT, Llama).
        max_tokens: Texts: cut each text to this many tokens (BERT's [CLS] and [SEP] included).
        limit: Texts: use at most this many training and this many test texts (a fixed sample).
        batch_size: Texts: how many texts the model reads at once (padded).
        plot: Write the accuracy-by-layer plot here (PNG); default runs/probe-MODEL-TASK.png
            (texts: runs/probe-MODEL-TASK-POOLING.png).
        C: Inverse L2 strength of the logistic regressions.
        max_iter: L-BFGS iterations at most per probe (features are standardised first).
        seed: Seed of the control task's labels (texts: of their permutation).
        layers: Probe only these layers, comma-separated (0: the embeddings; default: all).
        json: Print the results as JSON.
    """
    import json as json_lib

    from groundwork.adapt.probe import plot_probe, probe_layers
    from groundwork.recipes.finetune_classify import load_backbone
    from groundwork.tables import markdown_table

    tasks = (*PROBE_TASKS, *sentence_tasks())
    if task not in tasks:
        raise UnknownNameError(f"unknown probe task {task!r}: {did_you_mean(task, tasks)}")
    on_texts = task not in PROBE_TASKS
    if not on_texts and (pooling is not None or limit is not None):
        raise ConfigError(
            f"--pooling and --limit are for the sentence tasks ({', '.join(sentence_tasks())}); "
            f"{task} reads every word of the CoNLL sample at its first sub-token"
        )
    if pooling is not None and pooling not in SENTENCE_POOLINGS:
        raise ConfigError(
            f"unknown pooling {pooling!r}: {did_you_mean(pooling, SENTENCE_POOLINGS)}"
        )
    if limit is not None and limit < 2:
        raise ConfigError(f"limit must be >= 2 texts per split, got {limit}")
    net, tokenizer, family = load_backbone(model)
    n_blocks = int(getattr(getattr(net, "config", None), "n_layers", 0))
    wanted = parse_layers(layers, n_blocks, Path(model).name)
    chosen: SentencePooling = pooling or ("last" if _is_decoder(net) else "mean")
    if on_texts:
        _check_pooling(chosen, net)  # before reading the data: cls on a decoder fails here
        texts, labels, control, train_idx, test_idx, names = _sentence_data(task, limit, seed)
        features = sentence_features(
            net,
            tokenizer,
            texts,
            family,
            pooling=chosen,
            max_tokens=max_tokens,
            batch_size=batch_size,
        )
        unit = "texts"
    else:
        features, labels, control, train_idx, test_idx, word_names = _word_data(
            net, tokenizer, family, task, seed
        )
        names = tuple(word_names)
        unit = "words"
    with warnings.catch_warnings(record=True) as caught:  # one line for all, not one per probe
        warnings.simplefilter("always", RuntimeWarning)
        if wanted is not None:
            features = [features[i] for i in wanted]
        results = probe_layers(
            features, labels, control, train_idx, test_idx, C=C, max_iter=max_iter, standardize=True
        )
        if wanted is not None:  # number the results by the model's layers
            results = [
                dataclasses.replace(r, layer=i) for r, i in zip(results, wanted, strict=True)
            ]
    unconverged = [w for w in caught if "L-BFGS stopped" in str(w.message)]
    name = Path(model).name
    how = f" ({chosen} pooling)" if on_texts else ""
    stem = f"probe-{name}-{task}" + (f"-{chosen}" if on_texts else "")
    path = Path(plot) if plot else Path("runs") / f"{stem}.png"
    title = f"{name}: linear probes on {task}" + (f"\n({chosen} pooling)" if on_texts else "")
    plot_probe(results, path, title=title)
    test_labels = [labels[i] for i in test_idx]
    majority = max(test_labels.count(c) for c in set(test_labels)) / len(test_labels)
    if json:
        found: dict[str, Any] = {"model": model, "task": task}
        if on_texts:
            found.update(pooling=chosen, max_tokens=max_tokens, labels=list(names))
        found.update(
            train_examples=len(train_idx),
            test_examples=len(test_idx),
            majority_accuracy=majority,
            layers=[vars(r) for r in results],
            unconverged_probes=len(unconverged),
        )
        print(json_lib.dumps(found, indent=2))
        return
    columns = ["layer", "task accuracy", "control accuracy", "selectivity"]
    if on_texts:
        columns += ["task macro-F1", "control macro-F1"]
    table = []
    for r in results:
        row = [
            str(r.layer),
            f"{r.task_accuracy:.3f}",
            f"{r.control_accuracy:.3f}",
            f"{r.selectivity:.3f}",
        ]
        if on_texts:
            row += [f"{r.task_macro_f1:.3f}", f"{r.control_macro_f1:.3f}"]
        table.append(row)
    print(
        f"{name} on {task}{how}: {len(train_idx):,} training and {len(test_idx):,} test {unit}, "
        f"{len(names)} labels, majority class {majority:.3f} of the test {unit} "
        "(layer 0: the embeddings)"
    )
    print(markdown_table(columns, table))
    print(f"plot: {path}")
    if unconverged:
        print(
            f"note: {len(unconverged)} of {2 * len(results)} probes stopped at --max-iter "
            f"{max_iter} before the gradient fell below 1e-4 (raise --max-iter to finish them)"
        )
