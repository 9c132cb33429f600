"""Training and evaluating word2vec on real text: the ``groundwork word2vec`` command.

Reads the documents of the given sources (Shakespeare and the Wikipedia/Lee sample by default)
through :func:`groundwork.corpus.load_documents`, splits them into sentences of lower-cased words
(:func:`text_to_sentences`), trains :class:`groundwork.models.word2vec.Word2Vec`, evaluates the
vectors on analogies and word similarity (:mod:`groundwork.evaluate.word_vectors`) and writes a
run directory (``groundwork.runs.load_run`` reads it back as ``(model, vocabulary, config)``):

```
runs/word2vec/
  config.yaml             kind: word2vec, the Word2VecConfig (model), the sources (data)
  vectors.safetensors     input ("word") and output vectors
  vocab.json              words (most frequent first), their counts and the word regex
  vectors.txt             the word2vec.c text format (gensim: KeyedVectors.load_word2vec_format)
  metrics.json            scores, coverage, timings, corpus size
```

Docs: chapter 3, "Word vectors and neural basics".
"""

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from groundwork import runs
from groundwork.corpus import load_documents
from groundwork.errors import EmptyCorpusError
from groundwork.evaluate.word_vectors import (
    SIMLEX999,
    WORDSIM353,
    benchmark_file,
    evaluate_analogies,
    evaluate_similarity,
)
from groundwork.fileio import atomic_write, write_json
from groundwork.models.word2vec import Word2Vec, Word2VecConfig
from groundwork.runtime import torch_threads
from groundwork.tables import markdown_table
from groundwork.tokenize.words import split_words

# --8<-- [start:tokenize]
WORD_PATTERN = re.compile(r"[^\W\d_]+")
"""A word is a maximal run of letters (any script); digits, punctuation and apostrophes split
words: "King's 2nd son" -> ["king", "s", "nd", "son"] after lower-casing."""

MAX_SENTENCE = 10_000
"""Longer lines are cut into pieces of this many words (gensim's ``MAX_WORDS_IN_BATCH``)."""


def text_to_sentences(text: str) -> list[list[str]]:
    """One sentence per non-empty line, as gensim's ``LineSentence``: lower-cased words.

    Windows never cross a line break. For Shakespeare a line is a verse line or a speech line;
    for Wikipedia a paragraph.

    >>> text_to_sentences("To be, or not to be:\\n\\nThat is the Question.")
    [['to', 'be', 'or', 'not', 'to', 'be'], ['that', 'is', 'the', 'question']]
    """
    sentences = []
    for line in text.split("\n"):
        words = split_words(line, WORD_PATTERN)
        for start in range(0, len(words), MAX_SENTENCE):
            sentences.append(words[start : start + MAX_SENTENCE])
    return sentences


# --8<-- [end:tokenize]


def load_sentences(sources: Iterable[str]) -> list[list[str]]:
    """The sentences of all documents (every split) of the given text sources, in order.

    Raises:
        EmptyCorpusError: No sources, or no words in them.
    """
    sentences: list[list[str]] = []
    for name in sources:
        for doc in load_documents(name):
            sentences.extend(text_to_sentences(doc.text))
    if not sentences:
        raise EmptyCorpusError(
            f"no words in sources {list(sources)!r}; name at least one text source"
        )
    return sentences


def evaluate_vectors(
    words: Sequence[str],
    vectors: torch.Tensor | np.ndarray,
    *,
    restrict_vocab: int | None = 30000,
) -> dict[str, Any]:
    """Analogy accuracy and coverage, and Spearman on WordSim-353 and SimLex-999, as a dict."""
    analogies = evaluate_analogies(words, vectors, restrict_vocab=restrict_vocab)
    metrics: dict[str, Any] = {
        "analogy_accuracy": analogies.accuracy,
        "analogy_coverage": analogies.coverage,
        "analogy_evaluated": analogies.total.evaluated,
        "analogy_questions": analogies.total.questions,
        "analogy_malformed_lines": len(analogies.malformed),
        "analogy_restrict_vocab": restrict_vocab,
        "analogy_sections": {
            s.name: {"accuracy": s.accuracy, "evaluated": s.evaluated, "questions": s.questions}
            for s in analogies.sections
        },
    }
    for key, name in (("wordsim353", WORDSIM353), ("simlex999", SIMLEX999)):
        sim = evaluate_similarity(words, vectors, benchmark_file(name))
        metrics[f"{key}_spearman"] = sim.spearman
        metrics[f"{key}_pairs"] = sim.pairs
        metrics[f"{key}_oov"] = sim.oov
    return metrics


