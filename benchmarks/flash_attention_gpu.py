"""Flash attention on a GPU: our Triton kernels (``groundwork.nn.flash_triton``) against
``torch.nn.functional.scaled_dot_product_attention``, forward and forward + backward.

bfloat16, causal, head sizes 64 and 128, sequence lengths 1024 to 8192, with the batch chosen so
that every shape holds 16k tokens and the heads fill a width of 2048 (``B = 16384 / T``,
``H = 2048 / D``, the setting of the FlashAttention-2 paper's benchmarks).

Before timing, each shape is checked: the output and the gradients of both are compared with
float32 attention on the same (bfloat16-rounded) inputs, and ours must be no further from it
than twice SDPA's distance plus 1e-3 (the run stops otherwise); the max abs difference from
SDPA is recorded too. Timing uses CUDA events: a few warm-up calls (the first one compiles and
autotunes), then the median of ``--iters`` calls, SDPA and ours alternating per call.

TFLOP/s count the matrix products of exact causal attention: forward ``4 B H T^2 D / 2``
(``QK^T`` and ``PV``, half the scores), backward 2.5 times that (five products), so
forward + backward is 3.5 times the forward (the FlashAttention-2 convention). ``ratio = ours /
SDPA`` (higher is better) does not depend on the convention. Results go to
``benchmarks/results/flash-attention-cuda.json``.

    python benchmarks/flash_attention_gpu.py            # D 64, 128 x T 1024 .. 8192
    python benchmarks/flash_attention_gpu.py --quick    # one small shape, nothing written

Target (DESIGN.md): >= 0.8x SDPA's TFLOP/s forward + backward, exact to bf16 tolerance.
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

from machine import machine

BACKWARD_FACTOR = 2.5
"""Backward flops per forward flop (five matrix products against two)."""


def forward_flops(b: int, h: int, t: int, d: int, causal: bool = True) -> float:
    """``QK^T`` and ``PV``: ``2 * 2 * B H T^2 D``, half of it when causal."""
    return 4.0 * b * h * t * t * d / (2.0 if causal else 1.0)


def cuda_median_ms(fns: dict[str, Callable[[], Any]], iters: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each function, CUDA events around each call, the
    functions taking turns so that clock changes hit them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for name in order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[name]()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end))
    return {name: statistics.median(t) for name, t in times.items()}


def errors(
    attend: Callable[..., torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    gold: list[torch.Tensor],
) -> list[float]:
    """Max abs difference of ``attend``'s output and (dq, dk, dv) from ``gold``."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = attend(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), g)
    return [(a.float() - b).abs().max().item() for a, b in zip([out, *grads], gold, strict=True)]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def bench_shape(
    ours: Callable[..., torch.Tensor], b: int, h: int, t: int, d: int, iters: int, warmup: int
) -> dict[str, Any]:
    """Check, then time, one shape ``(B, H, T, D)``; the row of the results."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, g = (
        torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        for _ in range(4)
    )
    # float32 attention on the same rounded inputs: the answer both are judged against
    q32, k32, v32 = (x.float().requires_grad_() for x in (q, k, v))
    out32 = sdpa(q32, k32, v32)
    gold = [out32.detach(), *torch.autograd.grad(out32, (q32, k32, v32), g.float())]
    del out32, q32, k32, v32
    err_ours, err_sdpa = errors(ours, q, k, v, g, gold), errors(sdpa, q, k, v, g, gold)
    del gold
    names = ("out", "dq", "dk", "dv")
    for name, eo, es in zip(names, err_ours, err_sdpa, strict=True):
        if eo > 2 * es + 1e-3:
            raise SystemExit(
                f"D {d}, T {t}: {name} is {eo:.2e} from float32 attention, SDPA's {es:.2e}: "
                "more than twice as far (+1e-3)"
            )
    with torch.no_grad():
        diff = (ours(q, k, v).float() - sdpa(q, k, v).float()).abs().max().item()
        fwd = cuda_median_ms(
            {"ours": lambda: ours(q, k, v), "sdpa": lambda: sdpa(q, k, v)}, iters, warmup
        )
    qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))

    def step(attend: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            qg.grad = kg.grad = vg.grad = None
            attend(qg, kg, vg).backward(g)

        return run

    both = cuda_median_ms({"ours": step(ours), "sdpa": step(sdpa)}, iters, warmup)
    flops = forward_flops(b, h, t, d)
    tflops = {
        "forward": {n: flops / (ms * 1e-3) / 1e12 for n, ms in fwd.items()},
        "forward_backward": {
            n: (1 + BACKWARD_FACTOR) * flops / (ms * 1e-3) / 1e12 for n, ms in both.items()
        },
    }
    return {
        "d_head": d,
        "seq": t,
        "batch": b,
        "heads": h,
        "max_abs_diff_vs_sdpa": diff,
        "max_abs_error_vs_fp32": dict(zip(names, err_ours, strict=True)),
        "sdpa_max_abs_error_vs_fp32": dict(zip(names, err_sdpa, strict=True)),
        "ms": {"forward": fwd, "forward_backward": both},
        "tflops": {m: {n: round(x, 1) for n, x in by.items()} for m, by in tflops.items()},
        "ratio": {m: round(by["ours"] / by["sdpa"], 3) for m, by in tflops.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--tokens", type=int, default=16384, help="B * T for every shape")
    p.add_argument("--width", type=int, default=2048, help="H * D for every shape")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="T 1024, D 64, 5 iterations, no file")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            "flash_attention_gpu.py times GPU kernels and needs a CUDA GPU; this machine has "
            "none (the CPU tests run the same kernels through Triton's interpreter instead: "
            "pytest tests/nn/test_flash_triton.py)"
        )
    from groundwork.nn.flash_triton import flash_attention_triton, triton_available

    if not triton_available():
        raise SystemExit("triton is not installed: pip install 'groundwork[kernels]'")
    import triton

    if args.quick:
        args.dims, args.lengths, args.iters, args.warmup = [64], [1024], 5, 2

    def ours(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return flash_attention_triton(q, k, v, causal=True)

    header = (
        f"{'D':>4} {'T':>5} {'B':>3} {'H':>3} | {'fwd ours':>9} {'sdpa':>6} {'ratio':>6} | "
        f"{'fwd+bwd ours':>12} {'sdpa':>6} {'ratio':>6} | {'max|ours-sdpa|':>14}"
    )
    print("TFLOP/s, bf16, causal\n" + header + "\n" + "-" * len(header))
    rows = []
    for d in args.dims:
        for t in args.lengths:
            b, h = max(1, args.tokens // t), max(1, args.width // d)
            row = bench_shape(ours, b, h, t, d, args.iters, args.warmup)
            rows.append(row)
            f, fb = row["tflops"]["forward"], row["tflops"]["forward_backward"]
            print(
                f"{d:>4} {t:>5} {b:>3} {h:>3} | {f['ours']:>9.1f} {f['sdpa']:>6.1f} "
                f"{row['ratio']['forward']:>6.3f} | {fb['ours']:>12.1f} {fb['sdpa']:>6.1f} "
                f"{row['ratio']['forward_backward']:>6.3f} | {row['max_abs_diff_vs_sdpa']:>14.2e}"
            )
            torch.cuda.empty_cache()
    if args.quick:
        return
    result = {
        "benchmark": "flash-attention-gpu",
        "what": "groundwork.nn.flash_triton.flash_attention_triton vs "
        "F.scaled_dot_product_attention (default dispatch), bf16, causal",
        "flops": "forward 4 B H T^2 D / 2; forward + backward 3.5x forward",
        "timing": f"CUDA events, median of {args.iters} after {args.warmup} warm-up calls",
        "rows": rows,
        "triton": triton.__version__,
        "machine": machine(device=torch.cuda.get_device_name()),
        "command": "python " + " ".join(sys.argv),
    }
    out = Path(__file__).parent / "results" / "flash-attention-cuda.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {out}")


if __name__ == "__main__":
    main()
