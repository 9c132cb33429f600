r"""Ancestral sampling with temperature and top-k, recomputing the whole prefix each step.

At each step the model gives logits $z$ for the next token; we sample from
$p_i \propto \exp(z_i / \tau)$ restricted to the $k$ largest $z_i$. $\tau \to 0$ approaches greedy
decoding; $\tau = 1$ with no top-k samples from the model's own distribution. This version reruns
the model over the whole (cropped) context for every new token, which costs $O(T^2)$ per sequence:
chapter 10 (Decoding) replaces it with a KV cache.
"""

import torch
from torch import nn

from groundwork.errors import ConfigError


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt: list[int],
    *,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_seq_len: int | None = None,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample a continuation of ``prompt`` (token ids); returns only the new ids.

    Args:
        model: Maps ``(B, T)`` ids to ``(B, T, V)`` logits.
        prompt: The prompt's token ids (at least one).
        max_new_tokens: How many tokens to add at most.
        temperature: Divides the logits; 0 means greedy.
        top_k: Sample only among the ``k`` most likely tokens.
        max_seq_len: The model's context; the prefix is cropped to its last ``max_seq_len`` ids.
        stop_id: Stop after emitting this id (e.g. end of text).
        generator: Seeded generator for reproducible samples.
    """
    if not prompt:
        raise ConfigError("the prompt is empty: give at least one token (e.g. some text)")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    new: list[int] = []
    for _ in range(max_new_tokens):
        context = ids if max_seq_len is None else ids[:, -max_seq_len:]
        logits = model(context)[0, -1].float()  # (V,)
        if temperature == 0:
            next_id = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1).cpu()
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        new.append(next_id)
        ids = torch.cat([ids, torch.tensor([[next_id]], device=device)], dim=1)  # (1, T + 1)
        if stop_id is not None and next_id == stop_id:
            break
    return new
