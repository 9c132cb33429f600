r"""Learning from preference pairs: ``groundwork align reward`` (a Bradley-Terry reward model) and
``groundwork align dpo`` (Direct Preference Optimization). Chapter 14.

Both read the same pairs: a question from a real set (:mod:`groundwork.align.data`), its right
answer *chosen* over a wrong one, rendered with the model's chat template
(:func:`~groundwork.align.preference.tokenize_preference`); the held-out questions are never
trained on.

* ``reward`` puts a scalar head on the model's last token
  (:class:`~groundwork.align.reward.RewardModel`) and trains it with the Bradley-Terry loss;
  it reports the pairwise accuracy on held-out pairs, overall and by source, before and after.
  The run (``kind: reward-model``) is what ``groundwork align ppo --reward-model`` scores with.
* ``dpo`` trains the policy itself: the reference log-probabilities of every pair are computed
  once with the starting model, which then leaves memory, and the DPO loss (sigmoid, IPO, or
  label-smoothed) moves the policy. It reports, on held-out pairs, the implicit reward's
  preference accuracy and the reward margin, and the KL to the reference estimated from the
  policy's own sampled answers (``kl_sampled``).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.recipes.align import (
    Policy,
    adapt_policy,
    check_method,
    finish_policy,
    load_policy,
    score_and_kl,
    split_val,
    train_timed,
    write_metrics,
    write_policy,
)
from groundwork.runs import check_writable
from groundwork.runtime import eval_mode
from groundwork.train.config import TrainConfig

__all__ = ["align_dpo", "align_reward", "preference_examples"]

PREFERENCE_SOURCES = "piqa,siqa,boolq,commonsenseqa"
"""The sources with wrong answers to reject (ASDiv has none)."""


def preference_examples(
    policy: Policy,
    sources: str,
    split: str,
    limit: int | None,
    max_tokens: int,
    system: str | None = None,
) -> tuple[list[Any], list[str]]:
    """The preference pairs of ``sources`` in ``split``, tokenized for ``policy``, and each
    pair's source; pairs whose answers become equal once cut to ``max_tokens`` are skipped."""
    from groundwork.align import data as align_data
    from groundwork.align.preference import tokenize_preference

    items = [qa for qa in align_data.load_qa(sources, split, limit) if qa.wrong]  # type: ignore[arg-type]
    examples, origin = [], []
    triples = align_data.preference_pairs(items, system)
    for qa, (prompt, chosen, rejected) in zip(items, triples, strict=True):
        try:
            pair = tokenize_preference(
                policy.tokenizer,
                policy.template,
                prompt,
                chosen,
                rejected,
                max_tokens=max_tokens,
                **policy.chat_tokens,
            )
        except ConfigError:
            continue  # the answers differ only past max_tokens, or the prompt fills it
        examples.append(pair)
        origin.append(qa.source)
    if not examples:
        raise ConfigError(f"no preference pairs from {sources!r} ({split}); check --sources")
    return examples, origin


@dataclass
class _Pairs:
    """What both commands read: the policy, its training data, the held-out pairs."""

    policy: Policy
    data: Any
    tests: list[Any]
    origin: list[str]

    @property
    def sizes(self) -> dict[str, int]:
        n = self.data
        return {"train": len(n.pairs), "val": len(n.val_pairs), "test": len(self.tests)}


def _prepare(
    model: str,
    *,
    sources: str,
    limit: int | None,
    test_limit: int,
    max_tokens: int,
    system: str | None,
    batch_size: int,
    method: str,
    peft: dict[str, Any] | None,
    out: Path,
    overwrite: bool,
) -> _Pairs:
    """Check the options, load the policy and make its preference pairs: training (less 10% for
    validation) and held-out."""
    from groundwork.align.preference import PreferenceData

    if "asdiv" in [s.strip() for s in sources.split(",")]:
        raise ConfigError("asdiv has no wrong answers to make preference pairs; leave it out")
    check_method(method, peft)
    check_writable(out, overwrite=overwrite, resume_hint=False)
    policy = load_policy(model)
    pairs, _ = preference_examples(policy, sources, "train", limit, max_tokens, system)
    tests, origin = preference_examples(policy, sources, "test", test_limit, max_tokens, system)
    train_pairs, val_pairs = split_val(pairs, lambda p: str(p.chosen.input_ids))
    data = PreferenceData(
        train_pairs, batch_size=batch_size, val_pairs=val_pairs, pad_id=policy.pad_id
    )
    return _Pairs(policy, data, tests, origin)


# --------------------------------------------------------------------------------------------
# the reward model


