r"""Aligning a chat model: ``groundwork align sft|reward|dpo|ppo|grpo MODEL``. Chapter 14.

Every command starts from a causal LM (a named pretrained model such as
``smollm2-135m-instruct``, or a run directory), renders its data with the model's chat template
(its own; :data:`~groundwork.align.sft.PLAIN_TEMPLATE` for models without one), trains through
the one engine with the method's objective, and writes a run directory:

* ``sft``: supervised fine-tuning on instructions (:mod:`groundwork.align.data`), the loss on
  the assistant's tokens only, packed or padded batches; reports the held-out loss on answers
  before and after.
* ``reward``, ``dpo``, ``ppo``, ``grpo``: see :mod:`groundwork.recipes.align_preference` and
  :mod:`groundwork.recipes.align_rl`.

The policy runs are language-model runs (``kind: lm``) with the chat template beside the
tokenizer (``chat_template.jinja``), so ``groundwork chat RUN`` talks to the result; a LoRA
(``--method lora``) is merged into the weights when the training ends, and also written in
``peft``'s format (``adapter/``). ``metrics.json`` records the method's metrics, the models
held in memory, the peak resident memory of the training and the seconds per step.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.align.runs import CHAT_TEMPLATE_FILE
from groundwork.errors import ConfigError
from groundwork.fileio import write_json
from groundwork.generate.config import GenerationConfig
from groundwork.runs import check_writable
from groundwork.runtime import peak_rss_mb, reset_peak_rss
from groundwork.train.config import TrainConfig

__all__ = [
    "CHAT_TEMPLATE_FILE",
    "Policy",
    "align_sft",
    "load_policy",
]

METRICS_FILE = "metrics.json"
METHODS = ("full", "lora")
"""Which weights an alignment run trains: all, or a LoRA (merged at the end)."""
DEFAULT_SOURCES = "piqa,siqa,boolq,commonsenseqa,asdiv"
VAL_FRACTION = 0.1


@dataclass
class Policy:
    """A causal LM with what is needed to talk to it."""

    name: str
    model: nn.Module
    tokenizer: Any
    template: str
    """Its chat template, or :data:`~groundwork.align.sft.PLAIN_TEMPLATE`."""
    own_template: bool

    @property
    def chat_tokens(self) -> dict[str, str | None]:
        """``bos_token`` and ``eos_token`` for the template."""
        eot = getattr(self.tokenizer, "eot_id", None)
        eos = self.tokenizer.id_to_token(eot) if eot is not None else None
        return {"bos_token": None, "eos_token": eos}

    @property
    def pad_id(self) -> int:
        """Padding id: the model's, else the end-of-text id, else 0."""
        pad = getattr(self.model.config, "pad_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eot_id", None)
        return int(pad or 0)

    def end_ids(self) -> list[int]:
        """Ids that end an assistant turn (``<|im_end|>``, the end of text)."""
        from groundwork.generate.stream import end_of_turn_ids

        return sorted(end_of_turn_ids(self.tokenizer))

    def encode(self, messages: Sequence[Any], max_tokens: int) -> Any:
        """A conversation as an :class:`~groundwork.align.sft.SFTExample`."""
        from groundwork.align.sft import tokenize_conversation

        return tokenize_conversation(
            self.tokenizer, self.template, messages, max_tokens=max_tokens, **self.chat_tokens
        )

    def prompt_ids(self, messages: Sequence[Any], max_tokens: int) -> list[int]:
        """The ids of ``messages`` rendered with the generation prompt (the last ``max_tokens``)."""
        from groundwork.generate.chat import render_chat

        text = render_chat(
            self.template, list(messages), add_generation_prompt=True, **self.chat_tokens
        )
        return list(self.tokenizer.encode(text))[-max_tokens:]


def load_policy(name: str) -> Policy:
    """A named pretrained model or a run directory, with its chat template (a run's
    ``chat_template.jinja``; :data:`~groundwork.align.sft.PLAIN_TEMPLATE` when it has none)."""
    from groundwork.align.sft import PLAIN_TEMPLATE
    from groundwork.recipes.generate import load_model

    model, tokenizer, template = load_model(name)
    return Policy(name, model, tokenizer, template or PLAIN_TEMPLATE, template is not None)


