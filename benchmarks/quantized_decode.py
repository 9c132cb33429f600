"""Batch-1 decoding speed on CPU with weight-only quantised weights: our SmolLM2-135M in fp32, bf16,
int8 and int4 against ``transformers`` (fp32) and llama.cpp (Q8_0, Q4_0), in this one process.

Every contender continues the same ~32-token prompt by ``--new-tokens`` tokens, greedily, at batch
1, forced to the full length (no early stop); the time includes the prefill. Ours:

* ``fp32``, ``bf16``: :func:`groundwork.generate.generate` on the model from
  ``groundwork.load("smollm2-135m-instruct")`` (bf16: the same model ``.to(torch.bfloat16)``);
* ``int8``, ``int4``: the same after :func:`groundwork.compress.weight_only.quantize_weights` (int8
  per output channel; int4 in groups of ``--group-size``; the output head int8 in both, as
  llama.cpp's Q4_0 keeps its logits matrix at Q8_0), on the bf16 model (``--quantize-dtype``):
  both kernels compute in bf16, so a bf16 model spares a cast at every layer.
* ``w8a8``, ``w4a8``: the fp32 model after :func:`groundwork.compress.int_dot.quantize_int_dot`
  (8-/4-bit weights in groups of 32, activations quantised to 8 bits at every layer, our
  integer dot-product kernel; the head 8-bit in both);
* ``w8a8 fused``, ``w4a8 fused``: the same models decoded by
  :func:`groundwork.compress.fused_decode.fused_decoder`, whose decode step runs every layer in
  one C++ call (the prefill stays the PyTorch model's).

References: ``transformers`` ``AutoModelForCausalLM.from_pretrained`` on the directory
``groundwork.load`` reads (``Pretrained.path``), fp32, sdpa, ``generate``; and, when
``llama_cpp`` (llama-cpp-python) is importable, llama.cpp on GGUF files written by
:func:`groundwork.interop.gguf_writer.export_llama_gguf` from the same fp32 weights (``q8_0``;
``q4_0``, whose logits matrix is Q8_0), through ``Llama.generate`` with a greedy sampler.

A diagnostic row, ``no-linear floor``, runs our fp32 model with every linear layer replaced by
one that returns zeros: the time per token spent outside the matrix products (the decoding loop,
norms, RoPE, attention over the cache, Python). No quantisation can go below it.

Columns: tokens/s (wall clock, best of ``--rounds``, rounds alternating between contenders so
that machine noise hits all alike), the ratio to our fp32, CPU seconds per token (process time:
robust to other programs on a shared machine; with several threads it sums them), the weights'
size in memory (distinct tensors, parameters and buffers; for llama.cpp the GGUF file, which it
maps), and how many of the generated tokens equal our fp32 model's.

    python benchmarks/quantized_decode.py                   # 2 threads, 128 new tokens
    python benchmarks/quantized_decode.py --threads 1       # what results/ holds

Results: ``benchmarks/results/quantized-decode-cpu.json`` (the machine, the command, the load
average), measured with ``--threads 1``: on the shared 2-core machine two threads make every
contender slower or barely faster (each of a step's few hundred operations is too small to split,
and a kernel waits at a barrier for a descheduled thread); the 2-thread run is kept in
``quantized-decode-cpu-2threads.json``. Targets (issue 19): int8 >= 2x our fp32; int4 >=
llama.cpp Q4_0.

``--compile`` adds a ``compiled`` row for each of ours: the same model decoded by
:class:`~groundwork.generate.StaticDecoder` with its decode step compiled (``torch.compile``,
inductor's C++ code on CPU; what ``groundwork generate --compile`` does). The compilation happens
in the warm-up round and is not timed.
"""

import argparse
import copy
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import groundwork
from groundwork.compress.fused_decode import fused_decoder
from groundwork.compress.int_dot import kernel_isa, quantize_int_dot
from groundwork.compress.weight_only import quantize_weights
from groundwork.generate import GenerationConfig, StaticDecoder, generate
from machine import machine

RESULTS = Path(__file__).parent / "results"
PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a wooden screw press. Within "
    "fifty years, printers across Europe had produced"
)

Run = Callable[[], list[int]]
"""Generate the new tokens once; return them."""


