r"""A GPT-3-style few-shot evaluation harness: log-likelihood scoring and greedy generation.

Brown et al. (2020, "Language Models are Few-Shot Learners", GPT-3) evaluate a model without
training it: each test example becomes a *context* (an optional description, ``k`` solved
examples, then the question) and is answered either by

* **multiple choice**: score every candidate continuation $c$ by its log-likelihood
  $\ell(c) = \sum_{i} \log p_\theta(c_i \mid \text{context}, c_{<i})$ and pick the best, or
* **generation**: decode greedily until a newline and compare with the answer (exact match after
  normalisation).

Two multiple-choice accuracies are reported, as in Gao et al.'s lm-evaluation-harness:

$$ \mathrm{acc} = [\arg\max_j \ell(c_j) = y], \qquad
   \mathrm{acc\_norm} = [\arg\max_j \ell(c_j) / \mathrm{bytes}(c_j) = y], $$

where $\mathrm{bytes}(c_j)$ is the UTF-8 length of choice $j$: the sum favours short answers (every
token costs probability), the per-byte average does not.

Tokenisation follows lm-evaluation-harness: trailing spaces of the context move to the front of
the continuation, then ``encode(context + continuation)`` is split at ``len(encode(context))``, so
the continuation's tokens are those the model would see in the running text. Contexts too long for
the model are cut from the left (the continuation always stays whole); the number of examples cut
is reported as ``truncated``.

Few-shot examples are drawn with a seeded RNG per test example (``Random(seed, index)``), from the
task's few-shot split or, when it has none, from the evaluated split *excluding the example
itself*; results do not depend on ``limit`` or batch size.

What a task is (:class:`~groundwork.evaluate.task.Task`) and the registry of tasks live in
:mod:`groundwork.evaluate.task`; their names are re-exported here.

Chapter 11 (Evaluation) of the docs; chapter 1 relates log-likelihood to perplexity.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from groundwork.checks import non_negative_int, positive_int
from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.evaluate.perplexity import model_max_len
from groundwork.evaluate.task import (
    Doc,
    Example,
    Task,
    get_task,
    normalize_answer,
)
from groundwork.runtime import eval_mode
from groundwork.tables import markdown_table
from groundwork.tokenize.base import Tokenizer

# --- few-shot sampling ----------------------------------------------------------------------


# --8<-- [start:sample_shots]
def sample_shots(
    task: Task, docs: Sequence[Doc], index: int, k: int, *, seed: int, pool: Sequence[Doc] | None
) -> list[Doc]:
    """``k`` solved examples for test document ``docs[index]``, deterministic for ``seed``.

    Drawn without replacement from ``pool`` (a separate few-shot split) or, when ``pool`` is
    ``None``, from ``docs`` without ``docs[index]``.

    Raises:
        ConfigError: fewer than ``k`` candidates.
    """
    if k == 0:
        return []
    rng = random.Random(seed * 1_000_003 + index)
    if pool is not None:
        if k > len(pool):
            raise ConfigError(
                f"task {task.name!r}: {k} shots asked for but its few-shot split has {len(pool)}"
            )
        return [pool[i] for i in rng.sample(range(len(pool)), k)]
    if k > len(docs) - 1:
        raise ConfigError(
            f"task {task.name!r}: {k} shots asked for but only {len(docs) - 1} other examples"
        )
    picks = rng.sample(range(len(docs) - 1), k)
    return [docs[i if i < index else i + 1] for i in picks]  # skip the test example


# --8<-- [end:sample_shots]


# --- log-likelihood scoring -----------------------------------------------------------------


@dataclass
class Request:
    """One continuation to score: its tokens and where they start in the model's input."""

    context_ids: list[int]
    continuation_ids: list[int]
    truncated: bool = False


