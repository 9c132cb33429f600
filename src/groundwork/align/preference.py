r"""Preference data: a prompt with two answers, the one people preferred (*chosen*) and the other
(*rejected*), as reward models and DPO learn from them (Ouyang et al. 2022, "Training language
models to follow instructions with human feedback", §3.5: comparisons between answers to one
prompt; Rafailov et al. 2023, "Direct Preference Optimization", §4: the dataset
:math:`\mathcal{D} = \{x, y_w, y_l\}`).

A pair is two supervised fine-tuning examples (:class:`~groundwork.align.sft.SFTExample`) that
share their prompt tokens: ``prompt + chosen`` and ``prompt + rejected``, each rendered with the
chat template by :func:`~groundwork.align.sft.tokenize_conversation`, labels on the final
assistant turn only (earlier assistant turns of a multi-turn prompt are context, not what is
compared). The log-probability of an answer, :math:`\log \pi(y \mid x)`, is the sum over its
labelled tokens (:func:`~groundwork.align.logprobs.sequence_logprobs`).

:class:`PreferenceData` serves pairs to the training engine in shuffled epochs, as
:class:`~groundwork.train.data.LabelledSequences` serves a classifier's sequences (same
checkpointable position), each batch a dict of right-padded ``(B, T)`` tensors, chosen and
rejected padded to one length ``T`` so that a model reads them as one batch of ``2B`` rows:

* ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels``;
* ``rejected_input_ids``, ``rejected_attention_mask``, ``rejected_labels``;
* ``ref_chosen_logps``, ``ref_rejected_logps`` ``(B,)``, when every pair has them
  (:func:`groundwork.align.dpo.precompute_reference_logps`).

Chapter 14.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from groundwork.align.sft import IGNORE_INDEX, SFTExample, tokenize_conversation
from groundwork.checks import positive_int
from groundwork.errors import ConfigError
from groundwork.generate.chat import Message
from groundwork.train.data import Batch, LabelledSequences

__all__ = [
    "PreferenceData",
    "PreferenceExample",
    "collate_preferences",
    "stack_pairs",
    "tokenize_preference",
]


def _prompt_length(example: SFTExample, which: str) -> int:
    """The index of the first labelled token (where the answer starts)."""
    for i, label in enumerate(example.labels):
        if label != IGNORE_INDEX:
            return i
    raise ConfigError(f"the {which} answer has no labelled token: there is nothing to compare")


@dataclass(frozen=True)
class PreferenceExample:
    r"""One comparison: ``chosen`` and ``rejected`` are ``prompt + answer`` with labels on the
    answer alone, the same prompt tokens in both; ``ref_chosen_logp`` and ``ref_rejected_logp``
    are the reference model's :math:`\log \pi_\text{ref}(y \mid x)` once computed.

    Raises:
        ConfigError: An answer without labelled tokens, different prompts, labels before the
            answer's start or after it, or identical answers.
    """

    chosen: SFTExample
    rejected: SFTExample
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None

    def __post_init__(self) -> None:
        p = _prompt_length(self.chosen, "chosen")
        if _prompt_length(self.rejected, "rejected") != p:
            raise ConfigError(
                "the chosen and rejected answers start at different positions: a pair must "
                "share its prompt tokens"
            )
        if self.chosen.input_ids[:p] != self.rejected.input_ids[:p]:
            raise ConfigError("the chosen and rejected sequences have different prompt tokens")
        for which, ex in (("chosen", self.chosen), ("rejected", self.rejected)):
            if any(label == IGNORE_INDEX for label in ex.labels[p:]):
                raise ConfigError(
                    f"the {which} answer's labels have gaps: label the whole answer, after the "
                    "prompt"
                )
        if self.chosen.input_ids == self.rejected.input_ids:
            raise ConfigError(
                "the chosen and rejected answers are the same tokens: a preference needs two "
                "different answers (drop the pair)"
            )

    @property
    def prompt_length(self) -> int:
        """How many prompt tokens the two sequences share before the answers."""
        return _prompt_length(self.chosen, "chosen")

    @classmethod
    def from_ids(
        cls, prompt_ids: Sequence[int], chosen_ids: Sequence[int], rejected_ids: Sequence[int]
    ) -> "PreferenceExample":
        """A pair from token ids (``trl``'s ``prompt_ids``, ``chosen_ids``, ``rejected_ids``):
        the answers are labelled, the prompt not.

        >>> PreferenceExample.from_ids([5, 6], [7], [8, 9]).rejected.labels
        [-100, -100, 8, 9]
        """
        if not chosen_ids or not rejected_ids:
            raise ConfigError("an answer is empty: each of chosen and rejected needs tokens")
        prompt = [IGNORE_INDEX] * len(prompt_ids)
        return cls(
            SFTExample([*prompt_ids, *chosen_ids], [*prompt, *chosen_ids]),
            SFTExample([*prompt_ids, *rejected_ids], [*prompt, *rejected_ids]),
        )


def tokenize_preference(
    tokenizer: Any,
    template: str,
    prompt_messages: Sequence[Message],
    chosen: str,
    rejected: str,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    max_tokens: int | None = None,
) -> PreferenceExample:
    """A preference pair: ``prompt_messages`` followed by one assistant turn, ``chosen`` or
    ``rejected``, each rendered with ``template`` (:func:`tokenize_conversation`), labels on that
    final turn only (its end marker included).

    Args:
        tokenizer: Has ``encode(text) -> list[int]``.
        template: A Jinja chat template.
        prompt_messages: The conversation before the answer (``system``/``user``/``assistant``
            turns), ending in a ``user`` (or ``system``) turn.
        chosen: The preferred answer's text.
        rejected: The other answer's text.
        bos_token: Passed to the template.
        eos_token: Passed to the template.
        max_tokens: Keep the first ``max_tokens`` tokens of each sequence (the prompt and the
            start of the answers, as ``trl``'s ``truncation_mode="keep_start"``).

    Raises:
        ConfigError: An empty prompt, a prompt ending in an assistant turn, an empty answer,
            identical answers (before or after truncation), a prompt that fills ``max_tokens``,
            or a template whose prompts differ between the two answers; and what
            :func:`tokenize_conversation` refuses.
    """
    if not prompt_messages:
        raise ConfigError("the prompt is empty: give at least the user's message")
    last = prompt_messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        raise ConfigError(
            "the prompt ends in an assistant turn: the answers are the next assistant turn, so "
            "the prompt must end with the user's (or system's) message"
        )
    for which, answer in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(answer, str) or not answer.strip():
            raise ConfigError(f"the {which} answer is empty: each answer needs some text")
    if chosen == rejected:
        raise ConfigError(
            "the chosen and rejected answers are the same text: a preference needs two "
            "different answers (drop the pair)"
        )
    if max_tokens is not None:
        positive_int("max_tokens", max_tokens)
    examples = []
    for answer in (chosen, rejected):
        messages = [*prompt_messages, {"role": "assistant", "content": answer}]
        full = tokenize_conversation(
            tokenizer, template, messages, bos_token=bos_token, eos_token=eos_token
        )
        # the final turn is the trailing run of labels; earlier assistant turns become prompt
        n = len(full.labels)
        start = n
        while start > 0 and full.labels[start - 1] != IGNORE_INDEX:
            start -= 1
        labels = [IGNORE_INDEX] * start + full.labels[start:]
        examples.append((SFTExample(full.input_ids, labels), start))
    (c, pc), (r, pr) = examples
    if pc != pr or c.input_ids[:pc] != r.input_ids[:pr]:
        raise ConfigError(
            "the chat template renders the prompt differently before the two answers: a pair "
            "must share its prompt tokens"
        )
    if max_tokens is not None:
        if max_tokens <= pc:
            raise ConfigError(
                f"the prompt alone is {pc} tokens, so max_tokens={max_tokens} leaves no room for "
                "the answers: raise max_tokens or shorten the prompt"
            )
        c = SFTExample(c.input_ids[:max_tokens], c.labels[:max_tokens])
        r = SFTExample(r.input_ids[:max_tokens], r.labels[:max_tokens])
        if c.input_ids == r.input_ids:
            raise ConfigError(
                f"the two answers are the same in their first {max_tokens - pc} tokens, all that "
                f"max_tokens={max_tokens} keeps: raise max_tokens"
            )
    return PreferenceExample(c, r)


def _pad(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def collate_preferences(
    pairs: Sequence[PreferenceExample], pad_id: int = 0
) -> dict[str, torch.Tensor]:
    """One batch of pairs: the dict of the module's docstring, chosen and rejected right-padded
    (``pad_id`` in the ids, 0 in the masks, -100 in the labels) to one length ``T``.

    >>> batch = collate_preferences([PreferenceExample.from_ids([5], [6, 7], [8])])
    >>> batch["rejected_input_ids"].tolist(), batch["rejected_labels"].tolist()
    ([[5, 8, 0]], [[-100, 8, -100]])

    Raises:
        ConfigError: No pairs, or reference log-probabilities on some pairs but not all.
    """
    if not pairs:
        raise ConfigError("no preference pairs to collate")
    T = max(max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs)
    batch: dict[str, torch.Tensor] = {}
    for side in ("chosen", "rejected"):
        examples: list[SFTExample] = [getattr(p, side) for p in pairs]
        ids = _pad([e.input_ids for e in examples], T, pad_id)  # (B, T)
        lengths = torch.tensor([len(e.input_ids) for e in examples])  # (B,)
        batch[f"{side}_input_ids"] = ids
        batch[f"{side}_attention_mask"] = (torch.arange(T) < lengths[:, None]).long()  # (B, T)
        batch[f"{side}_labels"] = _pad([e.labels for e in examples], T, IGNORE_INDEX)  # (B, T)
    has_ref = [p.ref_chosen_logp is not None and p.ref_rejected_logp is not None for p in pairs]
    if any(has_ref) and not all(has_ref):
        raise ConfigError(
            "some pairs have reference log-probabilities and others not: compute them for all "
            "(groundwork.align.dpo.precompute_reference_logps)"
        )
    if all(has_ref):
        batch["ref_chosen_logps"] = torch.tensor([p.ref_chosen_logp for p in pairs])  # (B,)
        batch["ref_rejected_logps"] = torch.tensor([p.ref_rejected_logp for p in pairs])  # (B,)
    return batch


def stack_pairs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of ``B`` pairs as one batch of ``2B`` sequences, the chosen ones first:
    ``input_ids``, ``attention_mask`` and ``labels`` ``(2B, T)`` (the shorter side right-padded
    to the longer's ``T`` if the batch did not pad them alike), so that a model reads both
    answers in one forward pass.

    >>> stacked = stack_pairs(collate_preferences([PreferenceExample.from_ids([5], [6], [7])]))
    >>> stacked["input_ids"].tolist()
    [[5, 6], [5, 7]]
    """
    T = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def both(key: str, pad: int) -> torch.Tensor:
        sides = [batch[f"{side}_{key}"] for side in ("chosen", "rejected")]  # (B, T_side)
        return torch.cat([F.pad(t, (0, T - t.shape[1]), value=pad) for t in sides])  # (2B, T)

    return {
        "input_ids": both("input_ids", 0),
        "attention_mask": both("attention_mask", 0),
        "labels": both("labels", IGNORE_INDEX),
    }


class PreferenceData(LabelledSequences):
    """Preference pairs for the training engine: every epoch a new shuffle (drawn with the
    engine's generator) of batches of pairs of similar lengths, collated by
    :func:`collate_preferences`; validation pairs in a fixed order (by length). The position
    in the epoch is checkpointed (``state_dict``/``load_state_dict``), so a resumed run reads
    the batches an uninterrupted one would.

    Args:
        pairs: Training pairs.
        batch_size: Pairs per training batch.
        val_pairs: Held-out pairs.
        val_batch_size: Pairs per validation batch.
        pad_id: Id that fills short sequences.

    Raises:
        ConfigError: No training pairs, a batch size below 1, or something that is not a
            :class:`PreferenceExample`.
    """

    def __init__(
        self,
        pairs: Sequence[PreferenceExample],
        *,
        batch_size: int,
        val_pairs: Sequence[PreferenceExample] = (),
        val_batch_size: int = 64,
        pad_id: int = 0,
    ) -> None:
        for p in (*pairs, *val_pairs):
            if not isinstance(p, PreferenceExample):
                raise ConfigError(
                    f"preference data holds PreferenceExample pairs, got {type(p).__name__} "
                    "(make them with tokenize_preference or PreferenceExample.from_ids)"
                )
        # batches group pairs by their longer sequence (less padding); the "label" is the pair
        super().__init__(
            [_longer(p) for p in pairs],
            list(pairs),
            batch_size=positive_int("batch_size", batch_size),
            val_seqs=[_longer(p) for p in val_pairs],
            val_labels=list(val_pairs),
            val_batch_size=positive_int("val_batch_size", val_batch_size),
            pad_id=pad_id,
        )

    @property
    def pairs(self) -> list[PreferenceExample]:
        """The training pairs."""
        return list(self.labels)

    @property
    def val_pairs(self) -> list[PreferenceExample]:
        """The held-out pairs."""
        return list(self.val_labels)

    @property
    def val_description(self) -> str:
        return f"{len(self.val_labels)} held-out pairs"

    def replace_pairs(
        self, pairs: Sequence[PreferenceExample], val_pairs: Sequence[PreferenceExample]
    ) -> "PreferenceData":
        """The same data settings over other pairs (e.g. with reference log-probabilities)."""
        return PreferenceData(
            pairs,
            batch_size=self.batch_size,
            val_pairs=val_pairs,
            val_batch_size=self.val_batch_size,
            pad_id=self.pad_id,
        )

    def _batch(self, idx: list[int], seqs: Sequence[Sequence[int]], labels: Sequence[Any]) -> Batch:
        return collate_preferences([labels[i] for i in idx], self.pad_id)


def _longer(pair: PreferenceExample) -> list[int]:
    return max(pair.chosen.input_ids, pair.rejected.input_ids, key=len)
