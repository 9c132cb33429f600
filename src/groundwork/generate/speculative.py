r"""Speculative decoding: a small draft model guesses, the large target model checks in one pass.

Autoregressive decoding of a large model is memory-bound: each step reads every weight to produce
one token. Speculative decoding (Leviathan, Kalman and Matias 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
Decoding with Speculative Sampling") lets a cheap *draft* model $q$ propose $\gamma$ tokens
$x_1 \dots x_\gamma$ one by one, then runs the *target* $p$ once over all of them, which gives
$p(\cdot \mid \text{prefix}, x_{<i})$ for $i = 1 \dots \gamma + 1$ at the cost of about one step.

Each proposal is accepted with probability $\min\left(1, p(x_i) / q(x_i)\right)$; at the first
rejection a replacement is drawn from the residual
$\mathrm{norm}(\max(0, p - q))$ and the remaining proposals are dropped; if all $\gamma$ are
accepted, one more token is drawn from $p(\cdot \mid \text{prefix}, x_{1:\gamma})$. Every emitted
token is then distributed *exactly* as under $p$:

$$P(\text{emit } x) = q(x) \min\Big(1, \frac{p(x)}{q(x)}\Big)
   + \Big(1 - \sum_y \min(p(y), q(y))\Big) \frac{\max(0, p(x) - q(x))}{\sum_y \max(0, p(y) - q(y))}
   = \min(p(x), q(x)) + \max(0, p(x) - q(x)) = p(x),$$

since $\sum_y \max(0, p - q) = 1 - \sum_y \min(p, q)$. With greedy decoding the rule becomes:
accept while the draft's token equals the target's argmax, then append the target's argmax, so
the output is identical to the target's own greedy decoding.

**Expected speedup** (Leviathan et al. 2023, Theorem 3.8 and Corollary 3.9). With acceptance
rate $\alpha = E[\min(1, p/q)] = \sum_x \min(p(x), q(x))$ (one minus the total-variation
distance between $p$ and $q$), one target pass yields on average

$$E[\text{tokens per target pass}] = \frac{1 - \alpha^{\gamma + 1}}{1 - \alpha},$$

and if one draft step costs $c$ target steps, the expected wall-time improvement is

$$\frac{1 - \alpha^{\gamma + 1}}{(1 - \alpha)(\gamma c + 1)}.$$

For example $\alpha = 0.8$, $\gamma = 4$, $c = 0.05$: $3.36 / 1.2 \approx 2.8\times$.

Chapter 10 (Decoding) of the docs.
"""

from dataclasses import dataclass

import torch

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import check_prompts, context_window
from groundwork.generate.processors import process_logits, sample_next
from groundwork.models import GPT, Llama
from groundwork.models.protocol import vocab_size


@dataclass
class SpeculativeOutput:
    """The generated tokens and how well the draft guessed."""

    tokens: list[int]
    """New token ids (the prompt excluded)."""
    accepted: int
    """Draft proposals the target accepted."""
    proposed: int
    """Draft proposals made."""
    acceptance_rate: float
    """``accepted / proposed`` (0 when nothing was proposed): an estimate of $\\alpha$."""


