"""MoE layer forward+backward time: our ``groundwork.nn.moe.MoE`` (sort-based dispatch, a loop
over experts) against ``transformers``' ``MixtralSparseMoeBlock``, same weights and batch.

The layer is Mixtral-style: softmax top-2 routing with renormalised weights, SwiGLU experts, no
capacity (dropless). The reference runs with the experts implementation a ``MixtralForCausalLM``
picks by default (``grouped_mm`` where torch has it, else ``eager``; ``--reference-impl`` chooses
another). Before timing, both outputs are compared (they must agree to 1e-5). A step is forward,
``backward`` of ``(out * g).sum()`` for a fixed random ``g``, and zeroing the gradients. Steps
alternate between the two in rounds so that machine noise hits both alike. Prints tokens/s for
each and ``ratio = ours / reference`` (higher is better), and records the result in
``benchmarks/results/moe_layer-<device>.json``.

    python benchmarks/moe_layer.py            # CPU: 8 experts, top-2, d 256, f 512, 4 x 256 tokens
    python benchmarks/moe_layer.py --quick    # tiny shapes, one round, nothing written

Target (the MoE issue): ratio >= 1.0.
"""

import argparse
import statistics
import sys

import torch

from groundwork.nn.moe import MoE, MoEConfig
from machine import alternating_times, machine, report_ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round and layer")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--reference-impl",
        default=None,
        help="transformers experts implementation (eager, grouped_mm, batched_mm); "
        "default: what MixtralForCausalLM picks",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round, no results file")
    args = p.parse_args()
    if args.quick:
        args.d_model, args.d_ff, args.seq, args.steps, args.rounds = 32, 64, 16, 1, 1

    import transformers
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    device = torch.device(args.device)
    config = MixtralConfig(
        hidden_size=args.d_model,
        intermediate_size=args.d_ff,
        num_local_experts=args.experts,
        num_experts_per_tok=args.top_k,
        router_jitter_noise=0.0,
    )
    impl = args.reference_impl
    if impl is None:  # what MixtralForCausalLM chooses (get_correct_experts_implementation)
        has_grouped_mm = hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm")
        impl = "grouped_mm" if has_grouped_mm else "eager"
    config._experts_implementation = impl

    torch.manual_seed(0)
    hf = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        for w in hf.parameters():
            w.normal_(0.0, 0.02)
    ours = MoE(
        MoEConfig(
            d_model=args.d_model,
            d_ff=args.d_ff,
            n_experts=args.experts,
            top_k=args.top_k,
            router="softmax_topk",
            activation="swiglu",
        )
    )
    f = args.d_ff
    with torch.no_grad():
        assert ours.experts.gate_proj is not None
        ours.router.weight.copy_(hf.gate.weight)
        ours.experts.gate_proj.copy_(hf.experts.gate_up_proj[:, :f])
        ours.experts.up_proj.copy_(hf.experts.gate_up_proj[:, f:])
        ours.experts.down_proj.copy_(hf.experts.down_proj)
    ours.to(device).train()
    hf.to(device).train()

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.seq, args.d_model, generator=gen).to(device)
    g = torch.randn(args.batch, args.seq, args.d_model, generator=gen).to(device)
    with torch.no_grad():
        diff = (ours(x)[0] - hf(x.clone())).abs().max().item()
    print(f"max |ours - reference| on the batch: {diff:.2e} (reference: {impl})")
    if diff > 1e-5:
        raise SystemExit("outputs differ by more than 1e-5")

    def ours_step() -> None:
        out, _ = ours(x)
        (out * g).sum().backward()
        ours.zero_grad(set_to_none=True)

    def hf_step() -> None:
        (hf(x.clone()) * g).sum().backward()  # clone: the block may scale its input in place
        hf.zero_grad(set_to_none=True)

    steps = {"ours": ours_step, "reference": hf_step}
    times = alternating_times(steps, n=args.steps, rounds=args.rounds, cuda=device.type == "cuda")
    tokens = args.batch * args.seq * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    if args.quick:
        ours_s, ref_s = tok_s["ours"], tok_s["reference"]
        print(f"ours {ours_s:,.0f} tokens/s, reference {ref_s:,.0f}, ratio {ratio:.3f}")
        return
    result = {
        "benchmark": "moe_layer",
        "layer": f"{args.experts} experts, top-{args.top_k}, d_model {args.d_model}, "
        f"d_ff {args.d_ff}, SwiGLU, softmax top-k renormalised, dropless",
        "batch": args.batch,
        "seq": args.seq,
        "tokens_per_step": args.batch * args.seq,
        "step": "forward + backward + zero_grad",
        "precision": "fp32",
        "max_abs_diff": diff,
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "reference": f"transformers {transformers.__version__} MixtralSparseMoeBlock, "
        f"experts_implementation={impl!r}, same weights and batch",
        "machine": machine(
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        ),
        "command": "python " + " ".join(sys.argv),
    }
    report_ratio("moe_layer", tok_s, result, device.type)


if __name__ == "__main__":
    main()
