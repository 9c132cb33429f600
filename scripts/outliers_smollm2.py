r"""Chapter 18: activation outliers in SmolLM2-135M, and what int8 activations cost with and without
LLM.int8()'s decomposition and SmoothQuant's smoothing.

1. Runs 16 sequences of 256 tokens of held-out Wikipedia text (``wiki-sample``, val split)
   through the float model and records, at the input of every linear layer, the largest
   ``|x|`` and the feature dimensions with ``|x| >= 6`` (LLM.int8()'s threshold).
2. Measures the perplexity of the first 8 of those sequences under: float; int8 weights alone
   (W8A16), the floor every W8A8 scheme shares; W8A8 (int8 weights per output channel, int8
   activations per token or per tensor with static calibrated scales) without smoothing and
   with SmoothQuant at alpha 0.5 and 0.8 (calibrated on 4 random 256-token windows of the train
   split), and with SmoothQuant also smoothing ``down_proj`` through ``up_proj``
   (``smooth_down_proj``); LLM.int8() (threshold 6) against vector-wise int8 (W8A8 per token,
   the same thing as its threshold at infinity).

Writes ``benchmarks/results/outliers-smollm2.json`` and
``docs/chapters/img/activation-outliers.png`` (per layer: max ``|x|`` and the count of outlier
dimensions at each linear layer's input)::

    python scripts/outliers_smollm2.py                # 9 CPU-minutes (23 min on 2 busy cores)
    python scripts/outliers_smollm2.py --from-record  # redraw the plot from the record
"""

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from groundwork import pretrained  # noqa: E402
from groundwork.compress.calibration import calibration_batches  # noqa: E402
from groundwork.compress.llm_int8 import (  # noqa: E402
    apply_llm_int8,
    outlier_statistics,
    shared_outlier_dims,
)
from groundwork.compress.quantize import quantize_model_rtn  # noqa: E402
from groundwork.compress.smoothquant import apply_smoothquant, quantize_w8a8  # noqa: E402
from groundwork.corpus import load_documents  # noqa: E402
from machine import machine  # noqa: E402

RECORD = ROOT / "benchmarks/results/outliers-smollm2.json"
PLOT = ROOT / "docs/chapters/img/activation-outliers.png"
MODEL = "smollm2-135m-instruct"
SEQ_LEN, N_STATS, N_EVAL, N_CALIB, BATCH = 256, 16, 8, 4, 4
THRESHOLD = 6.0
ROLES = {  # the linear layers whose inputs differ (q, k and v read the same tensor)
    "self_attn.q_proj": "q/k/v input (after input_layernorm)",
    "self_attn.o_proj": "o_proj input (attention output)",
    "mlp.gate_proj": "gate/up input (after post_attention_layernorm)",
    "mlp.down_proj": "down_proj input (SwiGLU hidden)",
}


def heldout_rows(tokenizer: Any, n_rows: int) -> torch.Tensor:
    """``(n_rows, SEQ_LEN)`` token ids: the ``wiki-sample`` val documents joined by
    end-of-text, from the start."""
    ids: list[int] = []
    eot = tokenizer.eot_id
    for doc in load_documents("wiki-sample", split="val"):
        ids += tokenizer.encode(doc.text) + ([eot] if eot is not None else [])
        if len(ids) >= n_rows * SEQ_LEN:
            break
    if len(ids) < n_rows * SEQ_LEN:
        raise SystemExit(f"wiki-sample val holds only {len(ids)} tokens")
    return torch.tensor(ids[: n_rows * SEQ_LEN]).reshape(n_rows, SEQ_LEN)


def batches(rows: torch.Tensor) -> list[torch.Tensor]:
    return list(rows.split(BATCH))


@torch.no_grad()
def perplexity(model: nn.Module, rows: torch.Tensor) -> float:
    nll, count = 0.0, 0
    for batch in batches(rows):
        logits = model(batch)[:, :-1]  # (B, T-1, V)
        targets = batch[:, 1:]  # (B, T-1)
        nll += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        count += targets.numel()
    return math.exp(nll / count)


def per_layer_series(layers_out: dict[str, Any], n_layers: int) -> dict[str, dict[str, list]]:
    """For each role in :data:`ROLES`: max ``|x|`` and outlier-dim count, layer by layer."""
    return {
        role: {
            key: [layers_out[f"model.layers.{i}.{role}"][key] for i in range(n_layers)]
            for key in ("max_abs", "outlier_dims")
        }
        for role in ROLES
    }


def plot(layers_out: dict[str, Any], n_layers: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_layer = per_layer_series(layers_out, n_layers)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    layers = list(range(n_layers))
    for role, label in ROLES.items():
        ax.plot(layers, per_layer[role]["max_abs"], marker="o", ms=3, label=label)
        bx.plot(layers, per_layer[role]["outlier_dims"], marker="o", ms=3, label=label)
    ax.axhline(THRESHOLD, color="grey", ls="--", lw=1)
    ax.set(yscale="log", xlabel="layer", ylabel=f"max |x| over {N_STATS * SEQ_LEN} tokens")
    ax.set_title("Largest activation at each linear layer's input")
    bx.set_yscale("symlog", linthresh=1)
    bx.set(xlabel="layer", ylabel=f"feature dims with |x| >= {THRESHOLD:g}")
    bx.set_title("Outlier feature dims (LLM.int8()'s float columns)")
    bx.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"SmolLM2-135M-Instruct on {N_STATS} × {SEQ_LEN} tokens of Wikipedia", fontsize=11)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    plt.close(fig)


