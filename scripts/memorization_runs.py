"""Chapter 22's memorisation experiment (Carlini et al. 2021, 2022; Kandpal et al. 2022): how
much of its training text a small byte-level GPT gives back, by model size, by how often a
passage was duplicated, and with the corpus deduplicated or not.

The corpus: the first 150,000 characters of the ``shakespeare`` source, cut into pieces of
1,000 characters, plus **planted passages**: 30 passages of 150 characters from the Lee news
corpus (``wiki-sample``'s ``lee_background.cor``; a different register from Shakespeare, so
nothing of them can be guessed from the plays), 10 copied once, 10 copied 16 times and 10
copied 128 times, each copy a document of its own, all documents shuffled with a fixed seed. The
**deduplicated** corpus is the same list after :func:`groundwork.corpus.dedup.exact_dedup`:
every planted passage once. The training stream is the documents joined by blank lines, as
bytes (vocabulary 256).

Two GPTs (pre-LN, learned positions, tied embeddings), ``small`` (d 64, 2 layers) and
``medium`` (d 128, 4 layers, the demo's shape), are trained on each corpus for the same number
of AdamW steps on random 128-byte windows. Then, for each planted passage (its first copy in the
stream), the model is prompted with the ``k`` bytes before its last 50 and decoded greedily for
50 bytes (:func:`~groundwork.evaluate.memorization.extraction_rate`); ``k`` in 10, 25, 50, 75
(prefix and suffix fit the 128-byte context). As a control, 100 random 50-byte suffixes inside
the Shakespeare pieces (with ``k`` bytes of the same piece before them) are measured the same way.

Writes ``benchmarks/results/memorization-cpu.json``, ``docs/results/memorization.md`` (the
table) and ``docs/chapters/img/memorization.png``.

Usage: ``python scripts/memorization_runs.py [--threads 1] [--steps 600]``.
"""

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from groundwork import corpus  # noqa: E402
from groundwork.corpus import Document, load_documents  # noqa: E402
from groundwork.corpus.dedup import exact_dedup  # noqa: E402
from groundwork.evaluate.memorization import (  # noqa: E402
    ExtractionResult,
    extraction_rate,
    plot_extraction,
)
from groundwork.models.gpt import GPT, GPTConfig  # noqa: E402
from machine import machine  # noqa: E402
from results_page import write_table  # noqa: E402

JSON = ROOT / "benchmarks" / "results" / "memorization-cpu.json"
PAGE = ROOT / "docs" / "results" / "memorization.md"
PLOT = ROOT / "docs" / "chapters" / "img" / "memorization.png"
PASSAGE, SUFFIX = 150, 50  # bytes per planted passage; the last SUFFIX are what is extracted
PREFIXES = (10, 25, 50, 75)  # prefix + suffix fit the 128-byte context
COPIES = (1, 16, 128)
PER_GROUP = 10
SHAKESPEARE_CHARS = 150_000
PIECE = 1000
SIZES = {
    "small": dict(d_model=64, n_layers=2, n_heads=2),
    "medium": dict(d_model=128, n_layers=4, n_heads=4),
}


def planted_passages() -> list[str]:
    """``len(COPIES) * PER_GROUP`` passages of ``PASSAGE`` ASCII characters, one from each of
    the first Lee news articles long enough (the article's opening, cut at the length)."""
    text = (corpus.fetch("wiki-sample") / "lee_background.cor").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        if len(line) >= PASSAGE and line.isascii():
            out.append(line[:PASSAGE])
        if len(out) == len(COPIES) * PER_GROUP:
            return out
    raise SystemExit("the Lee corpus has too few articles")