# --8<-- [start:speculative_step]
def speculative_step(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The acceptance test of speculative sampling, for many positions at once.

    For each row: accept the draft token $x \sim q$ with probability $\min(1, p(x) / q(x))$,
    and draw a replacement from $\mathrm{norm}(\max(0, p - q))$ (used only if $x$ is rejected).
    Emitting ``where(accepted, draft_tokens, replacement)`` samples exactly from $p$.

    Args:
        p: ``(..., V)`` target probabilities.
        q: ``(..., V)`` draft probabilities (``draft_tokens`` were drawn from them).
        draft_tokens: ``(...)`` the draft's tokens.
        generator: Seeded generator on ``p``'s device.

    Returns:
        ``accepted`` ``(...)`` bool and ``replacement`` ``(...)`` int64.
    """
    x = draft_tokens.unsqueeze(-1)  # (..., 1)
    p_x = p.gather(-1, x).squeeze(-1)  # (...)
    q_x = q.gather(-1, x).squeeze(-1)  # (...)
    r = torch.rand(p_x.shape, generator=generator, device=p.device, dtype=p.dtype)
    # accept iff r < p(x) / q(x); written without the division (q(x) > 0 since x ~ q)
    accepted = r * q_x < p_x
    residual = (p - q).clamp(min=0)  # (..., V) max(0, p - q)
    mass = residual.sum(-1, keepdim=True)  # (..., 1)
    # p == q leaves no residual, but then nothing is ever rejected: fall back to p (unused)
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), p)
    flat = residual.reshape(-1, residual.shape[-1])  # (N, V)
    replacement = torch.multinomial(flat, 1, generator=generator).view(p_x.shape)  # (...)
    return accepted, replacement


# --8<-- [end:speculative_step]


def _leading_true(flags: torch.Tensor) -> int:
    """Number of ``True`` before the first ``False``: ``[T, T, F, T] -> 2``."""
    return int(flags.long().cumprod(0).sum())


# --8<-- [start:speculative_generate]
@torch.no_grad()
def speculative_generate(
    target: GPT | Llama,
    draft: GPT | Llama,
    prompt_ids: list[int],
    config: GenerationConfig,
    *,
    k: int = 4,
) -> SpeculativeOutput:
    r"""Decode from ``target`` with ``draft`` proposing ``k`` tokens per target pass.

    Both models keep a KV cache. Loop invariant: the target's cache holds the sequence except
    its last token (which the next target pass starts with); the draft's cache holds at most
    that and catches up on whatever it is missing. After each check both caches are rolled
    back past the rejected proposals simply by lowering ``seq_len`` (stale entries are
    overwritten later and never attended to).

    One round, with $\gamma = \min(k, \text{tokens left} - 1)$ proposals:

    1. the draft proposes $x_1 \dots x_\gamma$ autoregressively, keeping $q_1 \dots q_\gamma$;
    2. the target runs once over ``[last token, x_1, ..., x_γ]``: $p_1 \dots p_{\gamma+1}$;
    3. greedy (``temperature == 0``): accept while $x_i = \arg\max p_i$, then append
       $\arg\max p_{n+1}$; sampling: :func:`speculative_step` on each position, stop at the
       first rejection and emit its replacement, or, if all were accepted, a draw from
       $p_{\gamma+1}$;
    4. roll both caches back to the accepted prefix.

    Each round emits between 1 and $\gamma + 1$ tokens. The logits of both models go through
    :func:`~groundwork.generate.processors.process_logits` (repetition penalty, temperature,
    top-k/p, min-p), so the output follows the target's *processed* distribution.

    Args:
        target: The model whose distribution (or greedy output) is reproduced.
        draft: A cheaper model with the same vocabulary.
        prompt_ids: The prompt's token ids (at least one).
        config: ``max_new_tokens``, ``temperature`` (0: greedy), top-k/p, min-p,
            ``repetition_penalty``, ``stop_ids`` (stop after emitting one), ``seed``.
        k: Proposals per round ($\gamma$).

    Returns:
        The new tokens, and the draft's acceptance counts.

    Raises:
        ConfigError: Empty prompt, ``k < 1``, vocabularies of different sizes, or prompt +
            ``max_new_tokens`` longer than a model's context (the window does not slide here:
            rolling a cache back past a slide is not possible).
    """
    if k < 1:
        raise ConfigError(f"k (draft tokens per round) must be >= 1, got {k}")
    if vocab_size(target) != vocab_size(draft):
        raise ConfigError(
            f"draft and target vocabularies differ: {vocab_size(draft)} vs "
            f"{vocab_size(target)} tokens"
        )
    check_prompts(target, [prompt_ids])
    for model in (target, draft):
        limit = context_window(model)
        if limit is not None and len(prompt_ids) + config.max_new_tokens > limit:
            raise ConfigError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({config.max_new_tokens}) "
                f"exceeds a model's context of {limit}: speculative decoding keeps one window; "
                "shorten the prompt or lower max_new_tokens"
            )
    device = next(target.parameters()).device
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    length = len(prompt_ids) + config.max_new_tokens
    target_cache = target.new_kv_cache(1, length)
    draft_cache = draft.new_kv_cache(1, length)

    def ids(tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)

    def processed(logits: torch.Tensor, prefix: list[int]) -> torch.Tensor:
        return process_logits(logits.float()[None], ids(prefix), config)  # (1, V)

    seq = list(prompt_ids)
    if len(seq) > 1:  # prefill everything but the last prompt token
        target(ids(seq[:-1]), kv_cache=target_cache)
        draft(ids(seq[:-1]), kv_cache=draft_cache)
    accepted = proposed = 0
    stops = set(config.stop_ids)
    while (done := len(seq) - len(prompt_ids)) < config.max_new_tokens:
        gamma = min(k, config.max_new_tokens - done - 1)  # leave room for the target's token
        # 1. the draft proposes gamma tokens, one at a time
        proposal: list[int] = []
        q_rows: list[torch.Tensor] = []
        for _ in range(gamma):
            context = seq + proposal
            pending = context[draft_cache.seq_len :]  # 1 token, more if the draft fell behind
            logits = processed(draft(ids(pending), kv_cache=draft_cache)[0, -1], context)
            proposal.append(int(sample_next(logits, config, generator)))
            q_rows.append(logits.softmax(-1)[0])  # (V,)
        # 2. the target scores all gamma + 1 positions in one pass
        target_logits = target(ids(seq[-1:] + proposal), kv_cache=target_cache)[0]
        p_logits = torch.cat(  # (gamma + 1, V): row i predicts the token after x_1..x_i
            [processed(target_logits[i], seq + proposal[:i]) for i in range(gamma + 1)]
        )
        # 3. accept a prefix of the proposal, then add one token of the target's
        if not config.do_sample:
            choice = p_logits.argmax(-1)  # (gamma + 1,)
            n = _leading_true(choice[:gamma] == torch.tensor(proposal, device=device))
            next_id = int(choice[n])
        else:
            p = p_logits.softmax(-1)  # (gamma + 1, V)
            n, next_id = gamma, -1
            if gamma > 0:
                ok, replacement = speculative_step(
                    p[:gamma], torch.stack(q_rows), torch.tensor(proposal, device=device), generator
                )
                n = _leading_true(ok)
                if n < gamma:
                    next_id = int(replacement[n])
            if n == gamma:  # all accepted: one more token from p_{gamma+1}
                next_id = int(sample_next(p_logits[gamma:], config, generator))
        accepted += n
        proposed += gamma
        new = [*proposal[:n], next_id]
        stop_at = next((i for i, t in enumerate(new) if t in stops), None)
        if stop_at is not None:
            seq += new[: stop_at + 1]
            break
        seq += new
        # 4. roll back: the caches forget the rejected proposals
        target_cache.seq_len = len(seq) - 1
        draft_cache.seq_len = min(draft_cache.seq_len, len(seq) - 1)
    return SpeculativeOutput(
        tokens=seq[len(prompt_ids) :],
        accepted=accepted,
        proposed=proposed,
        acceptance_rate=accepted / proposed if proposed else 0.0,
    )


# --8<-- [end:speculative_generate]
