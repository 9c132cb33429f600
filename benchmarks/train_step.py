"""Training-step throughput: our GPT against Hugging Face's ``GPT2LMHeadModel`` of the same config.

Both models get the same batch, the same precision, the same AdamW and the same loss, in this one
process; steps alternate between the two in rounds so that machine noise hits both alike. Prints
tokens/s for each and ``ratio = ours / reference`` (higher is better), and records the result in
``benchmarks/results/train_step-<device>.json``.

    python benchmarks/train_step.py                 # CPU: the demo's tiny config
    python benchmarks/train_step.py --preset gpt2-124m --batch 12 --seq 1024 --bf16 --compile

Targets (DESIGN.md): >= 1.0x on CPU with the tiny config; >= 1.3x and >= 50% MFU on one H100 with
GPT-2 124M, bf16, compiled, batch 12 x 1024.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groundwork.interop.hf import to_hf
from groundwork.models import GPT, GPTConfig
from groundwork.train import build_adamw, causal_lm_loss, mfu, peak_flops
from groundwork.train.loop import _model_flops_per_token


def step_fn(model: torch.nn.Module, hf: bool, opt: torch.optim.Optimizer, args: Any) -> Any:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x).logits if hf else model(x)
        loss = (
            F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            if hf
            else causal_lm_loss(logits, y)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round and model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    device = torch.device(args.device)
    if args.preset == "tiny":
        config = GPTConfig.from_name(
            "tiny",
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            vocab_size=args.vocab,
            max_seq_len=args.seq,
        )
    else:
        config = GPTConfig.from_name(args.preset, max_seq_len=max(args.seq, 1024))
    torch.manual_seed(0)
    ours = GPT(config).to(device)
    ref = to_hf(ours, attn_implementation="sdpa").to(device)  # same values, own parameters
    models = {"ours": (ours, False), "reference": (ref, True)}
    steps = {}
    for name, (model, is_hf) in models.items():
        model.train()
        run = model if not args.compile else torch.compile(model)
        opt = build_adamw(model, lr=1e-4)
        steps[name] = step_fn(run, is_hf, opt, args)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    y = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=gen).to(device)

    def timed(name: str, n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            steps[name](x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in steps:  # warm up (and compile)
        timed(name, 3)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # neither always goes first
        for name in order:
            times[name].append(timed(name, args.steps))
    tokens = args.batch * args.seq * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    flops = _model_flops_per_token(ours, args.seq)
    util = mfu(tok_s["ours"], flops, peak_flops(device)) if flops else None
    result = {
        "benchmark": "train_step",
        "config": {k: v for k, v in vars(config).items()},
        "batch": args.batch,
        "seq_len": args.seq,
        "precision": "bf16" if args.bf16 else "fp32",
        "compile": args.compile,
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "mfu": None if util is None else round(util, 4),
        "reference": "transformers GPT2LMHeadModel (sdpa attention), same weights and batch",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
        },
        "command": "python " + " ".join(sys.argv),
    }
    print(f"ours       {tok_s['ours']:>12,.0f} tokens/s")
    print(f"reference  {tok_s['reference']:>12,.0f} tokens/s")
    print(f"ratio      {ratio:>12.3f}  (ours / reference)")
    if util is not None:
        print(f"mfu        {util:>12.1%}")
    out = Path(__file__).parent / "results" / f"train_step-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {out}")


if __name__ == "__main__":
    main()
