r"""Batches of supervised fine-tuning examples, padded or packed, and the SFT objective.

Conversations differ in length, and a batch is a rectangle. Two ways to fill it:

* **padding**: one conversation per row, right-padded to the longest of the batch, with an
  ``attention_mask`` (1 = token, 0 = padding) and :data:`IGNORE_INDEX` labels on the padding.
  Simple; the padded positions are computed and thrown away.
* **packing**: conversations laid end to end in rows of ``seq_len`` tokens (first fit in
  decreasing length order, so rows come out nearly full), no compute on padding. Each
  conversation must still see only itself: its ``position_ids`` restart at 0, and a model given
  position ids that restart inside a row (and no padding mask) attends only within each run of
  consecutive positions (:func:`groundwork.nn.packed_documents`, the rule ``transformers``
  applies). What is left of a row after its conversations becomes one more "document" of
  padding, whose labels are ignored. The first token of each conversation gets no label, so
  nothing is predicted across a boundary. A packed row's logits equal those of its
  conversations run one by one (``tests/align/test_packing.py``), and ``transformers`` reads
  the same packed batch the same way.

The loss (:class:`SFTObjective`) is the causal LM cross-entropy averaged over every labelled
token of the batch, as ``transformers``' ``ForCausalLMLoss``: a long answer counts more than a
short one. Packing and padding give the same loss for the same conversations. Chapter 14.
"""

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from groundwork.align.sft import IGNORE_INDEX, SFTExample
from groundwork.errors import ConfigError
from groundwork.train.objectives import LossOutput, causal_lm_loss

__all__ = ["SFTData", "SFTObjective", "pack_examples", "pad_examples"]

Batch = dict[str, torch.Tensor]
Layout = Literal["pad", "pack"]


# --8<-- [start:pad]
def pad_examples(examples: Sequence[SFTExample], pad_id: int) -> Batch:
    """One example per row, right-padded: ``input_ids``, ``attention_mask``, ``labels`` ``(B, L)``
    with ``L`` the longest example."""
    if not examples:
        raise ConfigError("no examples to batch")
    L = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), L), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), L), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), L), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --8<-- [end:pad]


# --8<-- [start:pack]
def pack_examples(examples: Sequence[SFTExample], seq_len: int, pad_id: int) -> Batch:
    """Examples laid end to end in rows of ``seq_len`` tokens: ``input_ids``, ``labels`` and
    ``position_ids`` ``(R, seq_len)``, positions restarting at 0 for every example and for the
    padding that fills a row's end.

    Rows are filled first fit in decreasing length order; each example's first label is
    dropped (nothing is predicted across a boundary).

    Raises:
        ConfigError: an example longer than ``seq_len`` (cut examples with ``max_tokens``).
    """
    if not examples:
        raise ConfigError("no examples to pack")
    too_long = [len(e.input_ids) for e in examples if len(e.input_ids) > seq_len]
    if too_long:
        raise ConfigError(
            f"{len(too_long)} example(s) longer than the packed rows ({max(too_long)} > seq_len "
            f"{seq_len} tokens): raise seq_len or cut the examples (max_tokens)"
        )
    rows: list[list[SFTExample]] = []
    room: list[int] = []
    for e in sorted(examples, key=lambda e: -len(e.input_ids)):
        n = len(e.input_ids)
        fit = next((r for r, free in enumerate(room) if free >= n), None)
        if fit is None:
            rows.append([])
            room.append(seq_len)
            fit = len(rows) - 1
        rows[fit].append(e)
        room[fit] -= n
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), seq_len), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), seq_len), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, start : start + n] = torch.tensor(e.input_ids)
            labels[r, start + 1 : start + n] = torch.tensor(e.labels[1:])
            positions[r, start : start + n] = torch.arange(n)
            start += n
        positions[r, start:] = torch.arange(seq_len - start)  # the padding's own "document"
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


# --8<-- [end:pack]


# --8<-- [start:objective]
class SFTObjective:
    """Causal LM loss over the labelled (assistant) tokens of a padded or packed batch: the
    model is called as ``model(input_ids, attention_mask=...)`` or ``model(input_ids,
    position_ids=...)``; the loss is the mean over the batch's labelled tokens."""

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        ids, labels = batch["input_ids"], batch["labels"]
        kwargs = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
        logits = model(ids, **kwargs)  # (B, T, V)
        targets = labels[:, 1:]  # (B, T-1): position t predicts the token at t + 1
        items = int((targets != IGNORE_INDEX).sum())
        if items == 0:
            raise ConfigError("a batch without any assistant token: nothing to train on")
        loss = causal_lm_loss(logits[:, :-1], targets)
        tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
        return LossOutput(loss=loss, items=items, tokens=tokens)


# --8<-- [end:objective]


@dataclass
class SFTData:
    """SFT examples as the engine reads them: shuffled epochs of ``batch_size`` examples, each
    batch padded or packed (``layout``) into rows of at most ``seq_len`` tokens (packing may
    give fewer rows than examples); validation in a fixed order.

    Args:
        train: Training examples.
        val: Validation examples.
        batch_size: Examples per batch (before packing).
        pad_id: Token id of padding.
        layout: ``"pad"`` or ``"pack"``.
        seq_len: Row length of packed batches (the longest example must fit).
    """

    train: Sequence[SFTExample]
    val: Sequence[SFTExample]
    batch_size: int
    pad_id: int
    layout: Layout = "pack"
    seq_len: int = 1024
    _order: list[int] = field(default_factory=list, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.layout not in ("pad", "pack"):
            raise ConfigError(f"layout must be 'pad' or 'pack', got {self.layout!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.train) < self.batch_size:
            raise ConfigError(
                f"{len(self.train)} training examples, fewer than one batch of {self.batch_size}"
            )
        longest = max(len(e.input_ids) for e in itertools.chain(self.train, self.val))
        if self.layout == "pack" and longest > self.seq_len:
            raise ConfigError(
                f"the longest example has {longest} tokens > seq_len {self.seq_len}: raise "
                "seq_len or cut the examples (max_tokens)"
            )

    def _batch(self, examples: Sequence[SFTExample]) -> Batch:
        if self.layout == "pad":
            return pad_examples(examples, self.pad_id)
        return pack_examples(examples, self.seq_len, self.pad_id)

    def next_batch(self, generator: torch.Generator) -> Batch:
        """The next ``batch_size`` examples of the shuffled epoch (a new epoch when it ends)."""
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.train), generator=generator).tolist()
            self._pos = 0
        picked = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self._batch([self.train[i] for i in picked])

    def val_batches(self) -> Iterable[Batch]:
        """The validation examples in order, ``batch_size`` at a time."""
        for start in range(0, len(self.val), self.batch_size):
            yield self._batch(self.val[start : start + self.batch_size])

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch is, for an exact resume."""
        return {"order": list(self._order), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any], generator: torch.Generator) -> None:
        """Continue the epoch saved by :meth:`state_dict`."""
        self._order, self._pos = list(state["order"]), int(state["pos"])