def check_method(method: str, options: dict[str, Any] | None) -> None:
    """Refuse a method other than full or lora, and options without lora."""
    if method not in METHODS:
        raise ConfigError(
            f"--method {method!r}: alignment trains all weights (full) or a LoRA (lora)"
        )
    if method == "full" and options:
        raise ConfigError("--peft options need --method lora")


def adapt_policy(model: nn.Module, method: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Apply ``method`` (full or lora) to ``model`` in place; returns the run's ``peft`` section."""
    check_method(method, options)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return {"method": "full"}
    from groundwork.peft.methods import apply_method, method_options

    recorded = method_options(method, model, options or {})
    apply_method(model, method, options or {})
    return {"method": method, "options": recorded}


def finish_policy(model: nn.Module, peft: dict[str, Any], out: Path, base: str) -> nn.Module:
    """The trained policy as a plain model: a LoRA saved in ``peft``'s format under
    ``out/adapter`` (over ``base``) and merged into the base weights."""
    if peft["method"] != "lora":
        return model
    from groundwork.peft.lora import merge_lora
    from groundwork.peft.lora_io import save_lora
    from groundwork.peft.methods import method_config

    config = method_config("lora", model, peft.get("options"))
    save_lora(model, out / "adapter", config, base_model=base)
    merged = merge_lora(model)
    return _unwrap_lora(merged)


def _unwrap_lora(model: nn.Module) -> nn.Module:
    """Replace every (merged) LoRA layer by its base linear layer."""
    from groundwork.peft.lora import LoRALinear

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.base_layer)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def write_policy(policy: Policy, model: nn.Module, out: Path, **sections: Any) -> None:
    """Write the aligned policy as an ``lm`` run: weights, tokenizer, chat template."""
    from groundwork.runs import TOKENIZER_FILE, write_config
    from groundwork.train.checkpoint import save_model

    write_config(out, kind="lm", model=model.config, **sections)
    save_model(model, out / "model.safetensors")
    policy.tokenizer.save(out / TOKENIZER_FILE)
    (out / CHAT_TEMPLATE_FILE).write_text(policy.template, encoding="utf-8")


def split_val(items: Sequence[Any], key: Callable[[Any], str]) -> tuple[list[Any], list[Any]]:
    """``(train, val)``: :data:`VAL_FRACTION` of ``items`` for validation, by a salted hash."""
    from groundwork.corpus.splits import hash_fraction

    val = [hash_fraction(key(x), "align-val") < VAL_FRACTION for x in items]
    return (
        [x for x, v in zip(items, val, strict=True) if not v],
        [x for x, v in zip(items, val, strict=True) if v],
    )


class Timer:
    """Training seconds and peak memory of a run: :meth:`start` before ``train``, the
    ``evaluate`` callback's time excluded through :meth:`excluded`."""

    def __init__(self) -> None:
        self.setup_peak = peak_rss_mb()
        self.excluded_seconds = 0.0
        reset_peak_rss()
        self.started = time.perf_counter()

    def excluded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its time left out of the training seconds."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.excluded_seconds += time.perf_counter() - t0

        return timed

    def report(self, steps: int) -> dict[str, float]:
        """``peak_rss_mb``, ``setup_peak_rss_mb``, ``seconds_per_step``."""
        seconds = time.perf_counter() - self.started - self.excluded_seconds
        return {
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "setup_peak_rss_mb": round(self.setup_peak, 1),
            "seconds_per_step": round(seconds / max(steps, 1), 3),
        }


