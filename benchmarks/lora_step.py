"""LoRA training-step throughput: our LoRA on our Llama (``groundwork.peft.apply_lora``) against
``peft``'s LoRA on the ``transformers`` twin (``LlamaForCausalLM``), same weights.

The model is SmolLM2-135M's config (30 layers, d 576, 9 heads, 3 key/value heads; random
weights: speed does not depend on them), converted to ``transformers`` with ``to_hf`` so both
hold the same values; both get rank-8 LoRA (alpha 16) on the seven linear layers of every block,
initialised alike, the same batch of token ids, the causal language-modelling loss and AdamW
over the adapter weights, in this one process; steps alternate between the two in rounds so
machine noise hits both alike. Prints tokens/s for each and ``ratio = ours / reference``
(higher is better), and records the result in ``benchmarks/results/lora_step-<device>.json``.

    python benchmarks/lora_step.py              # CPU: batch 4 x 256 tokens

Target (the PEFT issue): ratio >= 1.0.
"""

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from groundwork.interop.hf import to_hf
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.peft import LoRAConfig, apply_lora
from machine import alternating_times, machine, report_ratio

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=2, help="timed steps per round and model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from peft import LoraConfig, get_peft_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = Llama(LlamaConfig.from_name("smollm2-135m"))
    ref = to_hf(ours)
    apply_lora(ours, LoRAConfig(r=8, alpha=16, target_modules=TARGETS))
    ref = get_peft_model(ref, LoraConfig(r=8, lora_alpha=16, target_modules=list(TARGETS)))
    with torch.no_grad():  # the same adapter weights (B random, so the update is not zero)
        theirs = dict(ref.named_parameters())
        for name, param in ours.named_parameters():
            if param.requires_grad:
                torch.nn.init.normal_(param, std=0.02)
                module, _, tail = name.partition(".lora_")
                theirs[f"base_model.model.{module}.lora_{tail}"].copy_(param)
    ours.to(device).train()
    ref.to(device).train()

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=gen).to(device)

    def step_fn(model: torch.nn.Module, hf: bool) -> object:
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> None:
            logits = model(input_ids=ids).logits if hf else model(ids)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps = {"ours": step_fn(ours, False), "reference": step_fn(ref, True)}
    times = alternating_times(steps, n=args.steps, rounds=args.rounds, cuda=device.type == "cuda")
    tokens = args.batch * args.seq * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    trainable = sum(q.numel() for q in ours.parameters() if q.requires_grad)
    result = {
        "benchmark": "lora_step",
        "model": "SmolLM2-135M's config (30 layers, d 576, 9 heads, 3 kv heads, vocab 49152)",
        "lora": f"r 8, alpha 16, {', '.join(TARGETS)} of every block",
        "trainable_parameters": trainable,
        "batch": args.batch,
        "seq_len": args.seq,
        "precision": "fp32",
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "reference": "peft 0.21 LoRA on transformers LlamaForCausalLM (sdpa attention), same "
        "weights, adapter, batch, loss and AdamW",
        "machine": machine(
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        ),
        "command": "python " + " ".join(sys.argv),
    }
    report_ratio("lora_step", tok_s, result, device.type)


if __name__ == "__main__":
    main()
