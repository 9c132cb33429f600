"""An edit request — "in this prompt, about this subject, the model should now say this" — and
locating the subject's last token in the tokenised prompt. Chapter 19, "Model editing".

CounterFact (Meng et al. 2022) writes a fact as a prompt that ends where the object begins
("The Eiffel Tower is located in"), the subject it mentions ("Eiffel Tower") and a new target
(" Rome", with its leading space: the target is the exact text that should follow the prompt).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from groundwork.errors import ConfigError
from groundwork.tokenize.base import Tokenizer


@dataclass(frozen=True)
class EditRequest:
    """One fact to write into a model.

    Attributes:
        prompt: The text before the object, containing ``subject``
            (``"The Eiffel Tower is located in"``).
        subject: The entity the fact is about; must occur in ``prompt`` (its first occurrence
            is used).
        target: The new continuation (``" Rome"``); leading whitespace matters to BPE.
        target_true: The model's current answer, when known (for the metrics).
    """

    prompt: str
    subject: str
    target: str
    target_true: str | None = None

    def __post_init__(self) -> None:
        if not self.subject.strip():
            raise ConfigError("the subject is empty: name the entity the fact is about")
        if self.subject not in self.prompt:
            raise ConfigError(
                f"the subject {self.subject!r} does not occur in the prompt {self.prompt!r}: "
                "the edit is keyed on the subject's last token in the prompt"
            )
        if not self.target.strip():
            raise ConfigError(
                "the target is empty: give the new continuation, e.g. ' Rome' (with its space)"
            )
        if self.prompt != self.prompt.rstrip():
            raise ConfigError(
                f"the prompt {self.prompt!r} ends in whitespace: end it where the target's own "
                "leading space begins (BPE tokenises ' Rome' as one token)"
            )


def subject_last_token(tokenizer: Tokenizer, prompt: str, subject: str) -> int:
    """Index of the last token of ``subject``'s first occurrence in ``tokenizer.encode(prompt)``.

    The prompt is cut just after the subject and tokenised; the cut's token count minus one is
    the index (the method of ROME's ``find_token_range``). With byte-level BPE the cut can end a
    merge early only inside a word, and subjects end at word boundaries.

    Raises:
        ConfigError: the subject is not in the prompt.
    """
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise ConfigError(f"the subject {subject!r} does not occur in the prompt {prompt!r}")
    return len(tokenizer.encode(prompt[: start + len(subject)])) - 1


def check_fits(n_tokens: int, max_seq_len: int, what: str = "the prompt and target") -> None:
    """Raise :class:`ConfigError` when ``n_tokens`` exceed the model's context."""
    if n_tokens > max_seq_len:
        raise ConfigError(
            f"{what} take {n_tokens} tokens, more than the model's context of {max_seq_len}: "
            "shorten the prompt"
        )


def as_requests(requests: EditRequest | Sequence[EditRequest]) -> list[EditRequest]:
    """One request or several, as a non-empty list (``ConfigError`` if empty)."""
    out = [requests] if isinstance(requests, EditRequest) else list(requests)
    if not out:
        raise ConfigError("no edit requests given: pass at least one EditRequest")
    for r in out:
        if not isinstance(r, EditRequest):
            raise ConfigError(f"expected EditRequest objects, got a {type(r).__name__}")
    return out
