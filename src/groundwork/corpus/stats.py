"""Corpus statistics and a document-length histogram (``groundwork data stats``).

Chapter 7, "Data for large models"; the PII counts are chapter 22's, "Law and ethics".
"""

from pathlib import Path
from typing import Any

from groundwork.corpus.documents import load_corpus
from groundwork.corpus.pii import count_pii
from groundwork.corpus.splits import SPLITS


def corpus_stats(
    name: str,
    *,
    plot: Path | None = None,
    dedup: bool = True,
    pii: bool = True,
    home: Path | None = None,
) -> dict[str, Any]:
    """Count what a text source holds after cleaning, and optionally plot document lengths.

    Args:
        name: A text source (``shakespeare``, ...).
        plot: If given, write a PNG histogram of document lengths (in words) there.
        dedup: Deduplicate first (the counts of removed duplicates are reported either way).
        pii: Count personal data per kind (:func:`~groundwork.corpus.pii.count_pii`).
        home: Cache directory.

    Returns:
        ``documents``, ``bytes`` (UTF-8), ``characters``, ``words`` (whitespace-separated),
        ``exact_duplicates``, ``near_duplicates``, ``empty``, and ``splits``: per split
        ``{"documents", "bytes"}``; ``pii``: ``{kind: count}`` (``email``, ``card``, ``ipv6``,
        ``ipv4``, ``phone``) when ``pii``; ``plot`` (the path) when a plot was written.
    """
    corpus = load_corpus(name, dedup=dedup, home=home)
    docs = corpus.documents("all")
    stats: dict[str, Any] = {
        "source": name,
        "documents": len(docs),
        "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
        "characters": sum(len(d.text) for d in docs),
        "words": sum(len(d.text.split()) for d in docs),
        "exact_duplicates": len(corpus.exact_duplicates),
        "near_duplicates": len(corpus.near_duplicates),
        "empty": corpus.empty,
        "splits": {
            s: {
                "documents": len(corpus.splits[s]),
                "bytes": sum(len(d.text.encode("utf-8")) for d in corpus.splits[s]),
            }
            for s in SPLITS
        },
    }
    if pii:
        stats["pii"] = count_pii(d.text for d in docs)
    if plot is not None:
        stats["plot"] = str(plot_lengths([len(d.text.split()) for d in docs], Path(plot), name))
    return stats


def plot_lengths(lengths: list[int], path: Path, title: str) -> Path:
    """Write a histogram of document lengths (log-spaced bins when lengths span decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(lengths, dtype=float).clip(min=1)
    fig, ax = plt.subplots(figsize=(7, 4))
    log = values.max() / values.min() > 100
    if log:
        bins = np.geomspace(values.min(), values.max() + 1, 40)
    else:
        bins = np.linspace(0, values.max() + 1, 40)
    ax.hist(values, bins=list(bins), color="#4a6fa5", edgecolor="white")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("document length (words)")
    ax.set_ylabel("documents")
    ax.set_title(f"{title}: {len(lengths)} documents")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
