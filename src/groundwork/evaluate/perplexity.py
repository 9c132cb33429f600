r"""Perplexity and bits per byte of a text, with the sliding-window method.

A causal language model assigns a text $x_1 \dots x_N$ (token ids) the probability
$\prod_t p_\theta(x_t \mid x_{<t})$. Its average negative log-likelihood in nats per token, and the
perplexity, are

$$ \mathrm{NLL} = -\frac{1}{N-1} \sum_{t=2}^{N} \log p_\theta(x_t \mid x_{<t}), \qquad
   \mathrm{PPL} = e^{\mathrm{NLL}}, $$

(the first token has no context and is not scored). Perplexity depends on the tokenizer; bits per
byte does not: the summed NLL divided by $\ln 2$ and by the UTF-8 bytes $B$ of the text,
$\mathrm{bpb} = \sum_t \mathrm{nll}_t / (B \ln 2)$.

A model sees at most ``max_seq_len`` tokens, so a long text is scored in windows of ``window``
tokens that move by ``stride`` (Hugging Face's "perplexity of fixed-length models"): each window
scores only the tokens the previous window did not, with the rest of the window as left context.
``stride == window`` gives disjoint chunks (fast, little context at each chunk's start); a small
stride gives every token nearly a full window of context (slow, closer to the true NLL)::

    window 4, stride 2:   [a b c d]            scores b c d
                              [c d e f]        scores e f   (c d are context only)
                                  [e f g h]    scores g h

Chapter 1 (Language models) defines perplexity; chapter 11 (Evaluation) uses it.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.models.protocol import CausalLM, max_seq_len
from groundwork.numerics import bits_per_byte as nats_to_bits_per_byte
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer


@dataclass
class PerplexityResult:
    """What :func:`perplexity` returns."""

    tokens: int
    """Number of scored (predicted) tokens."""
    bytes: int
    """UTF-8 bytes of the text(s)."""
    nats_per_token: float
    """Mean negative log-likelihood per scored token, in nats."""
    perplexity: float
    """``exp(nats_per_token)``."""
    bits_per_byte: float
    """Summed NLL / (ln 2 * bytes)."""
    window: int
    """Tokens per window."""
    stride: int
    """Tokens each window moves by."""

    @property
    def total_nats(self) -> float:
        """Summed negative log-likelihood of the scored tokens."""
        return self.nats_per_token * self.tokens


def model_max_len(model: nn.Module) -> int:
    """The longest sequence ``model`` accepts: ``config.max_seq_len`` of the
    :class:`~groundwork.models.protocol.CausalLM` protocol, which every causal LM satisfies."""
    return max_seq_len(cast(CausalLM, model))


# --8<-- [start:sliding_windows]
def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The ``(begin, end, n_new)`` windows of the sliding-window method.

    Window ``[begin, end)`` is fed to the model; its last ``n_new`` tokens are scored (each
    predicted from every earlier token of the window). A token is scored at most once; a window's
    first token has no context in it, so with ``stride == window`` (disjoint chunks) the first
    token of every chunk goes unscored, exactly as in Hugging Face's recipe.

    >>> sliding_windows(8, window=4, stride=2)
    [(0, 4, 3), (2, 6, 2), (4, 8, 2)]
    >>> sliding_windows(8, window=4, stride=4)
    [(0, 4, 3), (4, 8, 3)]
    """
    windows = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        n_new = end - prev_end  # tokens no earlier window scored
        n_new = min(n_new, end - begin - 1)  # the window's first token has no context
        windows.append((begin, end, n_new))
        prev_end = end
        if end == n_tokens:
            break
    return windows


# --8<-- [end:sliding_windows]


@torch.no_grad()
def token_nll(
    model: nn.Module,
    ids: Sequence[int],
    *,
    window: int,
    stride: int,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """Summed NLL in nats, and the number of tokens scored, over ``ids`` in sliding windows.

    Windows are batched right-padded: a causal model's logits at real positions do not depend on
    padding to their right, so no attention mask is needed.
    """
    if device is None:
        device = next(model.parameters()).device
    total, count = 0.0, 0
    windows = sliding_windows(len(ids), window, stride)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        longest = max(end - begin for begin, end, _ in chunk)
        x = torch.zeros(len(chunk), longest, dtype=torch.long)  # (B, T) right-padded
        y = torch.full((len(chunk), longest), -100, dtype=torch.long)  # (B, T) targets
        for row, (begin, end, n_new) in enumerate(chunk):
            x[row, : end - begin] = torch.tensor(ids[begin:end])
            # logits at position j predict token j + 1; score only the last n_new tokens
            y[row, end - begin - 1 - n_new : end - begin - 1] = torch.tensor(ids[end - n_new : end])
        logits = model(x.to(device)).float()  # (B, T, V)
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),  # (B*T, V)
            y.to(device).reshape(-1),  # (B*T,)
            ignore_index=-100,
            reduction="sum",
        )
        total += nll.item()
        count += sum(n_new for _, _, n_new in chunk)
    return total, count


