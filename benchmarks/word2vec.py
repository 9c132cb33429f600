"""Benchmark: our word2vec (PyTorch, sparse SGD in batches) vs ``gensim.models.Word2Vec`` (C).

Both train on the same sentences (Shakespeare + wiki-sample, lower-cased words, one sentence per
line: :func:`groundwork.recipes.word2vec.load_sentences`) with the same settings (default:
skip-gram, negative sampling with 5 noise words, 100 dimensions, window 5, min_count 5,
sample 1e-3, 5 epochs, alpha 0.025 -> 0.0001), one thread each (``torch.set_num_threads(1)``,
gensim ``workers=1``). Both are scored by the same code (:mod:`groundwork.evaluate.word_vectors`):
analogy accuracy (3CosAdd over the 30,000 most frequent words, coverage reported) and Spearman
on WordSim-353 and SimLex-999. Prints ``ours``, ``reference`` and ``ratio`` (training time,
ours / gensim) and the scores, writes ``benchmarks/results/word2vec.json`` and the table
``docs/results/word2vec.md`` (chapter 3).

Several seeds (``--seeds 1 2``) give a mean and the spread: on 1.4 M words the analogy accuracy is
a few percent, so one run's score moves by about a tenth of itself with the seed.

Run: ``python benchmarks/word2vec.py`` (target: our scores within 10% of gensim's).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import gensim
import torch
from gensim.models import Word2Vec as GensimWord2Vec

from groundwork.models.word2vec import Word2Vec, Word2VecConfig
from groundwork.recipes.word2vec import evaluate_vectors, load_sentences, results_table
from machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "word2vec.json"
TABLE = ROOT / "docs" / "results" / "word2vec.md"
SCORES = ("analogy_accuracy", "wordsim353_spearman", "simlex999_spearman")


def train_ours(sentences: list[list[str]], cfg: Word2VecConfig) -> tuple[float, Word2Vec]:
    start = time.perf_counter()
    model = Word2Vec.train(sentences, cfg)
    return time.perf_counter() - start, model


def train_gensim(sentences: list[list[str]], cfg: Word2VecConfig) -> tuple[float, Any]:
    start = time.perf_counter()
    model = GensimWord2Vec(
        sentences,
        vector_size=cfg.dim,
        window=cfg.window,
        min_count=cfg.min_count,
        sample=cfg.sample,
        sg=int(cfg.arch == "skipgram"),
        hs=int(cfg.loss == "hs"),
        negative=cfg.negative if cfg.loss == "negative" else 0,
        ns_exponent=cfg.ns_exponent,
        alpha=cfg.alpha,
        min_alpha=cfg.min_alpha,
        epochs=cfg.epochs,
        seed=cfg.seed,
        workers=1,
    )
    return time.perf_counter() - start, model


def mean_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of the numbers of several runs (the first run's other fields)."""
    row = dict(runs[0])
    for key in ("train_seconds", "analogy_accuracy", "analogy_coverage", *SCORES[1:]):
        row[key] = statistics.mean(r[key] for r in runs)
    for key in SCORES:
        row[f"{key}_by_seed"] = [r[key] for r in runs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["skipgram"], choices=["skipgram", "cbow"])
    parser.add_argument("--loss", nargs="+", default=["negative"], choices=["negative", "hs"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--restrict-vocab", type=int, default=30000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(1)

    sentences = load_sentences(("shakespeare", "wiki-sample"))
    n_words = sum(len(s) for s in sentences)
    print(f"{len(sentences):,} sentences, {n_words:,} words")
    rows: list[dict[str, Any]] = []
    comparisons = []
    for arch in args.arch:
        for loss in args.loss:
            ours_runs, ref_runs = [], []
            for seed in args.seeds:
                cfg = Word2VecConfig(arch=arch, loss=loss, epochs=args.epochs, seed=seed)
                for name, train, runs in (
                    ("groundwork", train_ours, ours_runs),
                    (f"gensim {gensim.__version__}", train_gensim, ref_runs),
                ):
                    seconds, model = train(sentences, cfg)
                    if name == "groundwork":
                        words, vectors = model.vocab.tokens, model.vectors
                    else:
                        words, vectors = model.wv.index_to_key, model.wv.vectors
                    metrics = evaluate_vectors(words, vectors, restrict_vocab=args.restrict_vocab)
                    metrics.pop("analogy_sections")
                    run = {
                        "model": name,
                        "arch": arch,
                        "loss": loss,
                        "epochs": args.epochs,
                        "seed": seed,
                        "train_words": n_words,
                        "vocab_size": len(words),
                        "train_seconds": seconds,
                        **metrics,
                    }
                    runs.append(run)
                    print(
                        f"{name:>14} {arch}/{loss} seed {seed}: {seconds:6.1f} s  analogies "
                        f"{run['analogy_accuracy']:.2%} (coverage {run['analogy_coverage']:.1%})  "
                        f"WS353 {run['wordsim353_spearman']:.3f}  "
                        f"SimLex {run['simlex999_spearman']:.3f}"
                    )
            ours, ref = mean_row(ours_runs), mean_row(ref_runs)
            rows += [ours, ref]
            ratios = {k: ours[k] / ref[k] if ref[k] else None for k in SCORES}
            comparisons.append(
                {
                    "arch": arch,
                    "loss": loss,
                    "ours": ours,
                    "reference": ref,
                    "time_ratio": ours["train_seconds"] / ref["train_seconds"],
                    "score_ratios": ratios,
                    "within_10_percent": {k: r is not None and r >= 0.9 for k, r in ratios.items()},
                }
            )
            print(
                f"ours {ours['train_seconds']:.1f} s  reference {ref['train_seconds']:.1f} s  "
                f"ratio {ours['train_seconds'] / ref['train_seconds']:.2f} (time, ours / gensim)"
            )
            print(
                "score ratios (ours / gensim): "
                + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items() if v)
            )
    table = results_table(rows)
    print(table)
    if args.no_write:
        return
    record = {
        "benchmark": "word2vec",
        "what": "word2vec training on Shakespeare + wiki-sample, ours vs gensim, same data and "
        "settings, one thread each; scores by groundwork.evaluate.word_vectors",
        "command": "python benchmarks/word2vec.py "
        + " ".join(
            [
                f"--arch {' '.join(args.arch)}",
                f"--loss {' '.join(args.loss)}",
                f"--epochs {args.epochs}",
                f"--seeds {' '.join(map(str, args.seeds))}",
            ]
        ),
        "machine": machine(
            gensim_workers=1,
            note="compare times only within one run: both models ran in this process",
        ),
        "sentences": len(sentences),
        "train_words": n_words,
        "restrict_vocab": args.restrict_vocab,
        "comparisons": comparisons,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    note = (
        f"\nMean over seeds {', '.join(map(str, args.seeds))}; {n_words:,} training words; "
        f"analogies over the {args.restrict_vocab:,} most frequent words; one CPU thread each "
        f"(gensim `workers=1`), on a {os.cpu_count()}-core CPU (1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end).\n"
    )
    TABLE.write_text(table + note)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
