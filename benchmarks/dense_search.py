"""Dense search throughput: our exact search (blocked torch matmul + ``torch.topk``) against
``faiss.IndexFlatIP`` (the reference), same vectors, same queries, top 10 by inner product.

The vectors are random unit vectors of dimension 384 (all-MiniLM-L6-v2's), 5k, 50k and 200k
rows, as an index of that many embedded passages would hold; the queries are 512 other random
unit vectors, searched in one call. Random vectors cost nothing to make and time the search
alone (embedding real passages is the encoder's cost, not the index's). Both run on the CPU
with every thread (torch's intra-op threads; FAISS's OpenMP threads). Before timing, the two
top-10 lists are compared (the fraction of equal indices and the largest score difference:
near-equal scores may swap places). Calls alternate between the two in rounds so machine noise
hits both alike. Prints queries/s for each size and ``ratio = ours / reference`` (higher is
better), and records the result in ``benchmarks/results/dense_search-cpu.json``.

    python benchmarks/dense_search.py              # 5k, 50k, 200k rows, 5 rounds
    python benchmarks/dense_search.py --quick      # 5k rows, one round, nothing written
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groundwork.retrieval.dense import DenseIndex
from machine import alternating_times, machine

RESULTS = Path(__file__).parent / "results" / "dense_search-cpu.json"
K = 10


def unit_vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1)


def measure(n: int, queries: torch.Tensor, dim: int, rounds: int) -> dict[str, Any]:
    """Top-10 agreement and queries/s of both backends over ``n`` random unit vectors."""
    embeddings = unit_vectors(n, dim, seed=0)
    exact, reference = DenseIndex(embeddings), DenseIndex(embeddings, backend="faiss")
    ours_scores, ours_idx = exact.search(queries, K)
    ref_scores, ref_idx = reference.search(queries, K)
    same = (ours_idx == ref_idx).float().mean().item()
    diff = (ours_scores - ref_scores).abs().max().item()
    steps = {
        "ours": lambda: exact.search(queries, K),
        "reference": lambda: reference.search(queries, K),
    }
    times = alternating_times(steps, n=1, rounds=rounds)
    qps = {name: len(queries) / statistics.median(t) for name, t in times.items()}
    ratio = qps["ours"] / qps["reference"]
    print(
        f"{n:>8,} rows: ours {qps['ours']:>10,.0f} queries/s, faiss "
        f"{qps['reference']:>10,.0f}, ratio {ratio:.2f}; top-{K} indices equal "
        f"{same:.4f}, max score diff {diff:.2g}"
    )
    return {
        "rows": n,
        "ours_queries_per_s": round(qps["ours"], 1),
        "reference_queries_per_s": round(qps["reference"], 1),
        "ratio": round(ratio, 3),
        "seconds_per_round": {name: [round(s, 4) for s in t] for name, t in times.items()},
        "top10_indices_equal": round(same, 5),
        "max_abs_score_diff": diff,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[5_000, 50_000, 200_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="5k rows, one round, no results file")
    args = p.parse_args()
    if args.quick:
        args.rows, args.rounds = [5_000], 1

    import faiss

    queries = unit_vectors(args.queries, args.dim, seed=1)
    rows = [measure(n, queries, args.dim, args.rounds) for n in args.rows]

    largest = rows[-1]
    print(
        f"ours       {largest['ours_queries_per_s']:>12,.0f} queries/s ({largest['rows']:,} rows)"
    )
    print(f"reference  {largest['reference_queries_per_s']:>12,.0f} queries/s (faiss IndexFlatIP)")
    print(f"ratio      {largest['ratio']:>12.3f}  (ours / reference)")
    if args.quick:
        return
    result = {
        "benchmark": "dense_search",
        "what": f"exact top-{K} inner-product search of {args.queries} random unit queries "
        f"(dim {args.dim}) in one call over random unit vectors, CPU, all threads",
        "dim": args.dim,
        "queries": args.queries,
        "k": K,
        "results": rows,
        "reference": f"faiss-cpu {faiss.__version__} IndexFlatIP.search",
        "machine": machine(faiss_omp_threads=faiss.omp_get_max_threads()),
        "command": "python " + " ".join(sys.argv),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
