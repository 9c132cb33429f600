r"""Contextual calibration of a few-shot classifier (Zhao et al. 2021, "Calibrate Before Use").

A few-shot prompt biases a model towards some labels: the label seen most often among the shots
(*majority label bias*), the one seen last (*recency bias*), or simply the more frequent word
(*common token bias*). Zhao et al. measure the bias by asking the same prompt about a
*content-free* input ("N/A", the empty string, "[MASK]"): an unbiased model would answer each
label with equal probability. With $\hat p_{\mathrm{cf}}$ the model's label probabilities on the
content-free inputs (averaged, each renormalised over the labels), every test prediction is
corrected by

$$ q = \mathrm{normalise}\big(W \hat p\big), \qquad W = \mathrm{diag}(\hat p_{\mathrm{cf}})^{-1}, $$

so that the content-free input itself would be scored uniformly. The prediction is
$\arg\max_j q_j$. No parameters are learnt; it costs one extra scoring pass per prompt.

The label probabilities $\hat p$ are the choices' log-likelihoods
(:func:`~groundwork.evaluate.harness.score_multiple_choice`) renormalised over the label set.

Chapter 15 (Prompting, agents and retrieval).
"""

from collections.abc import Sequence

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.evaluate.harness import score_multiple_choice
from groundwork.evaluate.task import Doc, Task
from groundwork.tokenize.base import Tokenizer

CONTENT_FREE = ("N/A", "", "[MASK]")
"""The content-free inputs of Zhao et al. (2021), averaged."""


# --8<-- [start:calibrate]
def label_probs(loglikelihoods: Sequence[Sequence[float]]) -> torch.Tensor:
    """The choices' log-likelihoods renormalised over the label set: ``(N, C)`` probabilities.

    >>> label_probs([[0.0, 0.0], [-1.0, -3.0]]).round(decimals=3)
    tensor([[0.5000, 0.5000],
            [0.8810, 0.1190]], dtype=torch.float64)
    """
    ll = torch.tensor([list(row) for row in loglikelihoods], dtype=torch.float64)  # (N, C)
    if ll.dim() != 2 or ll.shape[0] == 0:
        raise ConfigError("label_probs needs one row of choice log-likelihoods per example")
    return torch.softmax(ll, dim=1)


def calibrate(probs: torch.Tensor, content_free: torch.Tensor) -> torch.Tensor:
    """Contextual calibration: ``q = normalise(diag(p_cf)^-1 p)`` for every row of ``probs``.

    Args:
        probs: Label probabilities ``(N, C)`` of the test inputs under one prompt.
        content_free: The same prompt's label probabilities ``(C,)`` on content-free inputs.

    >>> calibrate(torch.tensor([[0.7, 0.3]]), torch.tensor([0.8, 0.2]))  # the bias flips it
    tensor([[0.3684, 0.6316]])

    Raises:
        ConfigError: shapes that do not match, or a content-free probability that is not > 0.
    """
    if probs.dim() != 2 or content_free.shape != (probs.shape[1],):
        raise ConfigError(
            f"calibrate needs probs (N, C) and content_free (C,); got {tuple(probs.shape)} and "
            f"{tuple(content_free.shape)}"
        )
    if not bool((content_free > 0).all()):
        raise ConfigError("content-free probabilities must all be > 0 to be inverted")
    q = probs / content_free[None, :]  # (N, C): W p with W = diag(p_cf)^-1
    return q / q.sum(dim=1, keepdim=True)


# --8<-- [end:calibrate]


def content_free_probs(
    model: nn.Module,
    tokenizer: Tokenizer,
    task: Task,
    shots: Sequence[Doc],
    content_free_docs: Sequence[Doc],
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """``p_cf``: the label probabilities of the prompt ``shots`` on each content-free document
    (e.g. the task's document with its text replaced by ``"N/A"``), averaged: ``(C,)``.

    Raises:
        ConfigError: no content-free documents, or documents with different label sets.
    """
    if not content_free_docs:
        raise ConfigError("pass at least one content-free document (e.g. text 'N/A')")
    examples = [task.render(doc, shots) for doc in content_free_docs]
    if len({len(e.choices) for e in examples}) != 1:
        raise ConfigError("content-free documents must all have the same label set")
    scores = score_multiple_choice(model, tokenizer, examples, batch_size=batch_size)
    probs = label_probs([e["loglikelihoods"] for e in scores["examples"]])  # (n_cf, C)
    return probs.mean(dim=0)
