"""Benchmark: counting a 5-gram model on the whole Shakespeare corpus, ours (numpy) vs NLTK.

Ours is :meth:`groundwork.models.ngram.NGramLM.fit` with interpolated modified Kneser–Ney: padding,
counting every order 1..5 (raw and continuation counts) and the per-context sums the smoothing
needs. It runs on two cuts of all Shakespeare documents (every split): words, one line per sequence
(:mod:`groundwork.recipes.ngram`), and GPT-2's BPE ids, one document per sequence. Tokenizing is
not timed.

The reference is NLTK's counting, ``KneserNeyInterpolated(5).fit(*padded_everygram_pipeline(5,
lines))`` (padding, every 1..5-gram, the vocabulary and the ``NgramCounter``), on the word-level
lines. It is pure Python; ``--nltk-lines`` limits it to the first lines when the whole corpus
takes too long, and the ratio is then scaled per line (recorded).

Before timing, the two counts are checked equal (raw counts of every order, on the first 2,000
lines; NLTK's extra right padding and all-padding n-grams left aside).

Run: ``python benchmarks/ngram_count.py``.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from groundwork import corpus
from groundwork.models.ngram import NGramConfig, NGramLM
from groundwork.recipes.ngram import word_vocabulary, words
from groundwork.tokenize import gpt2_tokenizer
from groundwork.tokenize.words import Vocabulary
from machine import machine

ORDER = 5
RESULTS = Path(__file__).parent / "results" / "ngram_count.json"


def fit_ours(seqs: list[list[int]], vocab_size: int, eos: int | None, repeats: int) -> tuple:
    best, lm = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        lm = NGramLM(NGramConfig(order=ORDER)).fit(seqs, vocab_size, bos_id=eos, eos_id=eos)
        best = min(best, time.perf_counter() - start)
    assert lm is not None
    return best, lm


def model_bytes(lm: NGramLM) -> int:
    """Bytes held by the model's numpy arrays (counts, keys, per-order statistics)."""

    def walk(value: object) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if hasattr(value, "__dict__") and not isinstance(value, type):
            return sum(walk(v) for v in vars(value).values())
        return 0

    return walk(vars(lm))


def fit_nltk(lines: list[list[str]]):  # type: ignore[no-untyped-def]
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    start = time.perf_counter()
    train, vocab = padded_everygram_pipeline(ORDER, lines)
    ref = KneserNeyInterpolated(ORDER)
    ref.fit(train, vocab)
    return time.perf_counter() - start, ref


def check_same_counts(lines: list[list[str]], vocab: Vocabulary) -> None:
    """Our raw counts equal NLTK's for every n-gram that does not end in padding."""
    ids = [vocab.ids(s) for s in lines]
    lm = NGramLM(NGramConfig(order=ORDER)).fit(ids, vocab.vocab_size)
    _, ref = fit_nltk([[vocab.tokens[i] for i in s] for s in ids])
    name = {lm.bos_id: "<s>", lm.eos_id: "</s>"}
    for m in range(1, ORDER + 1):
        for gram, count in lm.counts(m).items():
            tokens = [name.get(t, vocab.tokens[t] if t < vocab.vocab_size else "") for t in gram]
            if tokens == ["</s>"]:
                continue  # NLTK pads with ORDER - 1 </s>, so it counts </s> 4 times a line
            theirs = (
                ref.counts[tokens[-1]] if m == 1 else ref.counts[tuple(tokens[:-1])][tokens[-1]]
            )
            assert theirs == count, (tokens, count, theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="time the best of this many runs")
    parser.add_argument(
        "--nltk-lines", type=int, default=0, help="NLTK on this many lines (0: all)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = parser.parse_args()

    docs = corpus.load_documents("shakespeare", split="all")
    lines = [w for d in docs for line in d.text.split("\n") if (w := words(line))]
    vocab = word_vocabulary(lines, min_count=1)
    word_ids = [vocab.ids(s) for s in lines]
    tok = gpt2_tokenizer()
    bpe_ids = [tok.encode(d.text) for d in docs]

    check_same_counts(lines[:2000], vocab)
    word_s, word_lm = fit_ours(word_ids, vocab.vocab_size, None, args.repeats)
    bpe_s, bpe_lm = fit_ours(bpe_ids, tok.vocab_size, tok.eot_id, args.repeats)
    # Peak resident memory of this process so far (corpus, ids and both models; before NLTK).
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nltk_lines = lines[: args.nltk_lines] if args.nltk_lines else lines
    ref_s, _ = fit_nltk(nltk_lines)
    n_words = sum(len(s) for s in word_ids)
    n_nltk = sum(len(s) for s in nltk_lines)
    ref_full_s = ref_s * n_words / n_nltk  # per-token scaling when NLTK saw a subset
    import nltk

    result = {
        "benchmark": "ngram_count",
        "what": f"counting a {ORDER}-gram model (modified Kneser-Ney fit) on all of Shakespeare",
        "command": "python benchmarks/ngram_count.py"
        + (f" --nltk-lines {args.nltk_lines}" if args.nltk_lines else ""),
        "machine": machine(),
        "words": {
            "sequences": len(word_ids),
            "tokens": n_words,
            "vocab_size": vocab.vocab_size,
            "ngrams_per_order": [word_lm.n_ngrams(m) for m in range(1, ORDER + 1)],
            "ours_s": round(word_s, 3),
            "model_mb": round(model_bytes(word_lm) / 2**20, 1),
        },
        "gpt2_bpe": {
            "sequences": len(bpe_ids),
            "tokens": sum(len(s) for s in bpe_ids),
            "vocab_size": tok.vocab_size,
            "ngrams_per_order": [bpe_lm.n_ngrams(m) for m in range(1, ORDER + 1)],
            "ours_s": round(bpe_s, 3),
            "model_mb": round(model_bytes(bpe_lm) / 2**20, 1),
        },
        "reference": f"nltk {nltk.__version__} KneserNeyInterpolated({ORDER}).fit with "
        "padded_everygram_pipeline, word level",
        "reference_lines": len(nltk_lines),
        "reference_tokens": n_nltk,
        "reference_s": round(ref_s, 3),
        "reference_full_corpus_s": round(ref_full_s, 3),
        "ratio": round(word_s / ref_full_s, 4),
        "counts_equal_on_first_2000_lines": True,
        "repeats": args.repeats,
        "peak_rss_mb_before_reference": round(peak_mb),
    }
    print(f"ours      {word_s:8.3f} s  words: {n_words:,} tokens, {len(word_ids):,} lines")
    print(f"ours      {bpe_s:8.3f} s  GPT-2 BPE: {result['gpt2_bpe']['tokens']:,} tokens")
    print(f"reference {ref_s:8.3f} s  NLTK on {n_nltk:,} words ({ref_full_s:.1f} s full corpus)")
    print(f"ratio     {result['ratio']:8.4f}    (ours / reference, words)")
    words_mb, bpe_mb = result["words"]["model_mb"], result["gpt2_bpe"]["model_mb"]
    print(f"memory    models {words_mb} MB (words), {bpe_mb} MB (BPE); peak RSS {peak_mb:.0f} MB")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
