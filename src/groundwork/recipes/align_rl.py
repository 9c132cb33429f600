r"""Reinforcement learning on a chat model: ``groundwork align ppo`` (RLHF against a trained reward
model) and ``groundwork align grpo`` (group-relative policy optimisation with a verifiable
reward). Chapter 14.

* ``ppo`` samples answers to held-in questions with the policy, scores each with a reward model
  trained by ``groundwork align reward`` (its run holds the tokenizer, which must be the policy's,
  and the chat template it read the pairs with), and trains the policy with a value head by PPO,
  a per-token KL penalty to the frozen starting model keeping it close
  (:class:`~groundwork.align.ppo.PPOObjective`). It reports, on held-out questions, the mean
  reward of sampled answers and their KL to the reference, before and after, and a few answers.
* ``grpo`` asks ASDiv's arithmetic problems, samples a group of answers to each, rewards an
  answer 1 when its last (or first) number is the right one
  (:func:`~groundwork.align.grpo.number_reward`), and trains with group-relative advantages
  and no value model (:class:`~groundwork.align.grpo.GRPOObjective`). It reports the held-out
  accuracy of greedy answers before and after (the answer's last number, as reasoning ends, or
  its first, as the ``asdiv`` evaluation task reads it).
"""

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.recipes.align import (
    EVAL_BATCH,
    Policy,
    adapt_policy,
    check_method,
    finish_policy,
    load_policy,
    sample_answers,
    score_and_kl,
    train_timed,
    write_metrics,
    write_policy,
)
from groundwork.recipes.align_preference import PREFERENCE_SOURCES
from groundwork.runs import check_writable
from groundwork.runtime import eval_mode
from groundwork.train.config import TrainConfig

__all__ = ["align_grpo", "align_ppo", "reward_model_fn"]

ASDIV_INSTRUCTION = "Answer with the number only."


def _prompts(
    policy: Policy, messages: Sequence[Any], max_prompt_tokens: int
) -> tuple[list[list[int]], dict[tuple[int, ...], Any]]:
    """Prompt ids (rendered with the generation prompt) and the messages of each."""
    ids = [policy.prompt_ids(m, max_prompt_tokens) for m in messages]
    return ids, {tuple(i): m for i, m in zip(ids, messages, strict=True)}


def reward_model_fn(
    reward: nn.Module,
    tokenizer: Any,
    template: str,
    chat_tokens: dict[str, str | None],
    messages_of: dict[tuple[int, ...], Any],
    *,
    pad_id: int,
    max_tokens: int = 512,
) -> Any:
    """A :class:`~groundwork.align.rollout.RewardFn` scoring each completion with ``reward``: the
    prompt's conversation with the completion as the assistant's turn, rendered with
    ``template`` (as the reward model's pairs were) and tokenized whole (the last ``max_tokens``
    tokens), the score read at its last token."""
    from groundwork.generate.chat import render_chat

    def score(prompts: list[list[int]], completions: list[list[int]], texts: Any) -> torch.Tensor:
        if texts is None:
            raise ConfigError("the reward model reads the completions' text: pass decode=...")
        rows = []
        for prompt, text in zip(prompts, texts, strict=True):
            messages = [*messages_of[tuple(prompt)], {"role": "assistant", "content": text}]
            rendered = render_chat(template, messages, add_generation_prompt=False, **chat_tokens)
            rows.append(list(tokenizer.encode(rendered))[-max_tokens:])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        device = next(reward.parameters()).device
        with eval_mode(reward), torch.no_grad():
            return reward(ids.to(device), attention_mask=mask.to(device)).float().cpu()

    return score


def _frozen_copy(model: nn.Module) -> nn.Module:
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