# --8<-- [start:table]
def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of results, one row per model (keys as written by :func:`word2vec`)."""
    header = ["model", "arch", "loss", "epochs", "train words", "vocab", "train time (s)"]
    header += ["analogy acc.", "analogy coverage", "WordSim-353 ρ", "SimLex-999 ρ"]
    cells = [
        [
            r["model"],
            r["arch"],
            r["loss"],
            r["epochs"],
            f"{r['train_words']:,}",
            f"{r['vocab_size']:,}",
            f"{r['train_seconds']:.1f}",
            f"{r['analogy_accuracy']:.1%}",
            f"{r['analogy_coverage']:.1%}",
            f"{r['wordsim353_spearman']:.3f}",
            f"{r['simlex999_spearman']:.3f}",
        ]
        for r in rows
    ]
    return markdown_table(header, cells, align="lll" + "r" * 8)


def neighbours_table(near: dict[str, list[tuple[str, float]]]) -> str:
    """A Markdown table: each word and its nearest neighbours with their cosine similarity."""
    rows = [[word, ", ".join(f"{w} ({s:.2f})" for w, s in pairs)] for word, pairs in near.items()]
    return markdown_table(["word", "nearest neighbours (cosine)"], rows)


# --8<-- [end:table]


def word2vec(
    out: Path = Path("runs/word2vec"),
    sources: tuple[str, ...] = ("shakespeare", "wiki-sample"),
    arch: Literal["skipgram", "cbow"] = "skipgram",
    loss: Literal["negative", "hs"] = "negative",
    dim: int = 100,
    window: int = 5,
    negative: int = 5,
    sample: float = 1e-3,
    min_count: int = 5,
    epochs: int = 5,
    alpha: float = 0.025,
    min_alpha: float = 0.0001,
    batch_size: int = 2048,
    seed: int = 1,
    restrict_vocab: int = 30000,
    neighbours: tuple[str, ...] = ("king", "love", "france", "sword"),
    markdown: Path | None = None,
    threads: int | None = 1,
    progress: bool = True,
) -> None:
    """Train word2vec on real text, evaluate it on analogies and word similarity, save the vectors.

    Args:
        out: Output run directory (config, vectors, vocabulary, metrics).
        sources: Text sources to train on (all their documents).
        arch: ``skipgram`` or ``cbow``.
        loss: ``negative`` (negative sampling) or ``hs`` (hierarchical softmax).
        dim: Dimension of the word vectors.
        window: Maximum context window (each centre word draws 1..window).
        negative: Noise words per example (negative sampling).
        sample: Subsampling threshold for frequent words (0 disables).
        min_count: Minimum count of a word to enter the vocabulary.
        epochs: Passes over the text.
        alpha: Initial learning rate (decays linearly to ``min_alpha``).
        min_alpha: Final learning rate.
        batch_size: Examples per sparse SGD step.
        seed: Random seed.
        restrict_vocab: Analogies use only the most frequent this many words.
        neighbours: Words whose nearest neighbours are printed.
        markdown: Also write the results table to this Markdown file.
        threads: CPU threads for PyTorch (``None``: PyTorch's choice). One is the default: the
            steps are many small gathers and scatters, and extra threads cost more than they
            save (measured: 4x slower with 2 threads on a busy 2-core machine).
        progress: Show a progress bar.
    """
    config = Word2VecConfig(
        arch=arch,
        loss=loss,
        dim=dim,
        window=window,
        negative=negative,
        sample=sample,
        min_count=min_count,
        epochs=epochs,
        alpha=alpha,
        min_alpha=min_alpha,
        batch_size=batch_size,
        seed=seed,
    )
    sentences = load_sentences(sources)
    with torch_threads(threads) as used_threads:
        start = time.perf_counter()
        model = Word2Vec.train(sentences, config, progress=progress, pattern=WORD_PATTERN)
        seconds = time.perf_counter() - start
    metrics = {
        "model": "groundwork",
        "arch": arch,
        "loss": loss,
        "epochs": epochs,
        "sources": list(sources),
        "sentences": len(sentences),
        "train_words": sum(len(s) for s in sentences),
        "vocab_size": len(model.vocab),
        "train_seconds": seconds,
        "torch_threads": used_threads,
        "config": asdict(config),
        **evaluate_vectors(model.vocab.tokens, model.vectors, restrict_vocab=restrict_vocab),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(
        out,
        kind="word2vec",
        model=asdict(config),
        data={"sources": list(sources), "lowercase": True, "word_pattern": WORD_PATTERN.pattern},
    )
    model.save_weights(out)
    model.save_word2vec_format(out / "vectors.txt")
    near = {w: model.nearest(w, 6) for w in neighbours if w in model.vocab}
    metrics["neighbours"] = {w: [[v, round(s, 4)] for v, s in n] for w, n in near.items()}
    write_json(out / "metrics.json", metrics)
    if markdown is not None:
        text = results_table([metrics]) + "\n" + neighbours_table(near)
        atomic_write(Path(markdown), text.encode("utf-8"))
    print(
        f"trained on {metrics['train_words']:,} words ({len(model.vocab):,} in the vocabulary) "
        f"in {seconds:.1f} s"
    )
    print(
        f"analogies: {metrics['analogy_accuracy']:.1%} of {metrics['analogy_evaluated']} questions "
        f"(coverage {metrics['analogy_coverage']:.1%}; "
        f"{metrics['analogy_malformed_lines']} malformed lines skipped)"
    )
    print(
        f"WordSim-353 Spearman {metrics['wordsim353_spearman']:.3f} "
        f"({metrics['wordsim353_oov']} pairs out of vocabulary); "
        f"SimLex-999 Spearman {metrics['simlex999_spearman']:.3f} "
        f"({metrics['simlex999_oov']} out of vocabulary)"
    )
    for word in neighbours:
        if word in near:
            print(f"nearest to {word}: " + ", ".join(f"{w} {s:.2f}" for w, s in near[word]))
        else:
            print(f"nearest to {word}: not in the vocabulary")
    print(f"wrote {out}")
