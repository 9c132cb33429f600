"""Decoding on a GPU: our static cache and compiled decode step against ``transformers``
``generate`` with its static cache, GPT-2 124M and SmolLM2-135M, batch 1 and 32, bf16.

Both architectures are built from their configs with random weights (no download: the device
machine has no network); ``to_hf`` gives ``transformers`` the same weights. Each side continues
the same random prompts (``--prompt-len`` tokens, no padding) by ``--new-tokens`` greedy tokens,
forced to the full length: ours with :class:`~groundwork.generate.static.StaticDecoder`
(``compile=True``: ``torch.compile(mode="reduce-overhead")``, CUDA graphs), the reference with
``generate(cache_implementation="static")`` (which compiles its forward on a GPU itself). A few
untimed calls compile and record the graphs; then whole ``generate`` calls (prefill included)
alternate between the two, the median kept. Prints ``ours``, ``reference`` and ``ratio = ours /
reference`` in new tokens/s per setting, and whether the greedy tokens agree (bf16 rounding may
part them after a while: recorded, not required). Results:
``benchmarks/results/decode-gpu-cuda.json``.

    python benchmarks/decode_gpu.py            # the measurement (needs CUDA; a few minutes)
    python benchmarks/decode_gpu.py --smoke    # tiny models on the CPU, eager: checks the script

Target (DESIGN.md): >= 3x transformers' static-cache ``generate`` at batch 1 (measured on an
H100 for the reference: GPT-2 628 tokens/s, SmolLM2 334).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from groundwork.generate import GenerationConfig, StaticDecoder
from groundwork.interop.hf import to_hf
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from machine import alternating_times, machine

RESULTS = Path(__file__).parent / "results"


def build(name: str, *, smoke: bool) -> GPT | Llama:
    """``gpt2`` or ``smollm2`` with random weights (their tiny configs with ``smoke``)."""
    torch.manual_seed(0)
    if name == "gpt2":
        return GPT(GPTConfig.from_name("tiny" if smoke else "gpt2-124m"))
    return Llama(LlamaConfig.from_name("tiny" if smoke else "smollm2-135m"))


def random_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=g).tolist()


def hf_generate(hf: Any, ids: torch.Tensor, new: int) -> torch.Tensor:
    """``transformers`` greedy ``generate`` with a static cache, exactly ``new`` tokens."""
    return hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=0,
        eos_token_id=None,
        cache_implementation="static",
    )[:, ids.shape[1] :]


@torch.no_grad()
def bench(name: str, batch: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = build(name, smoke=args.smoke).to(device=device, dtype=args.dtype).eval()
    hf = to_hf(model, attn_implementation="sdpa").eval()
    vocab = model.config.vocab_size
    prompts = random_prompts(batch, args.prompt_len, vocab, seed=batch)
    ids = torch.tensor(prompts, device=device)  # (B, L)
    config = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0)
    decoder = StaticDecoder(
        model, batch, args.prompt_len + args.new_tokens, compile=not args.no_compile
    )
    outputs: dict[str, Any] = {}

    def ours() -> None:
        outputs["ours"] = decoder.generate(prompts, config).sequences

    def reference() -> None:
        outputs["reference"] = hf_generate(hf, ids, args.new_tokens).tolist()

    times = alternating_times(
        {"ours": ours, "reference": reference},
        n=1,
        rounds=args.rounds,
        warmup=args.warmup,
        cuda=device.type == "cuda",
    )
    new = batch * args.new_tokens
    tok_s = {k: new / statistics.median(v) for k, v in times.items()}
    same = sum(a == b for a, b in zip(outputs["ours"], outputs["reference"], strict=True))
    row = {
        "model": name,
        "batch": batch,
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(tok_s["ours"] / tok_s["reference"], 3),
        "rows_with_the_same_greedy_tokens": f"{same}/{batch}",
        "seconds_per_call": {k: [round(s, 4) for s in v] for k, v in times.items()},
    }
    print(
        f"{name:<8} batch {batch:>3}: ours {tok_s['ours']:>10,.0f} tok/s   reference "
        f"{tok_s['reference']:>10,.0f} tok/s   ratio {row['ratio']:.2f}   same tokens "
        f"{same}/{batch}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", nargs="+", default=["gpt2", "smollm2"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls (compile, graphs)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny models, CPU, eager, fp32")
    p.add_argument("--out", type=Path, help="result file (default results/decode-gpu-cuda.json)")
    args = p.parse_args(argv)
    args.dtype = torch.bfloat16
    if args.smoke:
        args.batches, args.prompt_len, args.new_tokens = [1, 2], 8, 8
        args.rounds, args.warmup, args.no_compile, args.dtype = 1, 1, True, torch.float32
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit(
            "decode_gpu.py measures GPU decoding and needs CUDA; this machine has none "
            "(python benchmarks/decode_gpu.py --smoke checks the script on the CPU; "
            "benchmarks/decode.py measures the CPU)"
        )
    else:
        device = torch.device("cuda")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = args.out or (None if args.smoke else RESULTS / "decode-gpu-cuda.json")
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for b in args.batches:  # batch 1 of every model first: the target is at batch 1
        for m in args.models:
            rows.append(bench(m, b, args, device))
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the models of this row are gone
            result = record(args, rows, device_name, argv, out)  # each row: a time box may stop us
    if out is not None:
        print(f"recorded in {out}")
    return result


def record(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    device_name: str,
    argv: list[str] | None,
    out: Path | None,
) -> dict[str, Any]:
    """The result so far, written to ``out`` (when given)."""
    result = {
        "benchmark": "decode-gpu",
        "what": "new tokens/s of whole greedy generate calls (prefill included), random weights",
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "dtype": str(args.dtype).removeprefix("torch."),
        "compile": not args.no_compile,
        "ours_is": "groundwork.generate.StaticDecoder(compile=True): static KV cache, "
        "torch.compile(mode='reduce-overhead') decode step",
        "reference_is": "transformers generate(cache_implementation='static'), same weights",
        "rows": rows,
        "complete": len(rows) == len(args.models) * len(args.batches),
        "machine": machine(device=device_name),
        "command": "python " + " ".join(sys.argv if argv is None else ["decode_gpu.py", *argv]),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