def train_timed(
    net: nn.Module,
    data: Any,
    objective: Any,
    train: TrainConfig,
    out: Path,
    *,
    evaluate: Callable[[nn.Module], Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Train ``net`` through the engine into ``out``; returns the engine's result and the
    training's peak memory and seconds per step (:meth:`Timer.report`, ``evaluate`` excluded)."""
    from groundwork.train.engine import train as run_engine

    timer = Timer()
    out.mkdir(parents=True, exist_ok=True)
    net.train()
    timed = timer.excluded(evaluate) if evaluate is not None else None
    result = run_engine(net, data, objective, train, out, evaluate=timed)
    return result, timer.report(result.state.step)


def write_metrics(
    out: Path,
    *,
    method: str,
    base: str,
    result: Any,
    peft: dict[str, Any],
    counts: tuple[int, int],
    models_resident: int,
    timing: dict[str, float],
    **measured: Any,
) -> dict[str, Any]:
    """Write ``metrics.json``: the method, its ``measured`` results, how the training ended, the
    trainable and total parameters (``counts``), the models held in memory and ``timing``
    (:meth:`Timer.report`). Returns what was written."""
    metrics: dict[str, Any] = {
        "method": method,
        "base": base,
        **measured,
        "training": result.summary(),
        "peft": peft,
        "trainable_parameters": counts[0],
        "total_parameters": counts[1],
        "models_resident": models_resident,
        **timing,
    }
    write_json(out / METRICS_FILE, metrics)
    return metrics


@torch.no_grad()
def answer_loss(model: nn.Module, data: Any) -> float:
    """Mean loss per answer token over ``data.val_batches()`` (nats)."""
    from groundwork.align.packing import SFTObjective
    from groundwork.runtime import eval_mode

    total, items = 0.0, 0
    objective = SFTObjective()
    with eval_mode(model):
        for batch in data.val_batches():
            out = objective(model, batch)
            total += out.loss.item() * out.items
            items += out.items
    return total / max(items, 1)


def sample_answers(
    policy: Policy, model: nn.Module, prompts: Sequence[Any], max_new_tokens: int = 48
) -> list[str]:
    """Greedy answers of ``model`` to a few prompts (lists of messages)."""
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.decode import generate
    from groundwork.runtime import eval_mode

    ids = [policy.prompt_ids(m, 512) for m in prompts]
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    with eval_mode(model), torch.no_grad():
        out = generate(model, ids, config, pad_id=policy.pad_id, eos_ids=policy.end_ids())
    ends = set(policy.end_ids())
    return [
        policy.tokenizer.decode([t for t in seq if t not in ends]).strip() for seq in out.sequences
    ]


EVAL_BATCH = 16
"""Prompts per forward pass when measuring a policy."""


def _no_reward(prompts: list[list[int]], completions: list[list[int]], texts: Any) -> list[float]:
    return [0.0] * len(prompts)


@torch.no_grad()
def score_and_kl(
    model: nn.Module,
    reference: nn.Module,
    prompts: list[list[int]],
    reward_fn: Any,
    config: GenerationConfig,
    policy: Policy,
) -> dict[str, float]:
    """Mean reward of one sampled answer per prompt (``reward_fn``; ``None``: no reward, 0),
    and the mean over answers of their summed per-token log-ratio to ``reference``: a sampled,
    unbiased estimate of KL(policy || reference) per answer."""
    from groundwork.align.rollout import make_rollout

    scores, kls = [], []
    for start in range(0, len(prompts), EVAL_BATCH):
        rollout = make_rollout(
            model,
            prompts[start : start + EVAL_BATCH],
            reward_fn or _no_reward,
            config,
            pad_id=policy.pad_id,
            eos_ids=policy.end_ids(),
            reference=reference,
            decode=policy.tokenizer.decode,
        )
        assert rollout.ref_logps is not None
        diff = (rollout.old_logps - rollout.ref_logps) * rollout.completion_mask  # (n, T-1)
        kls += diff.sum(-1).tolist()
        scores += rollout.scores.tolist()
    return {
        "score": round(sum(scores) / len(scores), 4),
        "kl": round(sum(kls) / len(kls), 4),
    }


# --8<-- [start:sft]
def align_sft(
    model: str,
    *,
    train: TrainConfig,
    sources: str = DEFAULT_SOURCES,
    limit: int | None = None,
    test_limit: int = 200,
    layout: str = "pack",
    max_tokens: int = 256,
    system: str | None = None,
    method: str = "full",
    peft: dict[str, Any] | None = None,
    out: Path = Path("runs/align-sft"),
    overwrite: bool = False,
) -> None:
    """Supervised fine-tuning on instructions built from real question-answering sets, the loss
    on the assistant's answers only.

    Reports the mean loss per answer token on held-out questions before and after, and a few
    answers. Writes a language-model run (`groundwork chat RUN` talks to it).

    Args:
        model: The chat model to start from: a named pretrained model or a run directory.
        train: Steps, batch (conversations per batch), seq_len (the packed rows' length),
            optimizer, schedule, evaluation.
        sources: Comma-separated data sources: piqa, siqa, boolq, commonsenseqa, asdiv.
        limit: At most this many training questions per source.
        test_limit: At most this many held-out questions per source for the before/after loss.
        layout: pack (several conversations per row, none attending to another) or pad.
        max_tokens: Cut conversations to this many tokens.
        system: A system prompt for every conversation.
        method: full (every weight) or lora.
        peft: LoRA options as JSON, e.g. '{"r": 16, "alpha": 32}'.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
    """
    from groundwork.align import data as align_data
    from groundwork.align.packing import SFTData, SFTObjective
    from groundwork.peft.lora import trainable_parameters

    out = Path(out)
    check_method(method, peft)
    check_writable(out, overwrite=overwrite, resume_hint=False)
    policy = load_policy(model)
    net = policy.model
    items, val_items = split_val(align_data.load_qa(sources, "train", limit), lambda q: q.question)
    tests = align_data.load_qa(sources, "test", test_limit)

    def encode(qas: Sequence[Any]) -> list[Any]:
        examples = [policy.encode(c, max_tokens) for c in align_data.conversations(qas, system)]
        kept = [e for e in examples if e.trained_tokens > 0]  # answers cut off by max_tokens
        dropped[0] += len(examples) - len(kept)
        return kept

    dropped = [0]

    seq_len = max(train.seq_len, max_tokens)
    common = dict(pad_id=policy.pad_id, layout=layout, seq_len=seq_len)
    data = SFTData(encode(items), encode(val_items), train.batch_size, **common)  # type: ignore[arg-type]
    test_data = SFTData(encode(tests), encode(tests), train.batch_size, **common)  # type: ignore[arg-type]
    before = answer_loss(net, test_data)
    peft_section = adapt_policy(net, method, peft)
    counts = trainable_parameters(net)
    result, timing = train_timed(net, data, SFTObjective(), train, out)
    net = finish_policy(net, peft_section, out, model)
    after = answer_loss(net, test_data)
    shown = align_data.prompt_messages
    samples = tests[:: max(len(tests) // 3, 1)][:3]
    answers = sample_answers(policy, net, [shown(q, system) for q in samples])
    section = {"method": "sft", "base": model, "sources": sources, "layout": layout}
    write_policy(policy, net, out, align=section, peft=peft_section, train=train)
    metrics = write_metrics(
        out,
        method="sft",
        base=model,
        result=result,
        peft=peft_section,
        counts=counts,
        models_resident=1,
        timing=timing,
        examples={"train": len(items), "val": len(val_items), "test": len(tests)},
        dropped_longer_than_max_tokens=dropped[0],
        test_answer_loss={"before": round(before, 4), "after": round(after, 4)},
        samples=[
            {"question": q.question, "reference": q.answer, "answer": a}
            for q, a in zip(samples, answers, strict=True)
        ],
    )
    print(result.summary())
    print(f"held-out loss per answer token: {before:.3f} -> {after:.3f} nats")
    for s in metrics["samples"]:
        print(f"Q: {s['question'][:100]}\n   reference: {s['reference']}\n   answer: {s['answer']}")
    print(f"run written to {out}")


# --8<-- [end:sft]


def replace_train(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with ``changes`` (a dataclass replace)."""
    return dataclasses.replace(config, **changes)
