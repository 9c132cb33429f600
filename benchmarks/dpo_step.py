"""DPO training-step throughput: our ``DPOObjective`` on our Llama against ``trl``'s
``DPOTrainer`` step on the ``transformers`` twin (``LlamaForCausalLM``), same weights and batch.

The model is SmolLM2-135M-Instruct (``groundwork.load("smollm2-135m-instruct")``), converted to
``transformers`` with ``to_hf`` so both hold the same values. The batch is 4 preference pairs of
random token ids, a 96-token prompt and two 32-token answers (128 tokens per sequence, 1024 in
all), with the reference log-probabilities precomputed on both sides (ours:
``precompute_reference_logps``; trl: ``precompute_ref_log_probs=True``, its
``compute_ref_log_probs`` on the batch), so a step is one policy forward of the 8 sequences, the
loss, backward and AdamW over every weight. trl runs with gradient checkpointing off (its
default is on) and fp32, as ours. Before timing, both losses on the batch are printed (they must
agree). Steps alternate between the two in rounds so machine noise hits both alike. Prints
tokens/s for each and ``ratio = ours / reference`` (higher is better), and records the result
in ``benchmarks/results/dpo_step-<device>.json``.

    python benchmarks/dpo_step.py              # CPU: 4 pairs x 128 tokens
    python benchmarks/dpo_step.py --quick      # a tiny random Llama, one round, nothing written

Target (the alignment issue): ratio >= 1.0.
"""

import argparse
import statistics
import sys
import tempfile

import torch

import groundwork
from groundwork.align.dpo import DPOObjective, precompute_reference_logps
from groundwork.align.preference import PreferenceExample, collate_preferences
from groundwork.interop.hf import to_hf
from groundwork.models.llama import Llama, LlamaConfig
from machine import alternating_times, machine, report_ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--prompt", type=int, default=96, help="prompt tokens")
    p.add_argument("--answer", type=int, default=32, help="tokens of each answer")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=2, help="timed steps per round and model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--quick", action="store_true", help="tiny random Llama, one round, no results file"
    )
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 1, 1

    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    device = torch.device(args.device)
    if args.quick:
        torch.manual_seed(0)
        ours = Llama(LlamaConfig.from_name("tiny", vocab_size=512))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_word_level(), eos_token="<eos>", pad_token="<pad>"
        )
        model_name = "tiny random Llama (2 layers, d 64)"
    else:
        smol = groundwork.load("smollm2-135m-instruct")
        ours = smol.model
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(smol.path / "tokenizer.json"))
        tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
        model_name = "SmolLM2-135M-Instruct (30 layers, d 576, 9 heads, 3 kv heads)"
    vocab = ours.config.vocab_size
    hf = to_hf(ours, attn_implementation="sdpa")
    ours.to(device).train()
    hf.to(device).train()

    gen = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(10, vocab, (n,), generator=gen).tolist()

    rows = [
        {"prompt_ids": ids(args.prompt), "chosen_ids": ids(args.answer)}
        | {"rejected_ids": ids(args.answer)}
        for _ in range(args.pairs)
    ]
    pairs = [
        PreferenceExample.from_ids(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"])
        for r in rows
    ]

    # ours: reference log-probabilities once (the policy before training is the reference)
    pairs = precompute_reference_logps(ours, pairs, batch_size=args.pairs)
    batch = {k: v.to(device) for k, v in collate_preferences(pairs).items()}
    objective = DPOObjective(beta=args.beta)

    # trl: a trainer (its own dataset is only there to construct it), the reference log-probs
    # of the timed batch from its compute_ref_log_probs, as precompute_ref_log_probs does
    out = tempfile.TemporaryDirectory()  # trl's output_dir; nothing is saved there
    config = DPOConfig(
        output_dir=out.name,
        beta=args.beta,
        precompute_ref_log_probs=True,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.pairs,
        max_length=None,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=False,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=hf,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}),
        processing_class=tokenizer,
    )
    trl_batch = {k: v.to(device) for k, v in trainer.data_collator(rows).items()}
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, trl_batch)
    trl_batch["ref_chosen_logps"], trl_batch["ref_rejected_logps"] = ref_chosen, ref_rejected

    ours_loss = objective(ours, batch).loss.item()
    trl_loss = trainer.compute_loss(trainer.model, trl_batch).item()
    print(f"loss at the first step: ours {ours_loss:.6f}, trl {trl_loss:.6f}")

    def step_fn(model: torch.nn.Module, run: object) -> object:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

        def step() -> None:
            run()  # type: ignore[operator]
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def ours_step() -> None:
        objective(ours, batch).loss.backward()

    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets: one micro-batch

    def trl_step() -> None:
        trainer.training_step(trainer.model, dict(trl_batch))

    steps = {"ours": step_fn(ours, ours_step), "reference": step_fn(trainer.model, trl_step)}
    times = alternating_times(steps, n=args.steps, rounds=args.rounds, cuda=device.type == "cuda")
    tokens = 2 * args.pairs * (args.prompt + args.answer) * args.steps
    tok_s = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = tok_s["ours"] / tok_s["reference"]
    out.cleanup()
    if args.quick:
        print(
            f"ours {tok_s['ours']:,.0f} tokens/s, trl {tok_s['reference']:,.0f}, ratio {ratio:.3f}"
        )
        return
    import transformers
    import trl

    result = {
        "benchmark": "dpo_step",
        "model": model_name,
        "pairs": args.pairs,
        "prompt_tokens": args.prompt,
        "answer_tokens": args.answer,
        "tokens_per_step": 2 * args.pairs * (args.prompt + args.answer),
        "beta": args.beta,
        "precision": "fp32",
        "loss_first_step": {"ours": round(ours_loss, 6), "reference": round(trl_loss, 6)},
        "ours_tokens_per_s": round(tok_s["ours"], 1),
        "reference_tokens_per_s": round(tok_s["reference"], 1),
        "ratio": round(ratio, 3),
        "reference": f"trl {trl.__version__} DPOTrainer.training_step (sigmoid loss, "
        f"precomputed reference log-probs, no gradient checkpointing) on transformers "
        f"{transformers.__version__} LlamaForCausalLM (sdpa attention), same weights, batch "
        "and AdamW",
        "machine": machine(
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        ),
        "command": "python " + " ".join(sys.argv),
    }
    report_ratio("dpo_step", tok_s, result, device.type)


def _word_level() -> object:
    """A 512-word tokenizer for ``--quick`` (trl needs one to build its trainer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, 512)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


if __name__ == "__main__":
    main()
