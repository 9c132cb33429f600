"""Benchmark: byte-level BPE training, ours (pure Python) vs ``tokenizers``' BpeTrainer (Rust).

Trains both on the Shakespeare training documents with the same settings (ByteLevel
pre-tokenization without a prefix space, the full 256-byte alphabet, one special token
``<|endoftext|>``, 8,000 merges), prints ``ours``, ``reference`` and ``ratio`` (ours / reference
time) and whether the merges are equal, and writes ``benchmarks/results/bpe_train.json``.

``tokenizers`` trains with several threads (rayon); its time with ``RAYON_NUM_THREADS=1`` is
measured in a subprocess (the thread pool is fixed once created) and recorded too.

Run: ``python benchmarks/bpe_train.py`` (target: ratio <= 10).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import tokenizers

from groundwork import corpus
from groundwork.tokenize import ByteLevelBPE
from machine import machine

SPECIAL = "<|endoftext|>"
N_MERGES = 8000
VOCAB_SIZE = 256 + 1 + N_MERGES
RESULTS = Path(__file__).parent / "results" / "bpe_train.json"


def train_reference(texts: list[str]) -> tuple[float, list[tuple[str, str]]]:
    """Train ``tokenizers``' BPE; return (seconds, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    tok.train_from_iterator(texts, trainer)
    seconds = time.perf_counter() - start
    merges = json.loads(tok.to_str())["model"]["merges"]
    return seconds, [tuple(m.split(" ") if isinstance(m, str) else m) for m in merges]


def train_ours(texts: list[str]) -> tuple[float, list[tuple[str, str]]]:
    start = time.perf_counter()
    bpe = ByteLevelBPE.train(texts, VOCAB_SIZE, special_tokens=[SPECIAL])
    return time.perf_counter() - start, bpe.merges


def best_of(fn, texts: list[str], repeats: int) -> tuple[float, list[tuple[str, str]]]:
    runs = [fn(texts) for _ in range(repeats)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="time the best of this many runs")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = parser.parse_args()

    texts = [d.text for d in corpus.load_documents("shakespeare", split="train")]
    if args.reference_only:  # child process for the single-thread reference timing
        print(best_of(train_reference, texts, args.repeats)[0])
        return

    ref_s, ref_merges = best_of(train_reference, texts, args.repeats)
    ours_s, our_merges = best_of(train_ours, texts, args.repeats)
    single = subprocess.run(
        [sys.executable, __file__, "--reference-only", "--repeats", str(args.repeats)],
        env={**os.environ, "RAYON_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    ref_1_s = float(single.stdout.strip().splitlines()[-1])
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(our_merges, ref_merges, strict=False)) if a != b),
        None if len(our_merges) == len(ref_merges) else min(len(our_merges), len(ref_merges)),
    )
    result = {
        "benchmark": "bpe_train",
        "what": f"byte-level BPE training, {N_MERGES} merges, Shakespeare train split",
        "command": "python benchmarks/bpe_train.py",
        "machine": machine(),
        "documents": len(texts),
        "characters": sum(len(t) for t in texts),
        "vocab_size": VOCAB_SIZE,
        "ours_s": round(ours_s, 3),
        "reference_s": round(ref_s, 3),
        "reference": f"tokenizers {tokenizers.__version__} BpeTrainer, default threads",
        "reference_rayon_num_threads_1_s": round(ref_1_s, 3),
        "ratio": round(ours_s / ref_s, 3),
        "ratio_vs_single_thread": round(ours_s / ref_1_s, 3),
        "merges_equal": our_merges == ref_merges,
        "first_difference": first_diff,
        "repeats": args.repeats,
    }
    print(f"ours      {ours_s:8.3f} s")
    print(f"reference {ref_s:8.3f} s  (tokenizers, default threads)")
    print(f"reference {ref_1_s:8.3f} s  (tokenizers, RAYON_NUM_THREADS=1)")
    print(f"ratio     {result['ratio']:8.3f}    (ours / reference; target <= 10)")
    print(f"merges_equal {result['merges_equal']}  first_difference {first_diff}")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