def main() -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    loaded = pretrained.load(MODEL)
    base, tokenizer = loaded.model, loaded.tokenizer
    n_layers = len(base.model.layers)
    stats_rows = heldout_rows(tokenizer, N_STATS)  # (16, 256)
    eval_rows = stats_rows[:N_EVAL]  # (8, 256)
    calib_rows = torch.cat(calibration_batches(tokenizer, N_CALIB, SEQ_LEN))  # (4, 256)

    # 1. Where the outliers are.
    stats = outlier_statistics(base, batches(stats_rows), THRESHOLD)
    layers_out: dict[str, Any] = {}
    for name, s in stats.items():
        layers_out[name] = {
            "in_features": s.in_features,
            "max_abs": round(s.max_abs, 2),
            "outlier_dims": len(s.outlier_dims()),
            "systematic_dims": len(s.systematic_dims()),
            "top_dims": torch.topk(s.channel_max, 3).indices.tolist(),
        }
    per_layer = per_layer_series(layers_out, n_layers)
    d_model = base.config.d_model
    width = {r: layers_out[f"model.layers.0.{r}"]["in_features"] for r in ROLES}
    shared = shared_outlier_dims(stats, d_model, 0.25)
    print(f"outlier stats done ({time.perf_counter() - started:.0f}s)", flush=True)

    # 2. What int8 activations cost.
    calib = batches(calib_rows)
    variants: dict[str, Callable[[nn.Module], nn.Module]] = {
        "float": lambda m: m,
        "int8 weights only (w8a16)": lambda m: quantize_model_rtn(m, "int8"),
        "w8a8 per-token (= vector-wise int8)": lambda m: quantize_w8a8(m, "per-token"),
        "llm.int8 (threshold 6)": lambda m: apply_llm_int8(m, THRESHOLD),
        "w8a8 per-tensor static": lambda m: _static_plain(m, calib),
    }
    for act, down in (("per-token", False), ("per-tensor", False), ("per-tensor", True)):
        for alpha in (0.5, 0.8):
            label = f"smoothquant a={alpha} w8a8 {act}{' static' if act == 'per-tensor' else ''}"
            label += " +down_proj" if down else ""
            variants[label] = lambda m, a=alpha, q=act, d=down: apply_smoothquant(  # type: ignore[misc]
                m, calib, alpha=a, act_quant=q, smooth_down_proj=d
            )
    ppl: dict[str, float] = {}
    for label, transform in variants.items():
        model = transform(copy.deepcopy(base))
        ppl[label] = round(perplexity(model, eval_rows), 3)
        print(
            f"{label:45s} ppl {ppl[label]:.3f} ({time.perf_counter() - started:.0f}s)", flush=True
        )
        del model

    plot(layers_out, n_layers)
    record = {
        "model": MODEL,
        "note": "weights are the Q4_1 GGUF dequantised to float32; 'float' is that model",
        "text": f"wiki-sample: {N_STATS} x {SEQ_LEN} val tokens (outlier stats), the first "
        f"{N_EVAL} of them (perplexity), "
        f"{N_CALIB} random {SEQ_LEN}-token windows of the train split (calibration_batches, "
        "seed 0) for SmoothQuant's calibration",
        "threshold": THRESHOLD,
        "summary": {
            "linear_inputs": len(stats),
            "with_outlier_dims": sum(1 for s in stats.values() if s.outlier_dims()),
            "max_abs": {r: max(per_layer[r]["max_abs"]) for r in ROLES},
            "outlier_dims_total": {r: int(sum(per_layer[r]["outlier_dims"])) for r in ROLES},
            "float_feature_fraction": {  # the share of LLM.int8()'s columns computed in float
                r: round(sum(per_layer[r]["outlier_dims"]) / (n_layers * width[r]), 4)
                for r in ROLES
            },
            f"dims_shared_by_25pct_of_{d_model}_wide_inputs": shared,
        },
        "perplexity": ppl,
        "layers": layers_out,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("summary", "perplexity", "seconds")}, indent=1))


def _static_plain(model: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    """Plain W8A8 with static per-tensor activation scales calibrated on ``calib``."""
    from groundwork.compress.quantize import quantizable_linears
    from groundwork.compress.smoothquant import activation_absmax

    act = activation_absmax(model, calib, quantizable_linears(model))
    return quantize_w8a8(model, "per-tensor", act)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--from-record", action="store_true", help="only redraw the plot from the JSON record"
    )
    if parser.parse_args().from_record:
        saved = json.loads(RECORD.read_text())
        plot(saved["layers"], sum(1 for n in saved["layers"] if n.endswith(".q_proj")))
    else:
        main()
