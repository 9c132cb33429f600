"""Chapter 18 experiment: post-training quantisation of SmolLM2-135M, held-out perplexity against
bits per weight.

The model is ``groundwork.load("smollm2-135m-instruct")``. Our copy of its weights comes from a
Q4_1 GGUF file dequantised to float32, so the "fp32" baseline is already a 4-bit model written
out in floats: 8-bit methods are nearly lossless against it, and 4-bit grids with 32-column
groups can partly line up with the grid it came from. Every method quantises the linear layers
of the 30 blocks (210 matrices, 106M of the 134.5M parameters); the tied embedding/output matrix
and the norms stay float (except in the GGUF files, which follow llama.cpp).

Data: ``wiki-sample`` (Wikipedia articles). Calibration: ``--n-calibration`` random windows of
512 tokens from the train split (:func:`groundwork.compress.calibration.calibration_batches`,
seed 0); evaluation: the first ``--n-heldout`` x 512 tokens of the validation split, a disjoint
set of articles, scored as disjoint windows (GPTQ's protocol,
:func:`groundwork.compress.calibration.perplexity`).

Methods (``--runs``; default all, in this order): float; RTN int8 per channel; RTN int4 with
groups of 32 and 64 columns and per channel; NF4 (blocks of 64); GPTQ int4 g64 and per channel;
AWQ int4 g64; RTN, GPTQ and AWQ at int3 g64; llama.cpp's Q8_0 and Q4_0 (written by
:mod:`groundwork.interop.gguf_writer`, read back by our GGUF reader); LLM.int8() and
SmoothQuant W8A8 when their modules import; our W8A8 and W4A8 integer dot-product layers
(:mod:`groundwork.compress.int_dot`). Groups of 128, the usual int4 setting, do not divide
SmolLM2's width (576 = 4.5 x 128), so g64 stands in for them. Results are appended to
``benchmarks/results/quantize-smollm2.json`` as each run finishes (a rerun skips finished runs;
``--fresh`` starts over); the table goes to ``docs/results/quantize.md`` and the plot to
``docs/chapters/img/quantize-ppl.png``. Run::

    nohup python scripts/quantize_runs.py > /tmp/fm/quantize-runs.log 2>&1 &
"""

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from groundwork import pretrained  # noqa: E402
from groundwork.compress.awq import quantize_model_awq  # noqa: E402
from groundwork.compress.calibration import (  # noqa: E402
    calibration_batches,
    heldout_tokens,
    perplexity,
)
from groundwork.compress.gptq import quantize_model_gptq  # noqa: E402
from groundwork.compress.quantize import quantizable_linears, quantize_model_rtn  # noqa: E402
from machine import machine  # noqa: E402

MODEL = "smollm2-135m-instruct"
JSON = ROOT / "benchmarks" / "results" / "quantize-smollm2.json"
TABLE = ROOT / "docs" / "results" / "quantize.md"
PLOT = ROOT / "docs" / "chapters" / "img" / "quantize-ppl.png"
SEQ_LEN = 512
FP16 = 16  # bits of a stored scale or zero point

# The literature anchor (GPTQ, Frantar et al. 2022): OPT-125M on WikiText-2 at 4 bits.
ANCHOR = {"fp16": 27.65, "RTN 4-bit": 30.49, "GPTQ 4-bit": 29.39}


def linear_bits(model: nn.Module, per_weight: Callable[[nn.Linear], float]) -> float:
    """Bits per weight averaged over the quantised linears (each layer's own constants)."""
    layers = quantizable_linears(model).values()
    total = sum(per_weight(m) * m.weight.numel() for m in layers)
    return total / sum(m.weight.numel() for m in layers)


def grid_bits(bits: int, group: int | None, symmetric: bool) -> Callable[[nn.Linear], float]:
    """Code bits plus fp16 scale (and zero point) per group, or per row when ``group`` is
    None."""
    per_group = FP16 * (1 if symmetric else 2)
    return lambda m: bits + per_group / (group or m.in_features)


NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # double quantisation: 8-bit constants, fp32 per 256


# ---- the methods: each maps (float model, calibration, report) to a quantised model -----------

Method = Callable[[nn.Module, list[torch.Tensor], dict[str, Any]], nn.Module]