def _accuracy_by_source(
    model: nn.Module, pairs: Sequence[Any], origin: Sequence[str], pad_id: int
) -> dict[str, float]:
    from groundwork.align.reward import pairwise_accuracy

    out = {"all": round(pairwise_accuracy(model, pairs, pad_id=pad_id), 4)}
    for source in sorted(set(origin)):
        part = [p for p, o in zip(pairs, origin, strict=True) if o == source]
        out[source] = round(pairwise_accuracy(model, part, pad_id=pad_id), 4)
    return out


# --8<-- [start:reward]
def align_reward(
    model: str,
    *,
    train: TrainConfig,
    sources: str = PREFERENCE_SOURCES,
    limit: int | None = None,
    test_limit: int = 200,
    max_tokens: int = 256,
    system: str | None = None,
    method: str = "full",
    peft: dict[str, Any] | None = None,
    out: Path = Path("runs/align-reward"),
    overwrite: bool = False,
) -> None:
    """Train a reward model on preference pairs (right answer chosen over a wrong one) with the
    Bradley-Terry loss; report the held-out pairwise accuracy before and after, by source.

    Args:
        model: The model to start from (its last token's state feeds a scalar head): a named
            pretrained model or a run directory.
        train: Steps, batch (pairs per batch), optimizer, schedule, evaluation.
        sources: Comma-separated: piqa, siqa, boolq, commonsenseqa.
        limit: At most this many training questions per source.
        test_limit: At most this many held-out questions per source.
        max_tokens: Cut each prompt-and-answer to this many tokens.
        system: A system prompt for every pair.
        method: full (every weight) or lora (the head always trains).
        peft: LoRA options as JSON, e.g. '{"r": 16}'.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
    """
    from groundwork.align.reward import RewardModel, RewardObjective, pairwise_accuracy
    from groundwork.align.runs import write_reward_run
    from groundwork.peft.lora import trainable_parameters
    from groundwork.train.engine import validation_loss

    out = Path(out)
    setup = _prepare(
        model, sources=sources, limit=limit, test_limit=test_limit, max_tokens=max_tokens,
        system=system, batch_size=train.batch_size, method=method, peft=peft, out=out,
        overwrite=overwrite,
    )  # fmt: skip
    policy, data, tests, origin = setup.policy, setup.data, setup.tests, setup.origin
    pad = policy.pad_id
    peft_section = adapt_policy(policy.model, method, peft)
    torch.manual_seed(train.seed)
    reward = RewardModel(policy.model)
    before = _accuracy_by_source(reward, tests, origin, pad)
    counts = trainable_parameters(reward)
    objective = RewardObjective()

    def evaluate(net: nn.Module) -> dict[str, float]:
        loss, items = validation_loss(net, objective, data.val_batches(), device=_device(net))
        return {"val_loss": loss / max(items, 1), "val_accuracy": pairwise_accuracy(net, data)}

    result, timing = train_timed(reward, data, objective, train, out, evaluate=evaluate)
    reward.backbone = finish_policy(reward.backbone, peft_section, out, model)
    after = _accuracy_by_source(reward, tests, origin, pad)
    section = {"method": "reward", "base": model, "sources": sources, "max_tokens": max_tokens}
    write_reward_run(reward, policy, out, align=section, peft=peft_section, train=train)
    write_metrics(
        out,
        method="reward",
        base=model,
        result=result,
        peft=peft_section,
        counts=counts,
        models_resident=1,
        timing=timing,
        pairs=setup.sizes,
        test_pairwise_accuracy={"before": before, "after": after},
    )
    print(result.summary())
    print(f"held-out pairwise accuracy: {before['all']:.3f} -> {after['all']:.3f}")
    for source in sorted(set(origin)):
        print(f"  {source}: {before[source]:.3f} -> {after[source]:.3f}")
    print(f"run written to {out}")


# --8<-- [end:reward]


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


# --------------------------------------------------------------------------------------------
# DPO


@torch.no_grad()
def dpo_metrics(model: nn.Module, objective: Any, batches: Any) -> dict[str, float]:
    """The DPO loss and metrics averaged over ``batches`` (weighted by pairs), in eval mode."""
    sums: dict[str, float] = {}
    pairs = 0
    with eval_mode(model):
        for batch in batches:
            batch = {k: v.to(_device(model)) for k, v in batch.items()}
            out = objective(model, batch)
            n = out.items
            pairs += n
            sums["loss"] = sums.get("loss", 0.0) + out.loss.item() * n
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
    return {k: round(v / max(pairs, 1), 5) for k, v in sums.items()}


