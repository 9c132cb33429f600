r"""Ancestral sampling with temperature and top-k, recomputing the whole prefix each step.

At each step the model gives logits $z$ for the next token; we sample from
$p_i \propto \exp(z_i / \tau)$ restricted to the $k$ largest $z_i$. $\tau \to 0$ approaches greedy
decoding; $\tau = 1$ with no top-k samples from the model's own distribution. This version reruns
the model over the whole context for every new token, which costs $O(T^2)$ per sequence: chapter
10 (Decoding) replaces it with a KV cache. Past ``max_seq_len`` tokens the context is cropped to
the latest ``max_seq_len`` (a sliding window, as in nanoGPT).
"""

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig


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
        max_seq_len: The model's context (``None``: no limit, e.g. an RNN); once the sequence is
            longer, each step reads only its last ``max_seq_len`` ids.
        stop_id: Stop after emitting this id (e.g. end of text).
        generator: Seeded generator for reproducible samples.

    Raises:
        ConfigError: an empty prompt, a prompt longer than ``max_seq_len`` (we do not cut it),
            ``max_new_tokens < 1``, ``temperature < 0`` or ``top_k < 1``.
    """
    if not prompt:
        raise ConfigError("the prompt is empty: give at least one token (e.g. some text)")
    if max_seq_len is not None and len(prompt) > max_seq_len:
        raise ConfigError(
            f"the prompt has {len(prompt)} tokens, more than the model's context of "
            f"{max_seq_len} (max_seq_len): shorten it"
        )
    # The same checks (and messages) as every other decoder's settings.
    GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
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
