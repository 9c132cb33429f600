"""Training step on a GPU: our GPT-2 124M against ``transformers``' ``GPT2LMHeadModel``, both
compiled, bf16, batch 12 x 1024, in this one process.

Both sides run what the engine runs (``groundwork.train.engine``): the model *and* the loss in
one ``torch.compile``'d function, bf16 autocast over fp32 master weights, the backward pass,
clipping by the global norm (no host sync), fused AdamW; the same weights (``to_hf``), the same
batch. Steps alternate between the two in rounds (the median of each is kept), timed with CUDA
synchronisation around each round only. Prints ``ours``, ``reference`` and ``ratio = ours /
reference`` in tokens/s, and the MFU of each: model FLOPs per token
(:func:`~groundwork.train.flops.model_flops_per_token`, 6N plus attention) times tokens/s over
the device's dense bf16 peak (:data:`~groundwork.train.flops.PEAK_FLOPS_BF16`; "n/a" for a
device not in the table). Results: ``benchmarks/results/train-gpu-cuda.json``.

    python benchmarks/train_gpu.py             # the measurement (needs CUDA; about 2 minutes)
    python benchmarks/train_gpu.py --smoke     # a tiny GPT on the CPU, eager: checks the script

Targets (DESIGN.md): >= 1.3x transformers compiled and >= 50% MFU on an H100/H200.
"""

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groundwork.interop.hf import to_hf
from groundwork.models import GPT, GPTConfig
from groundwork.train import build_adamw, causal_lm_loss
from groundwork.train.flops import mfu, model_flops_per_token, peak_flops
from groundwork.train.optim import clip_grad_norm
from machine import alternating_times, machine

RESULTS = Path(__file__).parent / "results"


def make_step(
    model: torch.nn.Module, *, hf: bool, compile: bool, bf16: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step on ``(x, y)``: compiled forward + loss, backward, clip, AdamW."""

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            if hf:
                logits = model(x).logits  # (B, T, V)
                return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            return causal_lm_loss(model(x), y)

    loss_fn = torch.compile(loss_of) if compile else loss_of
    opt = build_adamw(model, lr=1e-4)  # fused on CUDA

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss_fn(x, y).backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--preset", default="gpt2-124m")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (the compile) per model")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--smoke", action="store_true", help="tiny GPT, CPU, eager, fp32, 1 round")
    p.add_argument("--out", type=Path, help="result file (default results/train-gpu-cuda.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.batch, args.seq, args.steps, args.rounds, args.warmup = (
            "tiny",
            2,
            32,
            2,
            1,
            1,
        )
        args.no_compile, args.fp32 = True, True
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit(
            "train_gpu.py measures a GPU training step and needs CUDA; this machine has none "
            "(python benchmarks/train_gpu.py --smoke checks the script on the CPU; "
            "benchmarks/train_step.py measures the CPU)"
        )
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
    compile, bf16 = not args.no_compile, not args.fp32

    config = GPTConfig.from_name(args.preset, max_seq_len=max(args.seq, 32))
    torch.manual_seed(0)
    ours = GPT(config).to(device).train()
    ref = to_hf(ours, attn_implementation="sdpa").to(device).train()  # same values
    steps = {
        "ours": make_step(ours, hf=False, compile=compile, bf16=bf16),
        "reference": make_step(ref, hf=True, compile=compile, bf16=bf16),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    y = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    calls = {name: (lambda s=s: s(x, y)) for name, s in steps.items()}
    times = alternating_times(
        calls, n=args.steps, rounds=args.rounds, warmup=args.warmup, cuda=device.type == "cuda"
    )
    tokens = args.batch * args.seq * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    flops = model_flops_per_token(ours, args.seq)
    peak = peak_flops(device)
    util = {name: mfu(v, flops, peak) if flops else None for name, v in tok_s.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "benchmark": "train-gpu",
        "model": args.preset,
        "batch": args.batch,
        "seq_len": args.seq,
        "precision": "bf16 autocast, fp32 weights" if bf16 else "fp32",
        "compile": compile,
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "ours_mfu": None if util["ours"] is None else round(util["ours"], 4),
        "reference_mfu": None if util["reference"] is None else round(util["reference"], 4),
        "flops_per_token": flops,
        "peak_flops": peak,
        "seconds_per_round": {k: [round(s, 4) for s in v] for k, v in times.items()},
        "reference_is": "transformers GPT2LMHeadModel (sdpa), same weights, batch and step",
        "machine": machine(device=device_name),
        "command": "python " + " ".join(sys.argv if argv is None else ["train_gpu.py", *argv]),
    }
    print(f"{args.preset}, batch {args.batch} x {args.seq}, {result['precision']}, {device_name}")
    for name in ("ours", "reference"):
        u = util[name]
        print(
            f"{name:<10} {tok_s[name]:>12,.0f} tokens/s   MFU "
            + ("n/a (device not in the peak table)" if u is None else f"{u:.1%}")
        )
    print(f"ratio      {ratio:>12.3f}  (ours / reference)")
    out = args.out or (None if args.smoke else RESULTS / "train-gpu-cuda.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"recorded in {out}")
    return result


if __name__ == "__main__":
    main()