# --8<-- [start:encode_pair]
def encode_pair(
    tokenizer: Tokenizer, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` as the model reads them after it.

    As lm-evaluation-harness: trailing spaces move from the context to the continuation, then
    ``encode(context + continuation)`` is split at ``len(encode(context))``.

    >>> from groundwork.tokenize.char import CharTokenizer
    >>> tok = CharTokenizer.train(["ab c"], vocab_size=10)
    >>> encode_pair(tok, "ab ", "c")  # the space belongs to the continuation
    ([3, 4], [2, 5])
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    n_context = len(tokenizer.encode(context))
    return whole[:n_context], whole[n_context:]


# --8<-- [end:encode_pair]


def make_request(
    tokenizer: Tokenizer, context: str, continuation: str, max_len: int | None
) -> Request:
    """Tokenise one (context, continuation) pair, cutting the context from the left to fit."""
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    if not continuation_ids:
        raise ConfigError(f"the continuation {continuation!r} encodes to no tokens")
    if not context_ids:  # nothing to condition on: start from the end-of-text token
        if tokenizer.eot_id is None:
            raise ConfigError("empty context and the tokenizer has no end-of-text token")
        context_ids = [tokenizer.eot_id]
    truncated = False
    if max_len is not None:
        room = max_len + 1 - len(continuation_ids)  # the last token is never fed to the model
        if room < 1:
            raise ConfigError(
                f"the continuation {continuation!r} ({len(continuation_ids)} tokens) does not "
                f"fit the model's {max_len}-token window"
            )
        if len(context_ids) > room:
            context_ids, truncated = context_ids[-room:], True
    return Request(context_ids, continuation_ids, truncated)


# --8<-- [start:loglikelihood]
@torch.no_grad()
def loglikelihoods(
    model: nn.Module,
    requests: Sequence[Request],
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> list[tuple[float, bool]]:
    """Summed log-probability of each request's continuation, and whether it is greedy.

    $\\ell = \\sum_i \\log p(c_i \\mid \\text{context}, c_{<i})$; "greedy" means every $c_i$ is the
    arg-max token. The model reads ``(context + continuation)[:-1]``; requests whose inputs are
    identical (the choices ``" A"`` ... ``" D"`` after one question are single tokens, so they
    share their input) are scored from one forward pass. Inputs are batched right-padded to the
    longest: a causal model's logits at real positions do not depend on padding to their right.
    They are run longest first (as lm-evaluation-harness does), so a batch holds inputs of
    similar length and little padding; results come back in the input order.
    """
    if device is None:
        device = next(model.parameters()).device
    # One entry per distinct model input, with the requests it serves.
    served: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        served.setdefault(tuple(r.context_ids + r.continuation_ids)[:-1], []).append(i)
    inputs = sorted(served, key=len, reverse=True)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        x = torch.zeros(len(chunk), len(chunk[0]), dtype=torch.long)  # (B, T), longest first
        for row, ids in enumerate(chunk):
            x[row, : len(ids)] = torch.tensor(ids)
        log_probs = torch.log_softmax(model(x.to(device)).float(), dim=-1).cpu()  # (B, T, V)
        n_served = 0
        for row, ids in enumerate(chunk):
            for i in served[ids]:
                target = torch.tensor(requests[i].continuation_ids)  # (n,)
                n = len(target)
                lp = log_probs[row, len(ids) - n : len(ids)]  # (n, V): predicting the continuation
                total = lp.gather(1, target[:, None]).sum().item()
                greedy = bool((lp.argmax(dim=-1) == target).all())
                results[i] = (total, greedy)
                n_served += 1
        if on_batch is not None:  # e.g. a progress bar's update(n)
            on_batch(n_served)
    return results


# --8<-- [end:loglikelihood]


# --- evaluation -----------------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="req")


def _stderr(p: float, n: int) -> float:
    """Standard error of a mean of ``n`` 0/1 scores with mean ``p``."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def score_multiple_choice(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Any]:
    """``acc``, ``acc_norm`` (per-byte), their standard errors and per-example scores."""
    max_len = model_max_len(model)
    requests, owners = [], []
    for i, ex in enumerate(examples):
        for choice in ex.choices:
            requests.append(make_request(tokenizer, ex.context, choice, max_len))
            owners.append(i)
    with _progress(len(requests), desc, progress) as bar:
        scores = loglikelihoods(model, requests, batch_size=batch_size, on_batch=bar.update)
    per_example: list[dict[str, Any]] = []
    k = 0
    for ex in examples:
        lls = [scores[k + j][0] for j in range(len(ex.choices))]
        truncated = any(requests[k + j].truncated for j in range(len(ex.choices)))
        k += len(ex.choices)
        n_bytes = [max(1, len(c.lstrip(" ").encode("utf-8"))) for c in ex.choices]
        pred = max(range(len(lls)), key=lambda j: lls[j])
        pred_norm = max(range(len(lls)), key=lambda j: lls[j] / n_bytes[j])
        per_example.append(
            dict(
                loglikelihoods=lls,
                pred=pred,
                pred_norm=pred_norm,
                gold=ex.gold,
                truncated=truncated,
            )
        )
    n = len(per_example)
    acc = sum(e["pred"] == e["gold"] for e in per_example) / n
    acc_norm = sum(e["pred_norm"] == e["gold"] for e in per_example) / n
    return dict(
        acc=acc,
        acc_stderr=_stderr(acc, n),
        acc_norm=acc_norm,
        acc_norm_stderr=_stderr(acc_norm, n),
        n=n,
        truncated=sum(e["truncated"] for e in per_example),
        examples=per_example,
    )


def score_generation(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 16,
    normalize: Callable[[str], str] = normalize_answer,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Any]:
    """Greedy decoding up to a newline; ``exact_match`` of normalised prediction and gold."""
    from groundwork.generate import GenerationConfig, stream

    config = GenerationConfig(temperature=0, max_new_tokens=max_new_tokens, stop_strings=("\n",))
    max_len = model_max_len(model)
    per_example: list[dict[str, Any]] = []
    with _progress(len(examples), desc, progress) as bar:
        for ex in examples:
            ids = tokenizer.encode(ex.context)
            truncated = False
            if max_len is not None and len(ids) > max_len - max_new_tokens:
                ids, truncated = ids[-(max_len - max_new_tokens) :], True
            prediction = "".join(stream(model, tokenizer, ids, config))
            correct = normalize(prediction) == normalize(str(ex.gold))
            per_example.append(
                dict(prediction=prediction, gold=ex.gold, correct=correct, truncated=truncated)
            )
            bar.update(1)
    n = len(per_example)
    em = sum(e["correct"] for e in per_example) / n
    return dict(
        exact_match=em,
        exact_match_stderr=_stderr(em, n),
        n=n,
        truncated=sum(e["truncated"] for e in per_example),
        examples=per_example,
    )


def build_examples(
    task: Task, shots: int, *, limit: int | None = None, seed: int = 1234
) -> list[Example]:
    """Render the first ``limit`` documents of ``task`` with ``shots`` solved examples each.

    Raises:
        ConfigError: a bad ``limit`` or ``shots``, or more shots than examples available.
        EmptyCorpusError: the task has no documents.
    """
    non_negative_int("shots", shots)
    if limit is not None:
        positive_int("limit", limit)
    docs = task.docs()
    if not docs:
        raise EmptyCorpusError(f"task {task.name!r} has no examples")
    pool = task.fewshot_docs() if task.fewshot_docs is not None and shots > 0 else None
    n = len(docs) if limit is None else min(limit, len(docs))
    return [
        task.render(docs[i], sample_shots(task, docs, i, shots, seed=seed, pool=pool))
        for i in range(n)
    ]


def evaluate_task(
    model: nn.Module,
    tokenizer: Tokenizer,
    task: str | Task,
    shots: int = 0,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 1234,
    progress: bool = False,
    keep_examples: bool = False,
) -> dict[str, Any]:
    """Evaluate one task at one number of shots; see :func:`evaluate_tasks`."""
    task = get_task(task)
    examples = build_examples(task, shots, limit=limit, seed=seed)
    desc = f"{task.name} {shots}-shot"
    with eval_mode(model):
        if task.kind == "multiple_choice":
            scores = score_multiple_choice(
                model, tokenizer, examples, batch_size=batch_size, progress=progress, desc=desc
            )
        else:
            scores = score_generation(
                model,
                tokenizer,
                examples,
                max_new_tokens=task.max_new_tokens,
                normalize=task.normalize,
                progress=progress,
                desc=desc,
            )
    if task.metrics is not None and task.kind == "multiple_choice":
        docs = task.docs()[: len(examples)]  # build_examples renders the first documents
        extra = task.metrics(docs, [e["loglikelihoods"] for e in scores["examples"]])
        scores.update(extra, metrics=[k for k in extra if not k.endswith("_stderr")])
    if not keep_examples:
        scores.pop("examples")
    return dict(task=task.name, shots=shots, kind=task.kind, **scores)


def evaluate_tasks(
    model: nn.Module,
    tokenizer: Tokenizer,
    task_names: Sequence[str | Task],
    shots: Sequence[int] = (0,),
    *,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 1234,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every task at every number of shots.

    Args:
        model: A causal LM mapping ``(B, T)`` ids to ``(B, T, V)`` logits (``GPT``, ``Llama``).
        tokenizer: Its tokenizer.
        task_names: Registered task names (see :data:`TASKS`) or :class:`Task` objects.
        shots: Numbers of solved examples in each context, e.g. ``[0, 5]``.
        limit: Evaluate only the first ``limit`` examples of each task.
        batch_size: Continuations per forward pass.
        seed: Seed of the few-shot sampling.
        progress: Show a tqdm progress bar.

    Returns:
        ``{"results": [{"task", "shots", "kind", "n", "truncated", "acc", "acc_norm", ...}],
        "config": {...}}``, JSON-serialisable; :func:`format_markdown` renders it.

    Raises:
        UnknownNameError: an unknown task name.
        ConfigError: more shots than available examples, or a bad ``limit``.
        DataError: a task file with a missing field.
    """
    tasks = [get_task(t) for t in task_names]  # fail on a typo before any work
    rows = [
        evaluate_task(
            model,
            tokenizer,
            task,
            k,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        for task in tasks
        for k in shots
    ]
    config = dict(
        tasks=[t.name for t in tasks],
        shots=list(shots),
        limit=limit,
        batch_size=batch_size,
        seed=seed,
    )
    return dict(results=rows, config=config)


def format_markdown(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_tasks`' results.

    >>> print(format_markdown({"results": [dict(task="piqa", shots=0, n=8, truncated=0,
    ...     acc=0.5, acc_stderr=0.19, acc_norm=0.625, acc_norm_stderr=0.18)]}))
    | task | shots | n | metric | value | ± stderr | truncated |
    |---|---:|---:|---|---:|---:|---:|
    | piqa | 0 | 8 | acc | 0.5000 | 0.1900 | 0 |
    | piqa | 0 | 8 | acc_norm | 0.6250 | 0.1800 | 0 |
    """
    header = ["task", "shots", "n", "metric", "value", "± stderr", "truncated"]
    rows = []
    for r in results["results"]:
        names = [m for m in ("acc", "acc_norm", "exact_match") if m in r] + r.get("metrics", [])
        for metric in names:
            value, stderr = r[metric], r.get(metric + "_stderr")
            value = "n/a" if value is None else f"{value:.4f}"  # e.g. no data for a bias score
            stderr = "" if stderr is None else f"{stderr:.4f}"
            rows.append([r["task"], r["shots"], r["n"], metric, value, stderr, r["truncated"]])
    return markdown_table(header, rows, align="lrrlrrr").rstrip("\n")  # print() adds the newline


__all__ = [
    "Request",
    "build_examples",
    "encode_pair",
    "evaluate_task",
    "evaluate_tasks",
    "format_markdown",
    "loglikelihoods",
    "make_request",
    "sample_shots",
    "score_generation",
    "score_multiple_choice",
]
