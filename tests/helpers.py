"""What several test files share (importable as ``helpers``: pytest puts ``tests/`` on the path)."""

from pathlib import Path
from typing import TYPE_CHECKING

from groundwork.train import TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from groundwork.align.preference import PreferenceExample
    from groundwork.models.gpt import GPT
    from groundwork.models.llama import Llama


def tiny_train(**overrides: object) -> TrainConfig:
    """A few CPU steps of the engine, quiet: 4 steps of 4 x 32 tokens, an evaluation every 2
    steps on 1 batch, no progress bar or TensorBoard; any field can be overridden."""
    fields: dict[str, object] = dict(
        max_steps=4,
        batch_size=4,
        seq_len=32,
        eval_every=2,
        eval_batches=1,
        warmup_steps=1,
        progress=False,
        tensorboard=False,
        device="cpu",
    )
    fields.update(overrides)
    return TrainConfig(**fields)  # type: ignore[arg-type]


def tiny_bert_run(root: Path, texts: list[str], vocab_size: int = 120) -> Path:
    """A random 1-layer BERT (d 32) run directory with a WordPiece tokenizer trained on
    ``texts`` (BERT's special tokens), as `groundwork pretrain` writes one."""
    import torch

    from groundwork import tokenize
    from groundwork.models.bert import BertConfig, BertForMaskedLM
    from groundwork.recipes.pretrain_encoders import BERT_SPECIAL_TOKENS
    from groundwork.runs import write_run

    tok = tokenize.train_tokenizer(
        "wordpiece", texts, vocab_size, special_tokens=BERT_SPECIAL_TOKENS
    )
    tok.save(root / "tokenizer.json")
    config = BertConfig(
        vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, max_seq_len=256
    )
    torch.manual_seed(0)
    return write_run(
        BertForMaskedLM(config),
        root / "run",
        tokenizer=root / "tokenizer.json",
        kind="mlm",
        model_class="BertForMaskedLM",
    )


def tiny_llama_run(
    root: Path, texts: list[str], vocab_size: int = 300, **overrides: object
) -> Path:
    """A random 2-layer Llama (d 32, GQA) run directory with a byte-level BPE tokenizer trained
    on ``texts``, as `groundwork pretrain` writes one (kind ``lm``); ``overrides`` change fields
    of its config (e.g. ``max_seq_len``)."""
    import torch

    from groundwork import tokenize
    from groundwork.models.llama import Llama, LlamaConfig
    from groundwork.runs import write_run

    tok = tokenize.train_tokenizer("bpe", texts, vocab_size)
    tok.save(root / "tokenizer.json")
    config = LlamaConfig.from_name(
        "tiny",
        **{"vocab_size": tok.vocab_size, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "d_ff": 64}
        | overrides,
    )
    torch.manual_seed(0)
    return write_run(Llama(config), root / "run", tokenizer=root / "tokenizer.json")


def tiny_llama(**overrides: object) -> "Llama":
    """A seeded tiny Llama in eval mode: vocabulary 97, 4 query heads over 2 key/value heads
    (grouped-query attention), the ``tiny`` preset otherwise; any field can be overridden."""
    import torch

    from groundwork.models.llama import Llama, LlamaConfig

    torch.manual_seed(0)
    fields: dict[str, object] = {"vocab_size": 97, "n_heads": 4, "n_kv_heads": 2, **overrides}
    return Llama(LlamaConfig.from_name("tiny", **fields)).eval()


def tiny_gpt(**overrides: object) -> "GPT":
    """A seeded tiny GPT in eval mode: vocabulary 97, the ``tiny`` preset otherwise."""
    import torch

    from groundwork.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("tiny", **{"vocab_size": 97, **overrides})).eval()


CALM = ["a quiet walk by the river", "tea with friends", "a good book and sleep", "sunny day"]
STRESS = ["deadline panic no sleep", "rent due and no money", "panic at work again", "exam fear"]


def calm_or_stressed(split: str) -> list[tuple[str, str, int]]:
    """A toy classification task's ``(id, text, label)`` examples: 24 for ``train``, 8 for any
    other split, cycling through :data:`CALM` (0) and :data:`STRESS` (1)."""
    n = 12 if split == "train" else 4
    texts = [(t, 0) for t in CALM] + [(t, 1) for t in STRESS]
    return [(f"{split}{i}", texts[i % 8][0], texts[i % 8][1]) for i in range(n * 2)]


def randomise_lora_b(model: "nn.Module") -> None:
    """Non-zero LoRA ``B`` matrices (as peft's own tests do), so the adapters change the output."""
    import torch

    from groundwork.peft import LoRALinear

    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            for b in m.lora_B.values():
                torch.nn.init.normal_(b.weight, std=0.1)


def toy_preference_pairs(n: int, seed: int) -> "list[PreferenceExample]":
    """Random prompts (ids 3..59) answered with "good" (ids 60..69) or "bad" (70..79) tokens:
    preference pairs a tiny model can learn to separate."""
    import torch

    from groundwork.align.preference import PreferenceExample

    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(3, 60, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)
        good = torch.randint(60, 70, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)
        bad = torch.randint(70, 80, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g)
        pairs.append(PreferenceExample.from_ids(prompt.tolist(), good.tolist(), bad.tolist()))
    return pairs


INT_DOT_PATHS = {  # the int_dot kernel's instruction-set paths: compiler flags, CPU flags needed
    "scalar": (["-march=x86-64"], set()),
    "avx2": (["-march=x86-64-v3"], {"avx2", "fma", "f16c"}),
    "avx2-vnni": (["-march=x86-64-v3", "-mavxvnni"], {"avx2", "fma", "f16c", "avx_vnni"}),
    "avx512-vnni": (
        ["-march=x86-64-v4", "-mavx512vnni"],
        {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"},
    ),
}


def int_dot_build(isa: str) -> object:
    """The int_dot extension built for one of :data:`INT_DOT_PATHS` (skips the calling test
    where this CPU cannot run it)."""
    import platform

    import pytest

    from groundwork.compress import int_dot

    flags, needs = INT_DOT_PATHS[isa]
    cpu: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                cpu = set(line.split(":", 1)[1].split())
                break
    if platform.machine() != "x86_64" or not needs <= cpu:
        pytest.skip(f"this CPU cannot run the {isa} path")
    return int_dot.build_kernel(flags)