def build_documents(seed: int = 0) -> tuple[list[Document], dict[str, int]]:
    """The shuffled documents (Shakespeare pieces and planted copies) and, per planted
    passage's text, its number of copies."""
    plays = load_documents("shakespeare")
    text = "\n\n".join(d.text for d in plays)[:SHAKESPEARE_CHARS]
    text = text.encode("ascii", "ignore").decode()
    docs = [
        Document(id=f"shakespeare/{i:04d}", text=text[s : s + PIECE], source="shakespeare")
        for i, s in enumerate(range(0, len(text), PIECE))
    ]
    copies: dict[str, int] = {}
    for i, passage in enumerate(planted_passages()):
        n = COPIES[i // PER_GROUP]
        copies[passage] = n
        docs += [
            Document(id=f"planted/{i:02d}/{c}", text=passage, source="planted") for c in range(n)
        ]
    random.Random(seed).shuffle(docs)
    return docs, copies


def stream(docs: list[Document]) -> tuple[np.ndarray, dict[str, int], list[tuple[int, int]]]:
    """The byte stream, the offset of each planted passage's first copy, and the span of every
    Shakespeare piece."""
    parts, first, spans, offset = [], {}, [], 0
    for d in docs:
        if d.source == "planted":
            first.setdefault(d.text, offset)
        else:
            spans.append((offset, offset + len(d.text)))
        parts.append(d.text + "\n\n")
        offset += len(d.text) + 2
    data = np.frombuffer("".join(parts).encode("ascii"), dtype=np.uint8).copy()
    assert len(data) == offset
    return data, first, spans


def train(shape: dict[str, int], data: np.ndarray, steps: int, seed: int) -> tuple[GPT, float]:
    """A byte-level GPT of ``shape`` after ``steps`` AdamW steps on random 128-byte windows of
    ``data`` (batch 16, lr 3e-3 with 50 warm-up steps and cosine decay to 3e-4); the model and
    its mean training loss over the last 50 steps."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=256, max_seq_len=128, dropout=0.0, **shape)
    model = GPT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    tokens = torch.from_numpy(data.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        warm = min(1.0, (step + 1) / 50)
        cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * warm * cosine
        starts = torch.randint(0, len(tokens) - 129, (16,), generator=generator)
        window = torch.stack([tokens[s : s + 129] for s in starts.tolist()])  # (B, 129)
        logits = model(window[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), float(np.mean(losses[-50:]))


def control_starts(spans: list[tuple[int, int]], n: int, seed: int) -> list[int]:
    """``n`` suffix starts inside Shakespeare pieces, each with ``max(PREFIXES)`` bytes of its
    piece before it and ``SUFFIX`` after it (seeded; drawn without repeating a piece)."""
    rng = random.Random(seed)
    need = max(PREFIXES) + SUFFIX
    pieces = rng.sample([(a, b) for a, b in spans if b - a >= need], n)
    return sorted(rng.randint(a + max(PREFIXES), b - SUFFIX) for a, b in pieces)


def summary(r: ExtractionResult) -> dict[str, Any]:
    return {
        "prefix_len": r.prefix_len,
        "n": r.n,
        "extracted": r.extracted,
        "rate": r.rate,
        "ci": list(r.ci),
        "matched_prefix_len": r.matched_prefix_len,
    }


def table(record: dict[str, Any]) -> str:
    """The results as a Markdown table: one row per model, corpus and kind of text, one column
    per prefix length, each cell "extracted/n (mean bytes matched)"."""
    head = " | ".join(f"k = {k}" for k in PREFIXES)
    lines = [
        "| model (parameters) | training corpus | final training loss (nats/byte) | text measured "
        f"(copies in the duplicated corpus) | {head} |",
        "|---|---|--:|---|" + "--:|" * len(PREFIXES),
    ]
    for name, run in record["runs"].items():
        size, corpus_name = name.split("/")
        groups = {f"planted, {c}x": run["planted"][str(c)] for c in COPIES}
        groups["Shakespeare (control)"] = run["shakespeare_control"]
        for what, results in groups.items():
            cells = " | ".join(
                f"{r['extracted']}/{r['n']} ({r['matched_prefix_len']:.1f})" for r in results
            )
            lines.append(
                f"| {size} ({run['parameters'] / 1e3:.0f}k) | {corpus_name} "
                f"| {run['final_train_loss']:.2f} | {what} | {cells} |"
            )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    """Mean suffix bytes matched against prefix length for the most duplicated passages, one
    line per model and corpus."""
    curves = {
        name.replace("/", ", "): [
            ExtractionResult(
                r["prefix_len"],
                SUFFIX,
                r["n"],
                r["extracted"],
                r["rate"],
                tuple(r["ci"]),
                r["matched_prefix_len"],
            )
            for r in run["planted"][str(COPIES[-1])]
        ]
        for name, run in record["runs"].items()
    }
    plot_extraction(curves, path, metric="matched")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    docs, copies = build_documents(args.seed)
    deduped, removed = exact_dedup(docs)
    corpora = {"duplicated": docs, "deduplicated": deduped}
    record: dict[str, Any] = {
        "documents": {k: len(v) for k, v in corpora.items()},
        "removed_by_dedup": len(removed),
        "runs": {},
    }
    for corpus_name, corpus_docs in corpora.items():
        data, first, spans = stream(corpus_docs)
        controls = control_starts(spans, 100, args.seed)
        for size, shape in SIZES.items():
            started = time.perf_counter()
            model, loss = train(shape, data, args.steps, args.seed)
            seconds = time.perf_counter() - started
            params = sum(p.numel() for p in model.parameters())
            run: dict[str, Any] = {
                "parameters": params,
                "stream_bytes": len(data),
                "final_train_loss": loss,
                "train_seconds": round(seconds, 1),
                "planted": {},
            }
            for n_copies in COPIES:
                suffix_starts = [
                    first[p] + PASSAGE - SUFFIX for p, c in copies.items() if c == n_copies
                ]
                results = [
                    extraction_rate(
                        model,
                        data,
                        prefix_len=k,
                        suffix_len=SUFFIX,
                        offsets=[s - k for s in suffix_starts],
                    )
                    for k in PREFIXES
                ]
                run["planted"][str(n_copies)] = [summary(r) for r in results]
            control = [
                extraction_rate(
                    model, data, prefix_len=k, suffix_len=SUFFIX, offsets=[s - k for s in controls]
                )
                for k in PREFIXES
            ]
            run["shakespeare_control"] = [summary(r) for r in control]
            record["runs"][f"{size}/{corpus_name}"] = run
            print(f"{size} {corpus_name}: loss {loss:.3f}, {seconds:.0f} s", flush=True)
    write_table(PAGE, table(record))
    plot(record, PLOT)
    record.update(
        steps=args.steps,
        batch="16 x 128 bytes",
        command="python scripts/memorization_runs.py " + " ".join(sys.argv[1:]),
        machine=machine(threads=args.threads, torch=torch.__version__),
    )
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