def model_bytes(model: nn.Module) -> int:
    """Bytes of the distinct tensors (parameters and buffers) ``model`` holds."""
    seen: dict[tuple[int, int], int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
    return sum(seen.values())


class _ZeroLinear(nn.Module):
    """Stands in for an ``nn.Linear``: zeros of the output shape, no arithmetic."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


def without_linears(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _ZeroLinear(module))
    return model


def ours(
    model: nn.Module, prompt: list[int], new: int, compile: bool = False, fused: bool = False
) -> Run:
    """Our ``generate``; with ``compile``, a :class:`~groundwork.generate.StaticDecoder` with a
    compiled decode step (compiled in the warm-up round, reused after); with ``fused``, the
    decoder of :func:`~groundwork.compress.fused_decode.fused_decoder`."""
    config = GenerationConfig(max_new_tokens=new, temperature=0)
    if fused:
        fused_run = fused_decoder(model, len(prompt) + new)
        return lambda: fused_run.generate([prompt], config).sequences[0]
    if compile:
        decoder = StaticDecoder(model, 1, len(prompt) + new, compile=True)
        return lambda: decoder.generate([prompt], config).sequences[0]
    return lambda: generate(model, [prompt], config).sequences[0]


def transformers_run(path: Path, prompt: list[int], new: int) -> tuple[Run, int]:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    ids = torch.tensor([prompt])

    def run() -> list[int]:
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=0,
            eos_token_id=None,
        )
        return out[0, len(prompt) :].tolist()

    return run, model_bytes(hf)


def llama_cpp_runs(
    pre: Any, prompt: list[int], new: int, threads: int, workdir: Path
) -> tuple[dict[str, tuple[Run, int]], str | None]:
    """llama.cpp contenders, or none and the reason."""
    if importlib.util.find_spec("llama_cpp") is None:
        return {}, "llama_cpp (llama-cpp-python) is not installed: llama.cpp rows skipped"
    try:
        from groundwork.interop.gguf_writer import export_llama_gguf
    except ImportError as e:
        return {}, f"groundwork.interop.gguf_writer is not available ({e}): llama.cpp skipped"
    import llama_cpp

    runs: dict[str, tuple[Run, int]] = {}
    for qtype in ("q8_0", "q4_0"):
        path = workdir / f"smollm2-135m-{qtype}.gguf"
        export_llama_gguf(pre.model, pre.tokenizer, path, qtype, pre.chat_template)
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=len(prompt) + new + 16,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

        def run(llm: Any = llm) -> list[int]:
            llm.reset()  # no reuse of the previous round's prompt in the cache
            out: list[int] = []
            for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                out.append(token)
                if len(out) == new:
                    break
            return out

        runs[f"llama.cpp {qtype.upper()}"] = (run, path.stat().st_size)
    return runs, None


def time_runs(runs: dict[str, Run], rounds: int) -> dict[str, dict[str, Any]]:
    """Wall and CPU seconds of each run, ``rounds`` times, the order reversed every round."""
    names = list(runs)
    for name in names:
        runs[name]()  # warm-up (allocations, one-time packing, page-ins)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, list[int]] = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            c0, t0 = time.process_time(), time.perf_counter()
            tokens[name] = runs[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            print(f"  round {r}: {name:24s} {wall[name][-1]:6.2f} s", flush=True)
    return {n: {"wall_s": wall[n], "cpu_s": cpu[n], "tokens": tokens[n]} for n in names}


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (at most)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads")
    p.add_argument("--rounds", type=int, default=3, help="timings of each (best kept)")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size")
    p.add_argument(
        "--quantize-dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="dtype of the model the int8/int4 layers are put in (their kernels compute in bf16)",
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS / "quantized-decode-cpu.json", help="results file"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="add rows decoding with a compiled static-cache step (groundwork generate --compile)",
    )
    p.add_argument("--skip-bf16", action="store_true", help="leave out our plain bf16 row")
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--skip-llama-cpp", action="store_true")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)

    pre = groundwork.load("smollm2-135m-instruct")
    fp32 = pre.model.eval()
    prompt = pre.tokenizer.encode(PROMPT)[: args.prompt_len]
    new = args.new_tokens
    base = fp32 if args.quantize_dtype == "float32" else copy.deepcopy(fp32).to(torch.bfloat16)
    models: dict[str, nn.Module] = {
        "ours fp32": fp32,
        "ours bf16": copy.deepcopy(fp32).to(torch.bfloat16),
        "ours int8": quantize_weights(copy.deepcopy(base), "int8"),
        f"ours int4 g{args.group_size}": quantize_weights(
            copy.deepcopy(base), "int4", group_size=args.group_size
        ),
        "ours w8a8": quantize_int_dot(copy.deepcopy(fp32), "w8a8"),
        "ours w4a8": quantize_int_dot(copy.deepcopy(fp32), "w4a8"),
    }
    if args.skip_bf16:
        del models["ours bf16"]
    runs: dict[str, Run] = {name: ours(m, prompt, new) for name, m in models.items()}
    sizes = {name: model_bytes(m) for name, m in models.items()}
    for name in ("ours w8a8", "ours w4a8"):
        runs[f"{name} fused"] = ours(models[name], prompt, new, fused=True)
        sizes[f"{name} fused"] = sizes[name]
    if args.compile:
        for name, m in list(models.items()):
            runs[f"{name} compiled"] = ours(m, prompt, new, compile=True)
            sizes[f"{name} compiled"] = sizes[name]
    notes: list[str] = []
    if not args.skip_transformers:
        runs["transformers fp32"], sizes["transformers fp32"] = transformers_run(
            pre.path, prompt, new
        )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_llama_cpp:
            extra, why = llama_cpp_runs(pre, prompt, new, args.threads, Path(tmp))
            for name, (run, size) in extra.items():
                runs[name], sizes[name] = run, size
            if why:
                notes.append(why)
                print(f"note: {why}", flush=True)
        floor = without_linears(copy.deepcopy(fp32))
        runs["no-linear floor (fp32)"] = ours(floor, prompt, new)
        sizes["no-linear floor (fp32)"] = model_bytes(floor)
        print(
            f"prompt {len(prompt)} tokens, {new} new, {args.threads} thread(s), "
            f"{args.rounds} rounds",
            flush=True,
        )
        timed = time_runs(runs, args.rounds)

    reference = timed["ours fp32"]["tokens"]
    base_tps = new / min(timed["ours fp32"]["wall_s"])
    rows: dict[str, Any] = {}
    header = f"{'':26s} {'tok/s':>7s} {'vs fp32':>8s} {'cpu ms/tok':>10s} {'MiB':>7s} {'same':>6s}"
    print("\n" + header)
    for name, t in timed.items():
        tps = new / min(t["wall_s"])
        pairs = enumerate(zip(t["tokens"], reference, strict=False))
        same = next((i for i, (a, b) in pairs if a != b), new)
        rows[name] = {
            "tokens_per_s": round(tps, 1),
            "ratio_vs_ours_fp32": round(tps / base_tps, 2),
            "cpu_ms_per_token": round(1e3 * min(t["cpu_s"]) / new, 1),
            "weights_mib": round(sizes[name] / 2**20, 1),
            "tokens_equal_to_ours_fp32": same if name != "no-linear floor (fp32)" else None,
            "wall_s": [round(s, 3) for s in t["wall_s"]],
        }
        r = rows[name]
        equal = "-" if r["tokens_equal_to_ours_fp32"] is None else str(same)
        print(
            f"{name:26s} {tps:7.1f} {r['ratio_vs_ours_fp32']:7.2f}x {r['cpu_ms_per_token']:10.1f} "
            f"{r['weights_mib']:7.1f} {equal:>6}"
        )
    result = {
        "benchmark": "quantized_decode",
        "command": "python " + " ".join(["benchmarks/quantized_decode.py", *sys.argv[1:]]),
        "model": "SmolLM2-135M-Instruct (groundwork.load; weights dequantised from its Q4_1 GGUF)",
        "decoding": "greedy, batch 1, forced to the full length, prefill included",
        "prompt_len": len(prompt),
        "new_tokens": new,
        "int4_group_size": args.group_size,
        "quantized_model_dtype": args.quantize_dtype,
        "int_dot_kernel": kernel_isa(),
        "rows": rows,
        "notes": notes,
        "machine": machine(
            transformers=__import__("transformers").__version__,
            llama_cpp=_version("llama_cpp"),
        ),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    return str(getattr(__import__(module), "__version__", "?"))


if __name__ == "__main__":
    main()
