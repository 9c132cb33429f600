"""BM25 query throughput: our eager sparse ``BM25`` against ``rank_bm25.BM25Okapi`` (the
reference, same scores) and ``bm25s`` (Robertson variant), same tokens, one query at a time.

The index is the wiki-sample corpus cut into 100-word passages with 20 words of overlap; the
1,000 queries are its inverse-cloze sentences
(:func:`groundwork.retrieval.datasets.sentence_queries`, seed 0: each sentence is removed from
the indexed text and its source document's passages are the relevant ones). Everything is
tokenised by :func:`~groundwork.retrieval.bm25.bm25_tokenize`. A query is, for each library:

* ours: ``BM25.search(tokens, 10)`` (scores from the precomputed index + top-10),
* rank_bm25: ``get_scores(tokens)`` + the top 10 by ``np.argsort`` (what its ``get_top_n``
  does), timed on the first 200 queries only (``--reference-queries``): it scores about 20
  queries/s here, so 1,000 queries x 3 rounds would take minutes,
* bm25s: ``BM25(method="robertson").retrieve(all queries, k=10)`` (numpy backend, float32,
  sequential). Its idf clamps negative values at 0 where Okapi floors them at epsilon times the
  average idf, so its top 10 may differ slightly; the agreement is printed.

Before timing, our scores are compared with rank_bm25's on every query (maximum difference) and
our top 10 with rank_bm25's (ties broken by passage index). Rounds alternate the libraries so
machine noise hits each alike. Prints queries/s for each and ``ratio = ours / reference``
(higher is better), recall@10 and MRR of the ranking, and records the result in
``benchmarks/results/bm25_queries-cpu.json``.

    python benchmarks/bm25_queries.py              # 1,000 queries, 3 rounds
    python benchmarks/bm25_queries.py --quick      # 100 queries, one round, nothing written

Target (DESIGN.md section 5): ratio >= 1.0 against rank_bm25.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from groundwork.corpus.documents import load_documents
from groundwork.retrieval.bm25 import BM25, bm25_tokenize
from groundwork.retrieval.datasets import sentence_queries
from groundwork.retrieval.metrics import mean_reciprocal_rank, recall_at_k
from machine import alternating_times, machine

RESULTS = Path(__file__).parent / "results" / "bm25_queries-cpu.json"
K = 10


def timed(build: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = build()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument(
        "--reference-queries",
        type=int,
        default=200,
        help="queries timed for rank_bm25 (the first ones; it is slow): every query is still "
        "checked against it",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="100 queries, one round, no results file")
    args = p.parse_args()
    if args.quick:
        args.queries, args.rounds, args.reference_queries = 100, 1, 20

    import bm25s
    import rank_bm25

    docs = load_documents("wiki-sample")
    passages, queries = sentence_queries(docs, n=args.queries, seed=args.seed)
    corpus = [bm25_tokenize(p.text) for p in passages]
    query_tokens = [bm25_tokenize(q.text) for q in queries]
    n_tokens = sum(len(d) for d in corpus)
    print(f"{len(passages):,} passages ({n_tokens:,} tokens), {len(queries):,} queries")

    index_s = {}
    index_s["ours"], ours = timed(lambda: BM25(corpus))
    index_s["rank_bm25"], ref = timed(lambda: rank_bm25.BM25Okapi(corpus))

    def build_bm25s() -> Any:
        retriever = bm25s.BM25(method="robertson", backend="numpy")
        retriever.index(corpus, show_progress=False)
        return retriever

    index_s["bm25s"], fast = timed(build_bm25s)

    # --- the same scores and the same top 10 as rank_bm25 ------------------------------------
    max_diff, same_top = 0.0, 0
    for tokens in query_tokens:
        expected = ref.get_scores(tokens)
        max_diff = max(max_diff, float(np.abs(ours.get_scores(tokens) - expected).max()))
        ref_top = np.lexsort((np.arange(len(expected)), -expected))[:K]  # ties: lower index
        same_top += ours.search(tokens, K)[0].tolist() == ref_top.tolist()
    ours_top = [ours.search(t, K)[0].tolist() for t in query_tokens]
    bm25s_top = fast.retrieve(query_tokens, k=K, show_progress=False)[0].tolist()
    overlap = statistics.mean(
        len(set(a) & set(b)) / K for a, b in zip(ours_top, bm25s_top, strict=True)
    )
    print(f"max |ours - rank_bm25| over all scores: {max_diff:.3g}")
    print(f"top-{K} equal to rank_bm25's: {same_top}/{len(queries)} queries")
    print(f"top-{K} overlap with bm25s (robertson): {overlap:.3f}")
    relevant = [q.relevant for q in queries]
    recall, mrr = recall_at_k(ours_top, relevant, K), mean_reciprocal_rank(ours_top, relevant)
    print(f"inverse cloze: recall@{K} {recall:.3f}, MRR {mrr:.3f}")

    # --- timing ---------------------------------------------------------------------------
    def run_ours() -> None:
        for tokens in query_tokens:
            ours.search(tokens, K)

    subset = query_tokens[: args.reference_queries]  # rank_bm25: ~20 queries/s on this index

    def run_rank_bm25() -> None:
        for tokens in subset:
            np.argsort(ref.get_scores(tokens))[::-1][:K]

    def run_bm25s() -> None:
        fast.retrieve(query_tokens, k=K, show_progress=False, n_threads=0)

    steps = {"ours": run_ours, "rank_bm25": run_rank_bm25, "bm25s": run_bm25s}
    times = alternating_times(steps, n=1, rounds=args.rounds, warmup=0)
    n_timed = {"ours": len(queries), "rank_bm25": len(subset), "bm25s": len(queries)}
    qps = {name: n_timed[name] / statistics.median(t) for name, t in times.items()}
    ratio = {name: qps["ours"] / qps[name] for name in ("rank_bm25", "bm25s")}
    for name in steps:
        print(
            f"  {name:<10} index {index_s[name]:7.3f} s   {qps[name]:>10,.1f} queries/s "
            f"({n_timed[name]} queries per round)"
        )
    print(f"ours       {qps['ours']:>12,.0f} queries/s")
    print(f"reference  {qps['rank_bm25']:>12,.0f} queries/s  (rank_bm25 {rank_bm25_version()})")
    print(f"ratio      {ratio['rank_bm25']:>12.1f}  (ours / rank_bm25)")
    print(f"ratio      {ratio['bm25s']:>12.2f}  (ours / bm25s {bm25s.__version__})")
    if args.quick:
        return

    result = {
        "benchmark": "bm25_queries",
        "what": "BM25 top-10 search over the wiki-sample passages (100 words, overlap 20), "
        "1,000 inverse-cloze sentence queries, bm25_tokenize tokens, queries one at a time "
        "(bm25s: sequential, n_threads=0)",
        "passages": len(passages),
        "corpus_tokens": n_tokens,
        "queries": len(queries),
        "queries_timed_per_round": n_timed,
        "k": K,
        "index_seconds": {name: round(s, 4) for name, s in index_s.items()},
        "queries_per_s": {name: round(q, 1) for name, q in qps.items()},
        "seconds_per_round": {name: [round(s, 4) for s in t] for name, t in times.items()},
        "ratio": {f"ours / {name}": round(r, 2) for name, r in ratio.items()},
        "max_abs_score_diff_vs_rank_bm25": max_diff,
        "top10_equal_to_rank_bm25": f"{same_top}/{len(queries)}",
        "top10_overlap_with_bm25s": round(overlap, 4),
        "inverse_cloze": {f"recall@{K}": round(recall, 4), "mrr": round(mrr, 4)},
        "reference": f"rank_bm25 {rank_bm25_version()} BM25Okapi.get_scores + np.argsort top 10; "
        f"bm25s {bm25s.__version__} BM25(method='robertson', backend='numpy').retrieve",
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {RESULTS}")


def rank_bm25_version() -> str:
    from importlib.metadata import version

    return version("rank-bm25")


if __name__ == "__main__":
    main()
