"""Chapter 18 experiment: perplexity of a pruned SmolLM2-135M-Instruct against its sparsity.

Every linear layer in the 30 blocks of SmolLM2 (not the tied embedding/output matrix) is pruned
with :mod:`groundwork.compress.prune`, without any retraining:

* magnitude (per layer) and Wanda (per output row) unstructured, sparsity 10% ... 70%;
* 2:4 semi-structured with magnitude and with Wanda scores;
* Wanda with the paper's block-by-block calibration (each block's input norms measured after
  the blocks before it are pruned), at 50% and 2:4; the sweep reuses one set of norms from the
  dense model (one forward pass);
* attention heads: KV groups (3 query heads and their key/value head) or one query head from
  every group, ranked by Michel et al.'s gradient importance or by the norm of each head's
  output-projection slice.

Calibration: 32 sequences x 256 tokens of the ``wiki-sample`` train split (documents shuffled
with seed 0, concatenated). Evaluation: perplexity of the first 32 x 256 tokens of its
validation split, 32 disjoint windows of 256 tokens (:func:`groundwork.evaluate.perplexity.
token_nll`). Pruning runs in float32; evaluation in bfloat16 (twice as fast on this CPU; the
dense model's float32 perplexity is recorded next to it). Writes
``benchmarks/results/prune-smollm2.json``, ``docs/results/prune.md`` and
``docs/chapters/img/prune-sparsity.png``; a rerun keeps the runs already in the record::

    nice -n 10 python scripts/prune_runs.py            # 70 min on 2 cores shared (load ~9)
    python scripts/prune_runs.py --from-record         # the table and plot from the record
"""

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from groundwork.tables import markdown_table  # noqa: E402
from machine import machine  # noqa: E402

RECORD = ROOT / "benchmarks/results/prune-smollm2.json"
TABLE = ROOT / "docs/results/prune.md"
PLOT = ROOT / "docs/chapters/img/prune-sparsity.png"
MODEL, CORPUS = "smollm2-135m-instruct", "wiki-sample"
SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
HEAD_FRACTIONS = (1 / 9, 2 / 9, 1 / 3)  # of SmolLM2's 270 query heads: 30, 60, 90