# --8<-- [start:ppo]
def align_ppo(
    model: str,
    *,
    reward_model: Path,
    train: TrainConfig,
    sources: str = PREFERENCE_SOURCES,
    limit: int | None = None,
    test_limit: int = 16,
    max_prompt_tokens: int = 192,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    ppo_epochs: int = 2,
    num_minibatches: int = 1,
    kl_coef: float = 0.05,
    target_kl: float | None = 6.0,
    kl_horizon: int = 10000,
    vf_coef: float = 0.1,
    system: str | None = None,
    method: str = "full",
    peft: dict[str, Any] | None = None,
    out: Path = Path("runs/align-ppo"),
    overwrite: bool = False,
) -> None:
    """RLHF with PPO: sample answers with the policy, score them with a trained reward model,
    and train the policy (with a value head) to raise the score under a per-token KL penalty to
    the starting model. Reports the held-out mean reward and KL before and after, and answers.
    Writes a language-model run.

    Args:
        model: The chat model to start from (also the frozen reference).
        reward_model: A run of `groundwork align reward` (same tokenizer as the model).
        train: Steps (one per PPO minibatch), batch (prompts per rollout), optimizer, schedule,
            evaluation (minus the mean reward of the held-out prompts: val_loss).
        sources: Comma-separated question sources: piqa, siqa, boolq, commonsenseqa, asdiv.
        limit: At most this many training questions per source.
        test_limit: Held-out questions per source for the before/after reward and KL.
        max_prompt_tokens: Keep the last this many tokens of a prompt.
        max_new_tokens: Longest sampled answer.
        temperature: Sampling temperature of the rollouts.
        ppo_epochs: Passes over each rollout.
        num_minibatches: Minibatches per pass (each one engine step).
        kl_coef: The KL penalty's coefficient (the starting one, with --target-kl).
        target_kl: Adapt the coefficient to keep the KL near this (Ziegler et al.); none: fixed.
        kl_horizon: The adaptive controller's horizon (in rollout samples).
        vf_coef: Weight of the value loss.
        system: A system prompt for every question.
        method: full (every weight) or lora (the value head always trains).
        peft: LoRA options as JSON.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
    """
    from groundwork.align import data as align_data
    from groundwork.align.ppo import AdaptiveKLController, PolicyWithValue, PPOObjective
    from groundwork.align.reward import check_same_tokenizer
    from groundwork.align.rollout import PromptData
    from groundwork.align.runs import KIND as REWARD_KIND
    from groundwork.align.runs import read_chat_template
    from groundwork.peft.lora import trainable_parameters
    from groundwork.runs import load_run

    out = Path(out)
    check_method(method, peft)
    check_writable(out, overwrite=overwrite, resume_hint=False)
    reward, reward_tokenizer, reward_config = load_run(Path(reward_model))
    if reward_config.get("kind") != REWARD_KIND:
        raise ConfigError(
            f"--reward-model {reward_model} is a {reward_config.get('kind')!r} run, not a reward "
            "model: train one with `groundwork align reward`"
        )
    policy = load_policy(model)
    check_same_tokenizer(policy.tokenizer, reward_tokenizer)
    template = read_chat_template(Path(reward_model)) or policy.template
    net = policy.model
    ask = align_data.prompt_messages
    train_msgs = [ask(q, system) for q in align_data.load_qa(sources, "train", limit)]
    test_msgs = [ask(q, system) for q in align_data.load_qa(sources, "test", test_limit)]
    prompts, messages_of = _prompts(policy, train_msgs, max_prompt_tokens)
    tests, test_messages_of = _prompts(policy, test_msgs, max_prompt_tokens)
    reward_fn = reward_model_fn(
        reward, reward_tokenizer, template, policy.chat_tokens,
        {**messages_of, **test_messages_of}, pad_id=policy.pad_id,
    )  # fmt: skip
    sampling = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=0)
    reference = _frozen_copy(net)
    before = score_and_kl(net, reference, tests, reward_fn, sampling, policy)
    shown = test_msgs[:: max(len(test_msgs) // 3, 1)][:3]
    answers_before = sample_answers(policy, net, shown, max_new_tokens)
    peft_section = adapt_policy(net, method, peft)
    controller = (
        AdaptiveKLController(kl_coef, target_kl, kl_horizon) if target_kl is not None else kl_coef
    )
    objective = PPOObjective(
        reference,
        reward_fn,
        sampling,
        pad_id=policy.pad_id,
        eos_ids=policy.end_ids(),
        decode=policy.tokenizer.decode,
        ppo_epochs=ppo_epochs,
        num_minibatches=num_minibatches,
        kl_coef=controller,
        vf_coef=vf_coef,
        seed=train.seed,
    )
    data = PromptData(
        prompts, train.batch_size, repeats=objective.steps_per_rollout, val_prompts=tests
    )
    agent = PolicyWithValue(net)
    counts = trainable_parameters(agent)
    result, timing = train_timed(agent, data, objective, train, out)
    net = finish_policy(agent.policy, peft_section, out, model)
    after = score_and_kl(net, reference, tests, reward_fn, sampling, policy)
    answers_after = sample_answers(policy, net, shown, max_new_tokens)
    section = {"method": "ppo", "base": model, "reward_model": str(reward_model),
               "sources": sources, "kl_coef": kl_coef, "target_kl": target_kl}  # fmt: skip
    write_policy(policy, net, out, align=section, peft=peft_section, train=train)
    metrics = write_metrics(
        out,
        method="ppo",
        base=model,
        result=result,
        peft=peft_section,
        counts=counts,
        models_resident=3,  # the policy with its value head, the reference, the reward model
        timing=timing,
        prompts={"train": len(prompts), "test": len(tests)},
        test={"before": before, "after": after},
        samples=[
            {"question": m[-1]["content"], "before": b, "after": a}
            for m, b, a in zip(shown, answers_before, answers_after, strict=True)
        ],
    )
    print(result.summary())
    print(
        f"held-out mean reward {before['score']:.3f} -> {after['score']:.3f}, "
        f"KL to the reference {before['kl']:.3f} -> {after['kl']:.3f}"
    )
    for s in metrics["samples"]:
        print(f"Q: {s['question'][:100]}\n   before: {s['before']}\n   after: {s['after']}")
    print(f"run written to {out}")


# --8<-- [end:ppo]


@torch.no_grad()
def greedy_accuracy(
    policy: Policy,
    model: nn.Module,
    prompts: list[list[int]],
    targets: list[str],
    max_new: int,
    which: str = "first",
) -> tuple[float, list[str]]:
    """The share of ``prompts`` whose greedy answer's ``which`` (first or last) number is the
    target, and the answers."""
    from groundwork.align.grpo import number_match_reward
    from groundwork.generate.decode import generate

    config = GenerationConfig(max_new_tokens=max_new, temperature=0.0)
    ends = set(policy.end_ids())
    texts: list[str] = []
    with eval_mode(model):
        for start in range(0, len(prompts), EVAL_BATCH):
            out = generate(
                model, prompts[start : start + EVAL_BATCH], config,
                pad_id=policy.pad_id, eos_ids=sorted(ends),
            )  # fmt: skip
            texts += [
                policy.tokenizer.decode([t for t in s if t not in ends]) for s in out.sequences
            ]
    correct = 0.0
    for text, target in zip(texts, targets, strict=True):
        correct += number_match_reward(text, target, which=which)  # type: ignore[arg-type]
    return correct / max(len(prompts), 1), texts


# --8<-- [start:grpo]
def align_grpo(
    model: str,
    *,
    train: TrainConfig,
    group_size: int = 8,
    beta: float = 0.04,
    loss_type: str = "grpo",
    num_iterations: int = 1,
    limit: int | None = None,
    test_limit: int = 200,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    instruction: str = ASDIV_INSTRUCTION,
    number: str = "last",
    method: str = "full",
    peft: dict[str, Any] | None = None,
    out: Path = Path("runs/align-grpo"),
    overwrite: bool = False,
) -> None:
    """GRPO on ASDiv arithmetic problems with an exact-answer reward (1 when the answer's last,
    or first, number is right): groups of sampled answers per problem, advantages relative to
    the group, no value model. Reports the held-out accuracy of greedy answers before and
    after. Writes a language-model run.

    Args:
        model: The chat model to start from (also the frozen reference).
        train: Steps, batch (problems per step; each sampled group_size times), optimizer,
            schedule, evaluation (minus the mean reward of held-out problems: val_loss).
        group_size: Answers sampled per problem.
        beta: Weight of the KL penalty to the reference (0: no reference model in memory).
        loss_type: grpo (the paper: mean over each answer's tokens), bnpo or dr_grpo.
        num_iterations: Updates per batch of rollouts (the paper's mu).
        limit: At most this many training problems.
        test_limit: Held-out problems for the before/after accuracy.
        max_new_tokens: Longest sampled answer.
        temperature: Sampling temperature of the rollouts.
        instruction: Appended to every problem.
        number: Which number of an answer is its answer: last (as reasoning ends: "..., so 15")
            or first (as the asdiv evaluation task reads it).
        method: full (every weight) or lora.
        peft: LoRA options as JSON.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
    """
    from groundwork.align import data as align_data
    from groundwork.align.grpo import GRPOObjective, number_reward
    from groundwork.align.rollout import PromptData
    from groundwork.peft.lora import trainable_parameters

    out = Path(out)
    check_method(method, peft)
    check_writable(out, overwrite=overwrite, resume_hint=False)
    policy = load_policy(model)
    net = policy.model

    def ask(q: Any) -> list[dict[str, str]]:
        question = f"{q.question} {instruction}".strip()
        return [{"role": "user", "content": question}]

    problems = align_data.problems("train", limit)
    tests = align_data.problems("test", test_limit)
    prompts = [policy.prompt_ids(ask(q), 256) for q in problems]
    test_prompts = [policy.prompt_ids(ask(q), 256) for q in tests]
    answers = {tuple(p): q.target for p, q in zip(prompts, problems, strict=True)}
    answers.update({tuple(p): q.target for p, q in zip(test_prompts, tests, strict=True)})
    targets = [q.target for q in tests]
    if number not in ("first", "last"):
        raise ConfigError(f"--number must be first or last, got {number!r}")
    before, texts_before = greedy_accuracy(
        policy, net, test_prompts, targets, max_new_tokens, number
    )
    reference = _frozen_copy(net) if beta > 0 else None
    peft_section = adapt_policy(net, method, peft)
    objective = GRPOObjective(
        reference,
        number_reward(answers, which=number),  # type: ignore[arg-type]
        GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=0),
        pad_id=policy.pad_id,
        eos_ids=policy.end_ids(),
        decode=policy.tokenizer.decode,
        group_size=group_size,
        beta=beta,
        num_iterations=num_iterations,
        loss_type=loss_type,  # type: ignore[arg-type]
        seed=train.seed,
    )
    data = PromptData(
        prompts,
        train.batch_size,
        repeats=objective.steps_per_rollout,
        val_prompts=test_prompts[:32],
    )
    counts = trainable_parameters(net)
    result, timing = train_timed(net, data, objective, train, out)
    net = finish_policy(net, peft_section, out, model)
    after, texts_after = greedy_accuracy(policy, net, test_prompts, targets, max_new_tokens, number)
    section = {"method": "grpo", "base": model, "group_size": group_size, "beta": beta,
               "loss_type": loss_type, "instruction": instruction, "number": number}  # fmt: skip
    write_policy(policy, net, out, align=section, peft=peft_section, train=train)
    write_metrics(
        out,
        method="grpo",
        base=model,
        result=result,
        peft=peft_section,
        counts=counts,
        models_resident=2 if reference is not None else 1,
        timing=timing,
        problems={"train": len(problems), "test": len(tests)},
        test_accuracy={"before": round(before, 4), "after": round(after, 4)},
        samples=[
            {"question": q.question, "target": q.target, "before": b, "after": a}
            for q, b, a in list(zip(tests, texts_before, texts_after, strict=True))[:3]
        ],
    )
    print(result.summary())
    print(f"held-out ASDiv accuracy (greedy, {number} number): {before:.3f} -> {after:.3f}")
    print(f"run written to {out}")


# --8<-- [end:grpo]
