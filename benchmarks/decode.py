"""Decoding speed on CPU: our cached loop against ``transformers`` ``generate``, and against itself
without a KV cache.

Two measurements, in this one process, with the same weights on both sides (fp32, greedy):

1. **ours vs transformers.** SmolLM2-135M-Instruct (``groundwork.load``) and its ``to_hf`` twin
   (``LlamaForCausalLM``, sdpa attention, default dynamic cache) continue a 32-token prompt by
   256 tokens, at batch 1 and batch 8. Both are forced to the full length (no early stop). Prints
   tokens/s and ``ratio = ours / transformers`` (higher is better).
2. **cache vs no cache.** A small GPT (``--cache-model``) generates 64, 128, 256 and 512 tokens
   with :func:`~groundwork.generate.decode.generate` and :func:`~groundwork.generate.decode.
   generate_uncached`; the time of every step is recorded and plotted against its position
   (``benchmarks/results/decode-cache.png``): flat with the cache, growing without it, so the total
   is linear vs quadratic in the number of tokens. ``transformers`` on the same GPT is timed at
   the longest length too.

Results go to ``benchmarks/results/decode-cpu.json`` with the machine, the command and the load
average (the machine may be shared: compare ratios, not absolute figures). By default torch uses
one thread: with two threads on a busy 2-core machine, every kernel waits for the slower thread
and timings swing by 10x or more.

    python benchmarks/decode.py                    # everything (a few minutes on 2 cores)
    python benchmarks/decode.py --new-tokens 64    # a quicker part 1

Targets (DESIGN.md): linear vs quadratic growth shown; >= 1.0x transformers on CPU.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import groundwork
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import decode_steps, generate
from groundwork.interop.hf import to_hf
from groundwork.models import GPT, GPTConfig, Llama

RESULTS = Path(__file__).parent / "results"


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def random_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (batch, length), generator=g).tolist()


@torch.no_grad()
def time_ours(model: nn.Module, prompts: list[list[int]], new: int) -> float:
    config = GenerationConfig(max_new_tokens=new, temperature=0)
    start = time.perf_counter()
    out = generate(model, prompts, config)
    elapsed = time.perf_counter() - start
    assert all(len(s) == new for s in out.sequences)
    return elapsed


@torch.no_grad()
def time_hf(hf: Any, prompts: list[list[int]], new: int) -> float:
    ids = torch.tensor(prompts)  # (B, T): equal lengths, no padding
    start = time.perf_counter()
    out = hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=0,
        eos_token_id=None,
    )
    elapsed = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new
    return elapsed


def ours_vs_transformers(args: argparse.Namespace) -> dict[str, Any]:
    """Part 1: SmolLM2, batch 1 and 8, ours vs ``transformers`` ``generate``."""
    pre = groundwork.load("smollm2-135m-instruct")
    model = pre.model.eval()
    assert isinstance(model, Llama)
    hf = to_hf(model, attn_implementation="sdpa").eval()
    vocab = model.config.vocab_size
    time_ours(model, random_prompts(1, 8, vocab), 4)  # warm-up
    time_hf(hf, random_prompts(1, 8, vocab), 4)
    results: dict[str, Any] = {}
    for batch in args.batches:
        prompts = random_prompts(batch, args.prompt_len, vocab, seed=batch)
        ours, ref = [], []
        for _ in range(args.rounds):  # alternate so that machine noise hits both alike
            ours.append(time_ours(model, prompts, args.new_tokens))
            ref.append(time_hf(hf, prompts, args.new_tokens))
        ours_tps = batch * args.new_tokens / min(ours)
        ref_tps = batch * args.new_tokens / min(ref)
        results[f"batch_{batch}"] = {
            "ours_tokens_per_s": round(ours_tps, 1),
            "transformers_tokens_per_s": round(ref_tps, 1),
            "ratio": round(ours_tps / ref_tps, 3),
            "ours_s": [round(t, 2) for t in ours],
            "transformers_s": [round(t, 2) for t in ref],
        }
        print(
            f"smollm2 batch {batch}: ours {ours_tps:7.1f} tok/s   transformers {ref_tps:7.1f} "
            f"tok/s   ratio {ours_tps / ref_tps:.2f}",
            flush=True,
        )
    return results


@torch.no_grad()
def step_times(
    model: nn.Module, prompts: list[list[int]], new: int, use_cache: bool
) -> list[float]:
    """Seconds spent on each step (the model call that produced that step's logits)."""
    config = GenerationConfig(max_new_tokens=new, temperature=0)
    times, last = [], time.perf_counter()
    for _ in decode_steps(model, prompts, config, use_cache=use_cache):
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def cache_vs_no_cache(args: argparse.Namespace) -> dict[str, Any]:
    """Part 2: a small GPT with and without the KV cache, per-step times, and transformers."""
    torch.manual_seed(0)
    config = GPTConfig.from_name(
        "tiny", vocab_size=2048, max_seq_len=1024, d_model=128, n_layers=4, n_heads=4
    )
    model = GPT(config).eval()
    hf = to_hf(model, attn_implementation="sdpa").eval()
    prompts = random_prompts(1, args.prompt_len, config.vocab_size)
    step_times(model, prompts, 8, use_cache=True)  # warm-up
    rows: dict[str, Any] = {}
    per_step: dict[str, list[float]] = {}
    for new in args.cache_lengths:
        cached = step_times(model, prompts, new, use_cache=True)
        uncached = step_times(model, prompts, new, use_cache=False)
        rows[str(new)] = {
            "cached_s": round(sum(cached), 3),
            "uncached_s": round(sum(uncached), 3),
            "speedup": round(sum(uncached) / sum(cached), 2),
        }
        per_step = {"cached": cached, "uncached": uncached}
        print(
            f"gpt {new:4d} new tokens: cached {sum(cached):6.2f} s   uncached "
            f"{sum(uncached):6.2f} s   speedup {sum(uncached) / sum(cached):5.1f}x",
            flush=True,
        )
    longest = max(args.cache_lengths)
    ours = min(time_ours(model, prompts, longest) for _ in range(args.rounds))
    ref = min(time_hf(hf, prompts, longest) for _ in range(args.rounds))
    print(
        f"gpt {longest} new tokens: ours {longest / ours:.0f} tok/s   transformers "
        f"{longest / ref:.0f} tok/s   ratio {ref / ours:.2f}",
        flush=True,
    )
    plot(per_step, args.prompt_len, RESULTS / "decode-cache.png")
    return {
        "model": f"GPT {config.n_layers} layers, d_model {config.d_model}, vocab "
        f"{config.vocab_size}, random weights",
        "by_new_tokens": rows,
        f"ours_vs_transformers_{longest}": {
            "ours_tokens_per_s": round(longest / ours, 1),
            "transformers_tokens_per_s": round(longest / ref, 1),
            "ratio": round(ref / ours, 3),
        },
        "ms_per_step_first_last": {
            name: [round(1e3 * ts[1], 3), round(1e3 * ts[-1], 3)] for name, ts in per_step.items()
        },
    }


def plot(per_step: dict[str, list[float]], prompt_len: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, times in per_step.items():
        positions = range(prompt_len, prompt_len + len(times))
        ax.plot(positions[1:], [1e3 * t for t in times[1:]], label=name, lw=1)  # skip prefill
    ax.set_xlabel("position of the token being generated")
    ax.set_ylabel("time per token (ms)")
    ax.set_title("Decoding with and without a KV cache (small GPT, CPU, batch 1)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256, help="part 1")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="part 1")
    p.add_argument("--cache-lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--rounds", type=int, default=1, help="repeats of each timing (best kept)")
    p.add_argument("--skip-smollm2", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: robust on a shared machine; 0: torch's default)",
    )
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    result: dict[str, Any] = {
        "benchmark": "decode",
        "command": "python " + " ".join(["benchmarks/decode.py", *sys.argv[1:]]),
        "precision": "fp32",
        "decoding": "greedy",
        "prompt_len": args.prompt_len,
    }
    if not args.skip_smollm2:
        result["smollm2_ours_vs_transformers"] = {
            "new_tokens": args.new_tokens,
            "reference": "transformers LlamaForCausalLM.generate (sdpa, dynamic cache), "
            "same weights via to_hf",
            **ours_vs_transformers(args),
        }
    result["kv_cache"] = cache_vs_no_cache(args)
    result["plot"] = "benchmarks/results/decode-cache.png"
    result["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
    }
    out = RESULTS / "decode-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
