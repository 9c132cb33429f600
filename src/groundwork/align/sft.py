r"""Supervised fine-tuning data: a conversation rendered with the model's chat template into token
ids, with labels only on what the assistant says (Ouyang et al. 2022, "Training language models to
follow instructions with human feedback", §3.5: SFT; the masking as ``trl``'s
``assistant_only_loss``).

A chat model learns to *answer*, not to write questions: the loss of supervised fine-tuning is the
causal language-modelling loss over the assistant's tokens alone, every other position's label
being :data:`IGNORE_INDEX` (the value cross-entropy skips). Which tokens are the assistant's is
found from the template itself, not from a list of role markers: for each assistant turn
:math:`i`, the conversation before it is rendered *with* the generation prompt (what the model
sees at inference, ending in ``<|im_start|>assistant\n`` for ChatML) and the conversation
through it *without*; the first must be a prefix of the second, and what the second adds is the
turn as the model must produce it, its end marker included (``Paris<|im_end|>\n``).

The text is then tokenized piece by piece (prompt pieces and assistant pieces), and the pieces'
ids must equal the whole text's ids, so the labels sit on exactly the tokens the model reads;
a template or tokenizer for which they differ is refused rather than trained on shifted labels.

:data:`PLAIN_TEMPLATE` is a chat template for our own models, whose tokenizers have no chat
tokens: ``User: ...`` / ``Assistant: ...`` lines, the assistant's turn closed by the EOS token.
SmolLM2's own template comes with it (``groundwork.load(...).chat_template``). Chapter 14.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from groundwork.errors import ConfigError
from groundwork.generate.chat import Message, render_chat
from groundwork.train.objectives import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "PLAIN_TEMPLATE", "SFTExample", "tokenize_conversation"]


PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""A chat template for models without chat tokens: ``System:``, ``User:``, ``Assistant:`` lines;
the assistant's turn ends with the EOS token (pass ``eos_token``)."""

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class SFTExample:
    """One conversation as a training example: ``input_ids`` and ``labels`` of equal length,
    ``labels[t] = input_ids[t]`` on the assistant's tokens and :data:`IGNORE_INDEX` elsewhere (the
    shift to next-token targets is the loss's job)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        """How many positions carry a loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def _check(messages: Sequence[Message]) -> None:
    if not messages:
        raise ConfigError("the conversation is empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConfigError(f"message {i} is not a {{'role': ..., 'content': ...}} dict: {m!r}")
        if m["role"] not in ROLES:
            raise ConfigError(f"message {i} has role {m['role']!r}; roles are {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(
            "the conversation has no assistant turn: supervised fine-tuning trains on the "
            "assistant's replies, so there would be nothing to learn"
        )


def tokenize_conversation(
    tokenizer: Any,
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    max_tokens: int | None = None,
) -> SFTExample:
    """``messages`` rendered with ``template`` and tokenized, labels on the assistant's turns.

    Args:
        tokenizer: Has ``encode(text) -> list[int]``.
        template: A Jinja chat template (the model's, or :data:`PLAIN_TEMPLATE`).
        messages: ``[{"role": "system" | "user" | "assistant", "content": ...}, ...]``.
        bos_token: Passed to the template.
        eos_token: Passed to the template (:data:`PLAIN_TEMPLATE` ends turns with it).
        max_tokens: Cut the example to this many tokens (from the end; labels cut alike).

    Raises:
        ConfigError: no assistant turn, an unknown role, a template that renders nothing for a
            message (it lacks the role) or that renders a conversation differently once it
            goes on, or pieces whose tokens differ from the whole text's.
    """
    _check(messages)
    tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(upto: int, prompt: bool) -> str:
        return render_chat(template, list(messages[:upto]), add_generation_prompt=prompt, **tokens)

    pieces: list[tuple[str, bool]] = []  # (text, is the assistant's)
    done = ""
    for i, m in enumerate(messages):
        through = render(i + 1, prompt=False)
        if through == render(i, prompt=False):
            raise ConfigError(
                f"the chat template renders nothing for message {i} (role {m['role']!r}): "
                "it does not know that role"
            )
        if m["role"] == "assistant":
            prompt = render(i, prompt=True)
            if not prompt.startswith(done) or not through.startswith(prompt):
                raise ConfigError(
                    f"the chat template renders the conversation before message {i} differently "
                    "once it goes on: cannot tell the assistant's tokens apart"
                )
            pieces += [(prompt[len(done) :], False), (through[len(prompt) :], True)]
        else:
            if not through.startswith(done):
                raise ConfigError(
                    f"the chat template renders the conversation before message {i} differently "
                    "once it goes on: cannot tell the assistant's tokens apart"
                )
            pieces.append((through[len(done) :], False))
        done = through
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in pieces:
        ids = tokenizer.encode(text) if text else []
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    whole = tokenizer.encode(done)
    if whole != input_ids:
        raise ConfigError(
            "tokenizing the conversation piece by piece gives other tokens than tokenizing it "
            "whole (a token spans a piece boundary): the template and tokenizer do not separate "
            "turns cleanly"
        )
    if max_tokens is not None:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
        input_ids, labels = input_ids[:max_tokens], labels[:max_tokens]
    return SFTExample(input_ids, labels)
