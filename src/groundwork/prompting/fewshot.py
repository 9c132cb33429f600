r"""In-context learning: which solved examples go in a prompt, and in what order.

A few-shot prompt (Brown et al. 2020, GPT-3) shows ``k`` solved examples before the question;
nothing is trained, yet accuracy moves with ``k``, with *which* examples are shown and even with
their *order* (Lu et al. 2022, "Fantastically Ordered Prompts and Where to Find Them": the same
four examples span near-chance to near-state-of-the-art over their 24 permutations).

Two selection rules:

* **random** — ``k`` examples drawn from a pool with a seeded generator (the harness's rule);
* **nearest neighbours** (KATE, Liu et al. 2022, "What Makes Good In-Context Examples for
  GPT-3?") — the ``k`` pool examples whose sentence embeddings (MiniLM, mean pooled and
  normalised, :mod:`groundwork.evaluate.embeddings`) have the highest cosine similarity to the
  question's, placed with the *most similar last*, next to the question, as KATE's best order.

Rendering a document with its shots is the task's own rule
(:meth:`~groundwork.evaluate.task.Task.render`), so a prompt built here is scored exactly as the
harness scores any other (:func:`~groundwork.evaluate.harness.score_multiple_choice`).

Chapter 15 (Prompting, agents and retrieval).
"""

import itertools
import math
import random
from collections.abc import Sequence

import torch

from groundwork.checks import non_negative_int, positive_int
from groundwork.errors import ConfigError
from groundwork.evaluate.task import Doc, Example, Task


# --8<-- [start:select]
def random_shots(pool_size: int, k: int, *, seed: int) -> list[int]:
    """``k`` distinct indices into a pool of ``pool_size`` examples, deterministic for ``seed``.

    >>> random_shots(10, 3, seed=0)
    [6, 9, 0]

    Raises:
        ConfigError: ``k`` larger than the pool, or negative.
    """
    non_negative_int("k", k)
    if k > pool_size:
        raise ConfigError(f"{k} shots asked for but the pool holds only {pool_size} examples")
    return random.Random(seed).sample(range(pool_size), k)


def nearest_shots(query: torch.Tensor, pool: torch.Tensor, k: int) -> list[int]:
    """The ``k`` pool rows most similar to ``query`` (cosine), the most similar *last*.

    Args:
        query: The question's embedding ``(d,)``.
        pool: The pool's embeddings ``(N, d)``.
        k: How many to pick (``0 <= k <= N``).

    >>> pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> nearest_shots(torch.tensor([1.0, 0.1]), pool, 2)  # row 2 is close, row 0 closest
    [2, 0]

    Raises:
        ConfigError: mismatched shapes, or ``k`` outside ``[0, N]``.
    """
    non_negative_int("k", k)
    if query.dim() != 1 or pool.dim() != 2 or pool.shape[1] != query.shape[0]:
        raise ConfigError(
            f"nearest_shots needs a query (d,) and a pool (N, d); got {tuple(query.shape)} and "
            f"{tuple(pool.shape)}"
        )
    if k > pool.shape[0]:
        raise ConfigError(f"{k} shots asked for but the pool holds only {pool.shape[0]} examples")
    sims = torch.nn.functional.cosine_similarity(pool, query[None, :], dim=1)  # (N,)
    best = torch.topk(sims, k).indices.tolist()  # most similar first
    return best[::-1]  # ... and placed last, next to the question


# --8<-- [end:select]


def orderings(k: int, n: int, *, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` distinct permutations of ``range(k)`` (all of them when ``n >= k!``), the identity
    first, the rest drawn at random without repetition.

    >>> orderings(3, 2, seed=0)[0]
    (0, 1, 2)

    Raises:
        ConfigError: ``n < 1``.
    """
    positive_int("n", n)
    total = math.factorial(k)
    if n >= total:
        return list(itertools.permutations(range(k)))
    rng = random.Random(seed)
    chosen: list[tuple[int, ...]] = [tuple(range(k))]
    seen = set(chosen)
    while len(chosen) < n:
        perm = tuple(rng.sample(range(k), k))
        if perm not in seen:
            seen.add(perm)
            chosen.append(perm)
    return chosen


def render_with_shots(
    task: Task, docs: Sequence[Doc], shots: Sequence[Sequence[Doc]]
) -> list[Example]:
    """Each document rendered with its own solved examples (``shots[i]`` for ``docs[i]``).

    Raises:
        ConfigError: ``docs`` and ``shots`` of different lengths.
    """
    if len(docs) != len(shots):
        raise ConfigError(f"{len(docs)} documents but {len(shots)} lists of shots")
    return [task.render(doc, s) for doc, s in zip(docs, shots, strict=True)]