def _check_window(model: nn.Module, window: int | None, stride: int | None) -> tuple[int, int]:
    limit = model_max_len(model)
    window = limit if window is None else window
    if window < 2:
        raise ConfigError(f"window must be >= 2 tokens, got {window}")
    if window > limit:
        raise ConfigError(f"window {window} is longer than the model's max_seq_len {limit}")
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ConfigError(f"stride must be between 1 and window ({window}), got {stride}")
    return window, stride


def _result(
    total: float, n_tokens: int, n_bytes: int, window: int, stride: int
) -> PerplexityResult:
    nats = total / n_tokens
    return PerplexityResult(
        tokens=n_tokens,
        bytes=n_bytes,
        nats_per_token=nats,
        perplexity=math.exp(nats),
        bits_per_byte=nats_to_bits_per_byte(total, n_bytes),
        window=window,
        stride=stride,
    )


def perplexity(
    model: nn.Module,
    tokenizer: Tokenizer,
    text: str,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    r"""Perplexity and bits per byte of ``text`` under ``model``, with sliding windows.

    $\mathrm{PPL} = \exp\big(\frac{1}{|S|}\sum_{t \in S} -\log p(x_t \mid w_t)\big)$ over the
    scored tokens $S$, $w_t$ being the tokens left of $t$ in its window (:func:`sliding_windows`).

    Args:
        model: A causal LM mapping ``(B, T)`` ids to ``(B, T, V)`` logits.
        tokenizer: Encodes ``text``.
        text: The text to score (at least two tokens).
        window: Tokens per window; default the model's ``max_seq_len``.
        stride: Tokens each window moves by, ``1 <= stride <= window``; default ``window``
            (disjoint chunks).
        batch_size: Windows per forward pass.
        device: Where to run; default the model's device.

    Returns:
        A :class:`PerplexityResult`; ``bytes`` counts the whole text (unscored tokens included).

    Raises:
        EmptyCorpusError: ``text`` encodes to fewer than two tokens.
        ConfigError: a bad ``window`` or ``stride``.

    Example:
        >>> pre = groundwork.load("smollm2-135m-instruct")  # doctest: +SKIP
        >>> perplexity(pre.model, pre.tokenizer, text, window=512, stride=256)  # doctest: +SKIP
    """
    return perplexity_of_texts(
        model, tokenizer, [text], window=window, stride=stride, batch_size=batch_size, device=device
    )


def perplexity_of_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: Iterable[str],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    """Pooled perplexity of several documents, each scored on its own (no cross-document context).

    Summed NLL over every document divided by the summed scored tokens (and bytes); documents of
    fewer than two tokens are skipped.

    Raises:
        EmptyCorpusError: no document has two tokens or more.
        ConfigError: a bad ``window`` or ``stride``.
    """
    window, stride = _check_window(model, window, stride)
    total, n_tokens, n_bytes = 0.0, 0, 0
    with eval_mode(model):
        for text in texts:
            ids = tokenizer.encode(text)
            if len(ids) < 2:
                continue
            nats, count = token_nll(
                model, ids, window=window, stride=stride, batch_size=batch_size, device=device
            )
            total += nats
            n_tokens += count
            n_bytes += len(text.encode("utf-8"))
    if n_tokens == 0:
        raise EmptyCorpusError("no text to score: give a text of at least two tokens")
    return _result(total, n_tokens, n_bytes, window, stride)


def perplexity_of_source(
    model: nn.Module,
    tokenizer: Tokenizer,
    name: str,
    *,
    split: str = "val",
    limit: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    """Pooled perplexity of a bundled text source's split (e.g. ``"shakespeare"``, ``"val"``).

    Args:
        name: A text source (``groundwork data list``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        limit: Score only the first ``limit`` documents.

    Raises:
        UnknownNameError: no such source.
        EmptyCorpusError: the split holds no text.
    """
    from groundwork import corpus

    docs = corpus.load_documents(name, split=split)  # type: ignore[arg-type]
    if limit is not None:
        docs = docs[:limit]
    return perplexity_of_texts(
        model,
        tokenizer,
        (d.text for d in docs),
        window=window,
        stride=stride,
        batch_size=batch_size,
        device=device,
    )