def rtn(bits: int, group: int | None, symmetric: bool = False) -> Method:
    scheme = {8: "int8", 4: "int4"}.get(bits)

    def run(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
        if scheme is not None:
            return quantize_model_rtn(
                model,
                scheme,  # type: ignore[arg-type]
                symmetric=symmetric,
                granularity="group" if group else "channel",
                group_size=group,
            )
        from groundwork.compress.awq import rtn as round_weight

        with torch.no_grad():
            for layer in quantizable_linears(model).values():
                layer.weight.copy_(round_weight(layer.weight, bits, group, symmetric))
        return model

    return run


def nf4(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
    return quantize_model_rtn(model, "nf4", group_size=64)


def gptq(bits: int, group: int | None, sink_weight: float = 1.0, act_order: bool = False) -> Method:
    def run(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
        errors: dict[str, float] = {}
        quantize_model_gptq(
            model,
            cal,
            bits,
            group,
            true_sequential=True,
            act_order=act_order,
            sink_weight=sink_weight,
            on_layer=lambda name, r: errors.__setitem__(name, r.error),
        )
        report["layer_error_estimate_sum"] = sum(errors.values())
        return model

    return run


def awq(bits: int, group: int) -> Method:
    def run(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
        chosen: dict[str, Any] = {}
        quantize_model_awq(model, cal, bits, group, report=chosen)
        report["alpha"] = {b: {g: v["alpha"] for g, v in gs.items()} for b, gs in chosen.items()}
        return model

    return run


def gguf(qtype: str) -> Method:
    def run(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
        from groundwork.interop.gguf import llama_from_gguf
        from groundwork.interop.gguf_writer import export_llama_gguf

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"smollm2-{qtype}.gguf"
            types = export_llama_gguf(model, TOKENIZER[0], path, qtype)  # type: ignore[arg-type]
            report["file_bytes"] = path.stat().st_size
            report["tensor_types"] = sorted(set(types.values()))
            return llama_from_gguf(path).eval()

    return run


def llm_int8(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
    from groundwork.compress.llm_int8 import apply_llm_int8

    return apply_llm_int8(model, threshold=6.0)


def int_dot(scheme: str) -> Method:
    """Our w8a8/w4a8 layers (groups of 32, activations to 8 bits per group of 32, the integer
    dot-product kernel) on the block linears; the head stays float like every other run."""

    def run(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
        from groundwork.compress.int_dot import kernel_isa, quantize_int_dot

        report["kernel"] = kernel_isa()
        return quantize_int_dot(model, scheme, head="float")  # type: ignore[arg-type]

    return run


def smoothquant(model: nn.Module, cal: list[torch.Tensor], report: dict[str, Any]) -> nn.Module:
    from groundwork.compress.smoothquant import apply_smoothquant

    return apply_smoothquant(model, cal, alpha=0.5)


TOKENIZER: list[Any] = []  # the loaded tokenizer, for the GGUF writer

# name: (label, method, bits-per-weight function or None for the float baseline, family)
RUNS: dict[str, tuple[str, Method | None, Callable[[nn.Linear], float] | None, str]] = {
    "fp32": ("float32 (dequantised Q4_1 GGUF)", None, None, "float"),
    "rtn-int8": (
        "RTN int8, per channel (absmax)",
        rtn(8, None, True),
        grid_bits(8, None, True),
        "RTN",
    ),
    "rtn-int4-g64": ("RTN int4, g64", rtn(4, 64), grid_bits(4, 64, False), "RTN"),
    "gptq-int4-g64": ("GPTQ int4, g64", gptq(4, 64), grid_bits(4, 64, False), "GPTQ"),
    "gptq-int4-g64-actorder": (
        "GPTQ int4, g64, act-order",
        gptq(4, 64, act_order=True),
        grid_bits(4, 64, False),
        "GPTQ, act-order",
    ),
    "gptq-int4-g64-sink512": (
        "GPTQ int4, g64, first token x512 in H",
        gptq(4, 64, 512.0),
        grid_bits(4, 64, False),
        "GPTQ, sink-weighted",
    ),
    "awq-int4-g64": (
        "AWQ int4, g64 (scales + clipping)",
        awq(4, 64),
        grid_bits(4, 64, False),
        "AWQ",
    ),
    "rtn-int4-channel": ("RTN int4, per channel", rtn(4, None), grid_bits(4, None, False), "RTN"),
    "gptq-int4-channel": (
        "GPTQ int4, per channel",
        gptq(4, None),
        grid_bits(4, None, False),
        "GPTQ",
    ),
    "gptq-int4-channel-actorder": (
        "GPTQ int4, per channel, act-order",
        gptq(4, None, act_order=True),
        grid_bits(4, None, False),
        "GPTQ, act-order",
    ),
    "rtn-int3-g64": ("RTN int3, g64", rtn(3, 64), grid_bits(3, 64, False), "RTN"),
    "gptq-int3-g64": ("GPTQ int3, g64", gptq(3, 64), grid_bits(3, 64, False), "GPTQ"),
    "gptq-int3-g64-actorder": (
        "GPTQ int3, g64, act-order",
        gptq(3, 64, act_order=True),
        grid_bits(3, 64, False),
        "GPTQ, act-order",
    ),
    "rtn-int4-g32": ("RTN int4, g32", rtn(4, 32), grid_bits(4, 32, False), "RTN"),
    "nf4": ("NF4, blocks of 64 (double quantisation)", nf4, lambda m: NF4_BITS, "NF4"),
    "gguf-q8_0": ("llama.cpp Q8_0 (our GGUF writer)", gguf("q8_0"), lambda m: 8.5, "GGUF"),
    "gguf-q4_0": ("llama.cpp Q4_0 (our GGUF writer)", gguf("q4_0"), lambda m: 4.5, "GGUF"),
    "llm-int8": (
        "LLM.int8() (threshold 6)",
        llm_int8,
        grid_bits(8, None, True),
        "int8 activations",
    ),
    "smoothquant-w8a8": (
        "SmoothQuant W8A8 (alpha 0.5, per-token activations)",
        smoothquant,
        grid_bits(8, None, True),
        "int8 activations",
    ),
    "w8a8": (
        "W8A8 g32, our integer kernel (activations 8-bit per 32)",
        int_dot("w8a8"),
        grid_bits(8, 32, False),
        "int8 activations",
    ),
    "w4a8": (
        "W4A8 g32, our integer kernel (activations 8-bit per 32)",
        int_dot("w4a8"),
        grid_bits(4, 32, False),
        "int8 activations",
    ),
}


def model_megabytes(model: nn.Module, bpw: float | None) -> float:
    """Storage: the quantised linears at ``bpw`` bits per weight, every other parameter in
    fp16; the float baseline at 32 bits for everything."""
    params = sum(p.numel() for p in model.parameters())
    if bpw is None:
        return params * 4 / 1e6
    linear = sum(m.weight.numel() for m in quantizable_linears(model).values())
    return (linear * bpw + (params - linear) * FP16) / 8 / 1e6


def load_record(fresh: bool) -> dict[str, Any]:
    if JSON.exists() and not fresh:
        return json.loads(JSON.read_text())
    return {"runs": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--n-calibration", type=int, default=32)
    parser.add_argument("--n-heldout", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = load_record(args.fresh)
    pre = pretrained.load(MODEL)
    base, tokenizer = pre.model, pre.tokenizer
    TOKENIZER.append(tokenizer)
    cal = calibration_batches(tokenizer, args.n_calibration, SEQ_LEN, seed=0, batch_size=8)
    held = heldout_tokens(tokenizer, args.n_heldout, SEQ_LEN)
    record["setup"] = {
        "model": MODEL,
        "weights": "Q4_1 GGUF dequantised to float32 (the 'fp32' baseline)",
        "data": "wiki-sample (Wikipedia): calibration from the train split, evaluation from val",
        "calibration": f"{args.n_calibration} x {SEQ_LEN} tokens, random windows, seed 0",
        "heldout": f"{args.n_heldout} x {SEQ_LEN} tokens, disjoint windows, "
        f"{args.n_heldout * (SEQ_LEN - 1)} scored",
        "quantised": f"{len(quantizable_linears(base))} linear layers in the blocks, "
        f"{sum(m.weight.numel() for m in quantizable_linears(base).values()):,} weights; "
        "tied embedding/head and norms float",
        "gptq": "true-sequential, act-order where the label says so, damp 0.01, "
        "lazy blocks of 128, asymmetric",
        "awq": "alpha grid of 20, v->o pair skipped (GQA), clipping search on, asymmetric",
        "anchor": {
            "model": "OPT-125M",
            "data": "WikiText-2",
            "source": "GPTQ (Frantar et al. 2022)",
            **ANCHOR,
        },
    }
    record["machine"] = machine()
    for name in args.runs:
        label, method, bits_fn, family = RUNS[name]
        if name in record["runs"]:
            print(f"{name}: done before, skipped", flush=True)
            continue
        report: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            model = base if method is None else method(copy.deepcopy(base), cal, report)
        except ImportError as e:
            print(f"{name}: not available ({e})", flush=True)
            record.setdefault("unavailable", {})[name] = str(e)
            continue
        quantize_s = time.perf_counter() - start
        start = time.perf_counter()
        ppl = perplexity(model, held)
        eval_s = time.perf_counter() - start
        bpw = None if bits_fn is None else linear_bits(base, bits_fn)
        record["runs"][name] = {
            "label": label,
            "family": family,
            "perplexity": ppl,
            "bits_per_weight": 32.0 if bpw is None else bpw,
            "size_mb": model_megabytes(base, bpw),
            "quantize_s": quantize_s,
            "eval_s": eval_s,
            **report,
        }
        print(
            f"{name}: ppl {ppl:.3f}, {record['runs'][name]['bits_per_weight']:.3f} bits/weight, "
            f"quantise {quantize_s:.0f} s, eval {eval_s:.0f} s",
            flush=True,
        )
        del model
        JSON.parent.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(record, indent=2) + "\n")
    write_table(record)
    plot(record)


# Which row of benchmarks/results/quantized-decode-cpu.json (section 18.7) runs each format's
# codes through a real kernel; the other methods are simulated (float weights on the grid).
DECODE_JSON = ROOT / "benchmarks" / "results" / "quantized-decode-cpu.json"
DECODE_ROWS = {
    "fp32": "ours fp32",
    "rtn-int8": "ours int8",
    "rtn-int4-g32": "ours int4 g32",
    "gguf-q8_0": "llama.cpp Q8_0",
    "gguf-q4_0": "llama.cpp Q4_0",
    "w8a8": "ours w8a8 fused",
    "w4a8": "ours w4a8 fused",
}


def decode_speeds() -> dict[str, float]:
    """Batch-1 decode tokens/s per run name, from the section-18.7 benchmark (if recorded)."""
    if not DECODE_JSON.exists():
        return {}
    rows = json.loads(DECODE_JSON.read_text())["rows"]
    return {n: rows[r]["tokens_per_s"] for n, r in DECODE_ROWS.items() if r in rows}


def write_table(record: dict[str, Any]) -> None:
    runs = record["runs"]
    speeds = decode_speeds()
    base = runs.get("fp32", {}).get("perplexity")
    setup = record["setup"]
    lines = [
        "<!-- --8<-- [start:quantize] -->",
        "| method | bits / weight (linears) | size (MB) | held-out perplexity | vs float "
        "| decode tokens/s |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, r in ((n, runs[n]) for n in RUNS if n in runs):
        speed = f"{speeds[name]:.1f}" if name in speeds else "—"
        delta = "" if base is None else f"{r['perplexity'] - base:+.2f}"
        size = f"{r['size_mb']:.0f}"
        if "file_bytes" in r:
            size += f" (file {r['file_bytes'] / 1e6:.0f})"
        lines.append(
            f"| {r['label']} | {r['bits_per_weight']:.2f} | {size} "
            f"| {r['perplexity']:.2f} | {delta} | {speed} |"
        )
    lines += [
        "<!-- --8<-- [end:quantize] -->",
        "",
        f"SmolLM2-135M-Instruct ({setup['weights']}); {setup['quantised']}. Held-out text: "
        f"{setup['heldout']} of {setup['data']}; calibration: {setup['calibration']}. "
        f"GPTQ: {setup['gptq']}. AWQ: {setup['awq']}. Sizes count the quantised linears at the "
        "bits shown and every other parameter in fp16 (the float row: all at 32 bits); the GGUF "
        "rows also give the real file size (llama.cpp quantises the embedding too: Q8_0). "
        "Decode: batch-1 greedy tokens/s on one CPU thread "
        "(`benchmarks/quantized_decode.py`, chapter 18.7; machine in its JSON) for the formats "
        "that run on a real kernel; our int8 and int4 rows compute in bf16, and our W8A8/W4A8 "
        "rows on 8-bit activations with the fused C++ decoding step, all with an 8-bit head in "
        "the decode benchmark. "
        "The other rows are simulated (float weights holding grid values); GPTQ's and AWQ's "
        "int4 codes fit the same int4 kernel as RTN's.",
        "",
        "Literature anchor (GPTQ, Frantar et al. 2022; OPT-125M on WikiText-2, 4 bits): "
        f"fp16 {ANCHOR['fp16']}, RTN {ANCHOR['RTN 4-bit']}, GPTQ {ANCHOR['GPTQ 4-bit']}.",
        "",
    ]
    for name, why in record.get("unavailable", {}).items():
        lines.append(f"Not run: {name} ({why}).")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")
    print(TABLE.read_text())


def plot(record: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = record["runs"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    markers = {"RTN": "o", "GPTQ": "s", "AWQ": "^", "NF4": "D", "GGUF": "P"}
    markers["int8 activations"] = "X"
    markers["GPTQ, act-order"] = "v"
    markers["GPTQ, sink-weighted"] = "*"
    for family, marker in markers.items():
        points = [
            (r["bits_per_weight"], r["perplexity"], n)
            for n, r in runs.items()
            if r["family"] == family
        ]
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        ax.scatter(xs, ys, marker=marker, s=50, label=family, zorder=3)
        for x, y, n in points:
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if "fp32" in runs:
        ax.axhline(runs["fp32"]["perplexity"], color="k", ls="--", lw=1, label="float32")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight of the quantised linear layers (scales included)")
    ax.set_ylabel("held-out perplexity (wiki-sample), log scale")
    ax.set_title("SmolLM2-135M: post-training quantisation")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    plt.close(fig)


if __name__ == "__main__":
    main()
