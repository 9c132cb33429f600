r"""Logit processors: the small functions that turn a model's next-token logits into a choice.

A language model gives, at each step, logits $z \in \mathbb{R}^V$ over the vocabulary. Every
decoding strategy in this module reshapes that distribution before we sample from
$p = \mathrm{softmax}(z)$:

* repetition penalty (Keskar et al. 2019, "CTRL: A Conditional Transformer Language Model for
  Controllable Generation") discourages tokens already present;
* temperature divides the logits, sharpening ($\tau < 1$) or flattening ($\tau > 1$) $p$;
* top-k (Fan et al. 2018, "Hierarchical Neural Story Generation") keeps the $k$ most likely tokens;
* top-p, nucleus sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"),
  keeps the smallest set of tokens whose probability mass reaches $p$;
* min-p (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM
  Outputs") keeps the tokens at least $p_{\min}$ times as likely as the most likely one.

Filtered tokens get logit $-\infty$ (probability exactly 0), as in Hugging Face ``transformers``;
:func:`process_logits` composes the steps in ``transformers``' order, and the tests check each one
against its ``transformers`` twin. Chapter 10 (Decoding) of the docs.
"""

import torch

from groundwork.generate.config import GenerationConfig

FILTERED = float("-inf")
"""The logit a filtered token receives (its probability becomes exactly 0)."""


# --8<-- [start:processors]
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Divide logits by the temperature: $p_i \propto \exp(z_i / \tau)$.

    $\tau \to 0$ approaches greedy decoding, $\tau = 1$ leaves the model's distribution as it
    is, $\tau \to \infty$ approaches uniform.

    Args:
        logits: ``(..., V)``.
        temperature: $\tau > 0$.

    >>> apply_temperature(torch.tensor([2.0, 4.0]), 2.0).tolist()
    [1.0, 2.0]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    r"""Keep the $k$ largest logits, set the rest to $-\infty$ (Fan et al. 2018).

    A token is kept when $z_i \ge z_{(k)}$, the $k$-th largest logit, so ties with the $k$-th are
    kept too (as in ``transformers``).

    Args:
        logits: ``(..., V)``.
        k: How many tokens to keep (clipped to ``V``).

    >>> top_k_filter(torch.tensor([1.0, 3.0, 2.0]), 2).tolist()
    [-inf, 3.0, 2.0]
    """
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, FILTERED)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    r"""Nucleus filtering: keep the smallest set of tokens whose probability mass is $\ge p$.

    Sort the probabilities in ascending order and accumulate them; a token is dropped while the
    mass accumulated up to and including it is $\le 1 - p$ (the tail we can afford to lose).
    What stays is the nucleus, of mass $\ge p$; the most likely token always stays
    (Holtzman et al. 2020).

    Args:
        logits: ``(..., V)``.
        p: Mass to keep, in ``(0, 1]``.

    >>> top_p_filter(torch.tensor([0.5, 0.3, 0.2]).log(), 0.7).isfinite().tolist()
    [True, True, False]
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)  # (..., V) ascending
    tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., V)
    drop_sorted = tail_mass <= 1 - p
    drop_sorted[..., -1] = False  # the most likely token is always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, FILTERED)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    r"""Keep tokens with $p_i \ge p_{\min} \cdot \max_j p_j$ (Nguyen et al. 2024).

    The threshold scales with the model's confidence: when one token dominates, few others
    survive; when the distribution is flat, many do. The most likely token always survives.

    Args:
        logits: ``(..., V)``.
        min_p: $p_{\min}$ in ``[0, 1]``.

    >>> min_p_filter(torch.tensor([0.6, 0.3, 0.1]).log(), 0.4).isfinite().tolist()
    [True, True, False]
    """
    probs = logits.softmax(dim=-1)  # (..., V)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (..., 1)
    drop = probs < threshold
    drop.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)  # keep the most likely
    return logits.masked_fill(drop, FILTERED)


def repetition_penalty(
    logits: torch.Tensor, generated_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    r"""CTRL's repetition penalty (Keskar et al. 2019), with the sign rule of ``transformers``.

    For every token $i$ present in ``generated_ids`` (prompt and generated tokens):
    $z_i \leftarrow z_i / \theta$ if $z_i > 0$, else $z_i \cdot \theta$. With $\theta > 1$ both
    make the token less likely (CTRL divides only, which would *raise* a negative logit).

    Args:
        logits: ``(B, V)``.
        generated_ids: ``(B, T)`` ids seen so far; repeats count once.
        penalty: $\theta > 0$ (1 changes nothing).

    >>> repetition_penalty(torch.tensor([[2.0, -2.0, 1.0]]), torch.tensor([[0, 1]]), 2.0).tolist()
    [[1.0, -4.0, 1.0]]
    """
    seen = torch.gather(logits, 1, generated_ids)  # (B, T)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, generated_ids, seen)


def process_logits(
    logits: torch.Tensor, input_ids: torch.Tensor, config: GenerationConfig
) -> torch.Tensor:
    """Apply ``config``'s strategies in ``transformers``' order.

    Repetition penalty (always, when set), then, only when sampling: temperature, top-k, top-p,
    min-p. Greedy decoding skips the warpers, since none of them changes the argmax.

    Args:
        logits: ``(B, V)`` next-token logits.
        input_ids: ``(B, T)`` prompt and generated ids (for the repetition penalty).
        config: The decoding settings.

    Returns:
        ``(B, V)`` processed logits, filtered tokens at ``-inf``.
    """
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, input_ids, config.repetition_penalty)
    if not config.do_sample:
        return logits
    if config.temperature != 1.0:
        logits = apply_temperature(logits, config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None and config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    if config.min_p is not None and config.min_p > 0:
        logits = min_p_filter(logits, config.min_p)
    return logits


def sample_next(
    logits: torch.Tensor,
    config: GenerationConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token of every row from (processed) logits.

    Args:
        logits: ``(B, V)``, typically the output of :func:`process_logits`.
        config: Greedy (``argmax``) unless ``config.do_sample``; then one draw from
            ``softmax(logits)``.
        generator: Seeded generator on the logits' device, for reproducible samples.

    Returns:
        ``(B,)`` token ids (``int64``), on the logits' device.
    """
    if not config.do_sample:
        return logits.argmax(dim=-1)
    probs = logits.float().softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B, 1) -> (B,)


# --8<-- [end:processors]