def token_stream(texts: list[str], tokenizer: Any, n: int) -> list[int]:
    """The first ``n`` token ids of ``texts`` encoded and concatenated (blank line between)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text + "\n\n")
        if len(ids) >= n:
            return ids[:n]
    raise SystemExit(f"the texts hold {len(ids)} tokens, fewer than {n}")


def data(tokenizer: Any, args: argparse.Namespace) -> tuple[list[torch.Tensor], list[int]]:
    """Calibration batches ``(batch, seq)`` from the train split; evaluation ids from val."""
    from groundwork.corpus.documents import load_documents

    train = [d.text for d in load_documents(CORPUS, split="train")]
    random.Random(0).shuffle(train)
    calib = torch.tensor(token_stream(train, tokenizer, args.calib_seqs * args.seq))
    calib = calib.view(-1, args.batch, args.seq)  # (n_batches, B, T)
    val = [d.text for d in load_documents(CORPUS, split="val")]
    return list(calib), token_stream(val, tokenizer, args.eval_seqs * args.seq)


def perplexity(
    model: torch.nn.Module, ids: list[int], args: argparse.Namespace, dtype: str | None = None
) -> float:
    """Perplexity of ``ids`` in disjoint windows of ``args.seq`` tokens (the model is cast)."""
    from groundwork.evaluate.perplexity import token_nll

    model.to(getattr(torch, dtype or args.eval_dtype))
    total, count = token_nll(model, ids, window=args.seq, stride=args.seq, batch_size=args.batch)
    return math.exp(total / count)


def block_params(model: torch.nn.Module) -> int:
    from groundwork.compress.prune import transformer_blocks

    return sum(p.numel() for p in transformer_blocks(model)[1].parameters())


def run(args: argparse.Namespace, record: dict[str, Any]) -> None:
    from groundwork.compress.prune import (
        collect_input_norms,
        head_importance,
        prune_heads,
        prune_model,
    )
    from groundwork.pretrained import load

    pre = load(MODEL)
    dense, tok = pre.model.eval(), pre.tokenizer
    calib, val = data(tok, args)
    runs: dict[str, dict[str, Any]] = {r["name"]: r for r in record.get("runs", [])}
    record.update(
        model=MODEL,
        calibration=f"{args.calib_seqs} x {args.seq} tokens, {CORPUS} train split",
        evaluation=f"{len(val)} tokens ({args.eval_seqs} windows of {args.seq}), {CORPUS} val",
        eval_dtype=args.eval_dtype,
        block_params=block_params(dense),
    )
    cache: dict[str, Any] = {}

    def norms() -> Any:
        if "norms" not in cache:
            start = time.perf_counter()
            cache["norms"] = collect_input_norms(dense, calib)
            print(f"input norms: {time.perf_counter() - start:.0f} s", flush=True)
        return cache["norms"]

    def importance(score: str) -> Any:
        if score not in cache:
            seqs = torch.cat(calib)[: args.head_seqs]  # (head_seqs, T)
            cache[score] = head_importance(dense, score, list(seqs.split(4)))
        return cache[score]

    def done(name: str, row: dict[str, Any], model: torch.nn.Module, start: float) -> None:
        row.update(name=name, ppl=perplexity(model, val, args), seconds=time.perf_counter() - start)
        runs[name] = row
        record["runs"] = list(runs.values())
        record["machine"] = machine()
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: perplexity {row['ppl']:.2f} ({row['seconds']:.0f} s)", flush=True)

    if "dense_fp32_ppl" not in record:
        record["dense_fp32_ppl"] = perplexity(copy.deepcopy(dense), val, args, "float32")
    plan: list[tuple[str, str, float, str, bool]] = [
        ("dense", "magnitude", 0.0, "unstructured", False)
    ]
    plan += [
        (f"{m}-{s:.0%}", m, s, "unstructured", False)
        for m in ("magnitude", "wanda")
        for s in SPARSITIES
    ]
    plan += [(f"{m}-2:4", m, 0.5, "2:4", False) for m in ("magnitude", "wanda")]
    plan += [("wanda-sequential-50%", "wanda", 0.5, "unstructured", True)]
    plan += [("wanda-sequential-2:4", "wanda", 0.5, "2:4", True)]
    for name, method, sparsity, structure, sequential in plan:
        if name in runs:
            continue
        start, model = time.perf_counter(), copy.deepcopy(dense)
        calibration = dict(calibration=calib) if sequential else dict(input_norms=norms())
        report = prune_model(
            model,
            method,
            sparsity,
            structure,
            **(calibration if method == "wanda" else {}),
        )
        per_layer = report.per_layer().values()
        row = dict(kind="weights", method=method, structure=structure, target=sparsity)
        row.update(sequential=sequential, sparsity=report.sparsity)
        row.update(layer_min=min(per_layer), layer_max=max(per_layer))
        done(name, row, model, start)
    for score, unit, fraction in [
        *(("gradient", u, f) for u in ("kv_group", "query") for f in HEAD_FRACTIONS),
        *(("weight_norm", u, 2 / 9) for u in ("kv_group", "query")),
    ]:
        name = f"heads-{score}-{unit}-{fraction:.0%}"
        if name in runs:
            continue
        start, model = time.perf_counter(), copy.deepcopy(dense)
        heads = prune_heads(model, fraction, unit=unit, importance=importance(score))
        row = dict(kind="heads", score=score, unit=unit, target=fraction)
        row.update(heads_removed=sum(map(len, heads.removed)), heads=sum(heads.heads_before))
        row.update(kv_removed=sum(map(len, heads.kv_removed)))
        row.update(removed_per_layer=[len(r) for r in heads.removed])
        row.update(sparsity=1 - block_params(model) / record["block_params"])
        done(name, row, model, start)


PAPER = (
    "Sun et al. 2023, Table 3 (LLaMA-7B, WikiText): dense 5.68, magnitude 50% 17.29, "
    "Wanda 50% 7.26."
)


def write_table(record: dict[str, Any]) -> None:
    runs = {r["name"]: r for r in record["runs"]}
    dense = runs["dense"]["ppl"]

    def cells(r: dict[str, Any]) -> list[str]:
        return [f"{100 * r['sparsity']:.1f}%", f"{r['ppl']:.2f}", f"{r['ppl'] / dense:.2f}x"]

    weights = [r for r in record["runs"] if r["kind"] == "weights"]
    rows = [
        [
            "none (dense)"
            if r["name"] == "dense"
            else r["method"] + (" (block by block)" if r["sequential"] else ""),
            r["structure"],
            f"{100 * r['target']:.0f}%",
            *cells(r),
        ]
        for r in weights
    ]
    heads = [
        [
            "gradient (Michel)" if r["score"] == "gradient" else "W_O slice norm",
            "whole KV groups" if r["unit"] == "kv_group" else "query heads in every group",
            f"{r['heads_removed']} / {r['heads']}",
            str(r["kv_removed"]),
            *cells(r),
        ]
        for r in record["runs"]
        if r["kind"] == "heads"
    ]
    lines = [
        f"Model: {record['model']}; calibration: {record['calibration']}; evaluation: "
        f"{record['evaluation']}, in {record['eval_dtype']} (dense in float32: "
        f"{record['dense_fp32_ppl']:.2f}).",
        "",
        "<!-- --8<-- [start:weights] -->",
        markdown_table(
            ["scores", "structure", "target", "zeros in block linears", "perplexity", "vs dense"],
            rows,
            align="llrrrr",
        ),
        PAPER,
        "<!-- --8<-- [end:weights] -->",
        "",
        "<!-- --8<-- [start:heads] -->",
        markdown_table(
            [
                "importance",
                "unit",
                "query heads removed",
                "KV heads removed",
                "block parameters removed",
                "perplexity",
                "vs dense",
            ],
            heads,
            align="llrrrrr",
        ),
        "<!-- --8<-- [end:heads] -->",
        "",
    ]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(lines))
    print(TABLE.read_text())


def plot(record: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {r["name"]: r for r in record["runs"]}
    dense = runs["dense"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for method, colour in (("magnitude", "tab:red"), ("wanda", "tab:blue")):
        points = [dense] + [runs[f"{method}-{s:.0%}"] for s in SPARSITIES]
        ax.plot(
            [100 * p["target"] for p in points],
            [p["ppl"] for p in points],
            "o-",
            color=colour,
            label=f"{method}, unstructured",
        )
        two_four = runs[f"{method}-2:4"]
        ax.plot(50, two_four["ppl"], "s", color=colour, ms=9, mfc="none", label=f"{method}, 2:4")
    for name, marker in (("wanda-sequential-50%", "^"), ("wanda-sequential-2:4", "v")):
        if name in runs:
            ax.plot(50, runs[name]["ppl"], marker, color="tab:green", ms=8, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the block linear layers (%)")
    ax.set_ylabel("validation perplexity (log scale)")
    ax.set_title("SmolLM2-135M-Instruct, wiki-sample")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    for (score, unit), style in {
        ("gradient", "kv_group"): ("o-", "tab:purple"),
        ("gradient", "query"): ("s-", "tab:orange"),
        ("weight_norm", "kv_group"): ("x", "tab:purple"),
        ("weight_norm", "query"): ("+", "tab:orange"),
    }.items():
        points = [dense] + [
            r for r in record["runs"] if r.get("score") == score and r.get("unit") == unit
        ]
        if len(points) > 1:
            xs = [100 * p.get("heads_removed", 0) / p.get("heads", 1) for p in points]
            label = f"{'gradient' if score == 'gradient' else 'W_O norm'}, {unit}"
            bx.plot(xs, [p["ppl"] for p in points], style[0], color=style[1], label=label, ms=8)
    bx.set_yscale("log")
    bx.set_xlabel("query heads removed (%)")
    bx.set_ylabel("validation perplexity (log scale)")
    bx.set_title("attention-head pruning")
    bx.grid(alpha=0.3, which="both")
    bx.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calib-seqs", type=int, default=32)
    parser.add_argument("--eval-seqs", type=int, default=32)
    parser.add_argument("--head-seqs", type=int, default=8, help="for gradient importance")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--fresh", action="store_true", help="ignore the runs in the record")
    parser.add_argument("--from-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() and not args.fresh else {}
    if not args.from_record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        run(args, record)
    write_table(record)
    plot(record)


if __name__ == "__main__":
    main()
