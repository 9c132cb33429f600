"""Peak memory of fine-tuning SmolLM2-135M with each PEFT method: full fine-tuning, LoRA, QLoRA
(and any other ``groundwork finetune --method``), each in a fresh process.

Each child loads SmolLM2-135M-Instruct, applies the method, puts a sequence-classification head on
it (``head_for(..., "sequence", 2)``), turns on activation checkpointing (as QLoRA does) and runs
``--steps`` AdamW steps on a fixed batch (``--batch`` x ``--seq`` token ids); the peak resident
memory is read from ``VmHWM`` after it was reset at the end of the setup (Linux
``/proc/self/clear_refs``), so it counts the training (weights, gradients, optimizer state,
activations), not the loading. glibc is told to return freed blocks of 64 KiB and more to the
system at once (``MALLOC_MMAP_THRESHOLD_``), so the figure is memory in use, not memory the
allocator kept. Records ``benchmarks/results/peft-memory-cpu.json``.

    python benchmarks/peft_memory.py                       # full, lora, qlora; ~3 minutes on CPU

Target (the PEFT issue): QLoRA's peak <= 40% of full fine-tuning's.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import machine

CHILD = r"""
import json, sys, time
import torch
import torch.nn.functional as F
from groundwork.adapt import head_for
from groundwork.peft.methods import apply_method
from groundwork.pretrained import load
from groundwork.runtime import peak_rss_mb, reset_peak_rss
from groundwork.train.activation_checkpointing import checkpoint_blocks

method, steps, batch, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = apply_method(load("smollm2-135m-instruct").model, method)
head = head_for(model, "sequence", 2)
checkpoint_blocks(head)
head.train()
params = [p for p in head.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)
ids = torch.randint(0, 49152, (batch, seq))
labels = torch.randint(0, 2, (batch,))
reset_peak_rss()
started = time.perf_counter()
for _ in range(steps):
    loss = F.cross_entropy(head(ids), labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
seconds = (time.perf_counter() - started) / steps
peak = peak_rss_mb()
print(json.dumps({"method": method, "peak_rss_mb": round(peak, 1),
                  "trainable_parameters": sum(p.numel() for p in params),
                  "seconds_per_step": round(seconds, 3)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=["full", "lora", "qlora"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for method in args.methods:
        command = [sys.executable, "-c", CHILD, method, str(args.steps), str(args.batch)]
        out = subprocess.run(
            [*command, str(args.seq)], env=env, check=True, capture_output=True, text=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    full = next((r for r in rows if r["method"] == "full"), None)
    for r in rows:
        if full is not None:
            r["share_of_full"] = round(r["peak_rss_mb"] / full["peak_rss_mb"], 3)
    result = {
        "benchmark": "peft_memory",
        "model": "SmolLM2-135M-Instruct with a sequence-classification head",
        "batch": args.batch,
        "seq_len": args.seq,
        "steps": args.steps,
        "setting": "fp32, activation checkpointing, AdamW, MALLOC_MMAP_THRESHOLD_=65536; peak "
        "RSS (VmHWM) reset after the setup",
        "rows": rows,
        "machine": machine(device="cpu"),
        "command": "python " + " ".join(sys.argv),
    }
    out_file = Path(__file__).parent / "results" / "peft-memory-cpu.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {out_file}")


if __name__ == "__main__":
    main()