# --8<-- [start:dpo]
def align_dpo(
    model: str,
    *,
    train: TrainConfig,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    kl_prompts: int = 48,
    kl_new_tokens: int = 32,
    sources: str = PREFERENCE_SOURCES,
    limit: int | None = None,
    test_limit: int = 200,
    max_tokens: int = 256,
    system: str | None = None,
    method: str = "full",
    peft: dict[str, Any] | None = None,
    out: Path = Path("runs/align-dpo"),
    overwrite: bool = False,
) -> None:
    """Align a chat model with Direct Preference Optimization on preference pairs (right answer
    chosen over a wrong one), the reference being the starting model (its log-probabilities
    computed once). Reports on held-out pairs the implicit reward's preference accuracy, the
    reward margin, and the KL to the reference estimated from the policy's own sampled answers.
    Writes a language-model run.

    Args:
        model: The chat model to start from (also the reference): a named pretrained model or a
            run directory (e.g. an `align sft` run).
        train: Steps, batch (pairs per batch), optimizer, schedule, evaluation.
        beta: Strength of the implicit KL constraint (smaller: farther from the reference).
        loss_type: sigmoid (DPO) or ipo.
        label_smoothing: Conservative DPO: the share of pairs assumed mislabelled (sigmoid only).
        kl_prompts: Held-out prompts the policy answers, after training, to estimate its KL to
            the reference.
        kl_new_tokens: Longest of those answers.
        sources: Comma-separated: piqa, siqa, boolq, commonsenseqa.
        limit: At most this many training questions per source.
        test_limit: At most this many held-out questions per source.
        max_tokens: Cut each prompt-and-answer to this many tokens.
        system: A system prompt for every pair.
        method: full (every weight) or lora.
        peft: LoRA options as JSON, e.g. '{"r": 16}'.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
    """
    from groundwork.align.dpo import DPOObjective, precompute_reference_logps
    from groundwork.align.preference import PreferenceData
    from groundwork.peft.lora import trainable_parameters

    out = Path(out)
    objective = DPOObjective(beta, loss_type, label_smoothing)  # type: ignore[arg-type]
    setup = _prepare(
        model, sources=sources, limit=limit, test_limit=test_limit, max_tokens=max_tokens,
        system=system, batch_size=train.batch_size, method=method, peft=peft, out=out,
        overwrite=overwrite,
    )  # fmt: skip
    policy, net = setup.policy, setup.policy.model
    tests = setup.tests
    test_data = PreferenceData(
        tests, batch_size=train.batch_size, val_pairs=tests, pad_id=policy.pad_id
    )
    # The reference is the starting model: its log-probabilities once, then it is not needed.
    data = precompute_reference_logps(net, setup.data)
    test_data = precompute_reference_logps(net, test_data)
    before = dpo_metrics(net, objective, test_data.val_batches())
    peft_section = adapt_policy(net, method, peft)
    counts = trainable_parameters(net)
    result, timing = train_timed(net, data, objective, train, out)
    net = finish_policy(net, peft_section, out, model)
    after = dpo_metrics(net, objective, test_data.val_batches())
    # The KL to the reference, from the policy's own answers to the held-out prompts (the
    # reference read again: it was not in memory while training).
    prompts = list({tuple(p.chosen.input_ids[: p.prompt_length]): None for p in tests})
    sampling = GenerationConfig(max_new_tokens=kl_new_tokens, temperature=1.0, seed=0)
    reference = load_policy(model).model
    drift = score_and_kl(
        net, reference, [list(p) for p in prompts[:kl_prompts]], None, sampling, policy
    )
    del reference
    after["kl_sampled"] = drift["kl"]
    before["kl_sampled"] = 0.0  # the policy is the reference
    section = {"method": "dpo", "base": model, "sources": sources, "beta": beta,
               "loss_type": loss_type, "label_smoothing": label_smoothing}  # fmt: skip
    write_policy(policy, net, out, align=section, peft=peft_section, train=train)
    write_metrics(
        out,
        method="dpo",
        base=model,
        result=result,
        peft=peft_section,
        counts=counts,
        models_resident=1,
        timing=timing,
        pairs=setup.sizes,
        test={"before": before, "after": after},
    )
    print(result.summary())
    print(
        f"held-out pairs: preference accuracy {after['reward_accuracy']:.3f}, reward margin "
        f"{after['reward_margin']:.3f}, loss {before['loss']:.4f} -> {after['loss']:.4f}; "
        f"KL to the reference (sampled answers) {after['kl_sampled']:.3f}"
    )
    print(f"run written to {out}")


# --8<-- [end:dpo]
