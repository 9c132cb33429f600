"""Fine-tuning-step throughput: our BERT sequence classifier (``groundwork.adapt``) against
Hugging Face's ``BertForSequenceClassification`` with the same weights.

The reference is built from all-MiniLM-L6-v2's config (6 layers, d 384, 12 heads; random
weights: speed does not depend on them) and converted to ours with ``head_from_hf``, so both
hold the same values. Both get the same padded batch (right padding, an attention mask), the
same AdamW and cross-entropy, with dropout on, in this one process; steps alternate between the
two in rounds so that machine noise hits both alike. Prints tokens/s (real tokens, padding
excluded) for each and ``ratio = ours / reference`` (higher is better), and records the result
in ``benchmarks/results/finetune_step-<device>.json``.

    python benchmarks/finetune_step.py              # CPU: batch 32 of up to 128 tokens

Target (the adaptation issue): ratio >= 1.0.
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from groundwork.adapt import head_from_hf
from groundwork.train import build_adamw
from machine import machine, report_ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128, help="longest sequence of the batch")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round and model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from transformers import BertConfig, BertForSequenceClassification

    device = torch.device(args.device)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=2,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    ref = BertForSequenceClassification(config)
    ours = head_from_hf(ref)
    ref.to(device).train()
    ours.to(device).train()

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.seq // 4, args.seq + 1, (args.batch,), generator=gen)
    lengths[0] = args.seq
    ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq), generator=gen)
    mask = (torch.arange(args.seq) < lengths[:, None]).long()  # (B, T)
    ids = ids * mask  # padding id 0
    labels = torch.randint(0, 2, (args.batch,), generator=gen)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)

    def step_fn(model: torch.nn.Module, hf: bool) -> object:
        opt = build_adamw(model, lr=2e-5)

        def step() -> None:
            logits = model(ids, attention_mask=mask).logits if hf else model(ids, mask)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps = {"ours": step_fn(ours, False), "reference": step_fn(ref, True)}

    def timed(name: str, n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            steps[name]()  # type: ignore[operator]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in steps:  # warm up
        timed(name, 1)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # neither always goes first
        for name in order:
            times[name].append(timed(name, args.steps))
    tokens = int(lengths.sum()) * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    result = {
        "benchmark": "finetune_step",
        "model": "all-MiniLM-L6-v2's config (6 layers, d 384, 12 heads, vocab 30522), 2 labels",
        "batch": args.batch,
        "max_seq_len": args.seq,
        "real_tokens_per_batch": int(lengths.sum()),
        "precision": "fp32",
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "reference": "transformers BertForSequenceClassification (sdpa attention), same weights, "
        "batch, AdamW and loss; dropout on in both",
        "machine": machine(
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        ),
        "command": "python " + " ".join(sys.argv),
    }
    report_ratio("finetune_step", tok_s, result, device.type)


if __name__ == "__main__":
    main()
