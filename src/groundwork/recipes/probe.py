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
accuracy by layer and writes a plot (accuracy vs layer, task vs control). Chapter 12.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError

__all__ = ["PROBE_TASKS", "probe", "word_features"]

PROBE_TASKS = ("conll-pos", "conll-ner")
"""The word-labelling tasks a probe can be trained on."""
TEST_FRACTION = 0.2


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


def probe(
    model: str,
    *,
    task: Literal["conll-pos", "conll-ner"] = "conll-pos",
    plot: Path | None = None,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    json: bool = False,
) -> None:
    """Train a linear probe on every layer of a model to predict a word label, beside a control
    task; print accuracy and selectivity by layer and plot them.

    Args:
        model: A named pretrained model (all-minilm-l6-v2, smollm2-135m-instruct) or a run
            directory.
        task: conll-pos (part of speech) or conll-ner (named-entity BIO tags) of the CoNLL
            sample's words.
        plot: Write the accuracy-by-layer plot here (PNG); default runs/probe-MODEL-TASK.png.
        C: Inverse L2 strength of the logistic regressions.
        max_iter: L-BFGS iterations at most per probe (features are standardised first).
        seed: Seed of the control task's labels.
        json: Print the results as JSON.
    """
    import json as json_lib

    from groundwork.adapt.probe import control_labels, plot_probe, probe_layers
    from groundwork.corpus.conll import conll_sample
    from groundwork.recipes.finetune_classify import load_backbone
    from groundwork.tables import markdown_table

    if task not in PROBE_TASKS:
        raise ConfigError(f"unknown probe task {task!r}: use one of {', '.join(PROBE_TASKS)}")
    net, tokenizer, family = load_backbone(model)
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
    with warnings.catch_warnings(record=True) as caught:  # one line for all, not one per probe
        warnings.simplefilter("always", RuntimeWarning)
        results = probe_layers(
            features, labels, control, train_idx, test_idx, C=C, max_iter=max_iter, standardize=True
        )
    unconverged = [w for w in caught if "L-BFGS stopped" in str(w.message)]
    name = Path(model).name
    path = Path(plot) if plot else Path("runs") / f"probe-{name}-{task}.png"
    plot_probe(results, path, title=f"{name}: linear probes on {task}")
    if json:
        rows = [vars(r) for r in results]
        found = {
            "model": model,
            "task": task,
            "layers": rows,
            "unconverged_probes": len(unconverged),
        }
        print(json_lib.dumps(found, indent=2))
        return
    table = [
        [
            str(r.layer),
            f"{r.task_accuracy:.3f}",
            f"{r.control_accuracy:.3f}",
            f"{r.selectivity:.3f}",
        ]
        for r in results
    ]
    print(
        f"{name} on {task}: {len(train_idx):,} training and {len(test_idx):,} test words, "
        f"{len(names)} labels (layer 0: the embeddings)"
    )
    print(markdown_table(["layer", "task accuracy", "control accuracy", "selectivity"], table))
    print(f"plot: {path}")
    if unconverged:
        print(
            f"note: {len(unconverged)} of {2 * len(results)} probes stopped at --max-iter "
            f"{max_iter} before the gradient fell below 1e-4 (raise --max-iter to finish them)"
        )
