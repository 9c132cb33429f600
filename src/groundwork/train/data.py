"""What the training engine reads: a source of training batches and of validation batches.

The engine asks a :class:`TrainData` for one thing per micro-batch, ``next_batch(generator)``,
and for the validation batches at each evaluation, ``val_batches()``. A batch is whatever the
objective expects (a tuple of tensors here); the engine only moves it to the device. Two kinds:

* :class:`LMData`: random windows of a token stream (:class:`groundwork.corpus.TokenShards`) for a
  language model, ``(x, y)`` of shape ``(B, T)``; validation reads fixed windows from the start.
* :class:`LabelledSequences`: variable-length id sequences with one label each, for a classifier,
  served in shuffled epochs of length-bucketed batches ``(ids (B, L), lengths (B,), labels (B,))``.

The pretraining data of encoders and encoder-decoders (BERT's masked LM and next-sentence pairs,
T5's span corruption) is in :mod:`groundwork.train.encoder_data`.

The data order comes from the engine's ``torch.Generator`` alone, which is checkpointed; data
with a position (an epoch half read) also offers ``state_dict()`` and
``load_state_dict(state, generator)``, so a resumed run reads exactly the batches that an
uninterrupted one would. Chapter 8 (Training).
"""

import base64
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from groundwork.errors import ConfigError

Batch = Any
"""A batch as the objective expects it (tensors, or tuples/lists/dicts of them)."""


class TrainData(Protocol):
    """What the engine needs from data (optionally also ``val_description``, a few words that
    say what ``val_batches`` covers, and ``state_dict``/``load_state_dict``)."""

    def next_batch(self, generator: torch.Generator) -> Batch:
        """The next training micro-batch, drawn with ``generator`` (its only randomness)."""
        ...

    def val_batches(self) -> Iterable[Batch]:
        """The validation batches: the same ones at every evaluation, no randomness used."""
        ...


def encode_rng_state(state: torch.Tensor) -> str:
    """A ``torch.Generator`` state as text, for a data position in a checkpoint."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def restore_rng_state(generator: torch.Generator, text: str) -> None:
    """Set ``generator`` to a state :func:`encode_rng_state` wrote."""
    raw = base64.b64decode(text)
    generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone())


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a batch (nested in tuples, lists and dicts) to ``device``.

    To a CUDA device a CPU tensor goes through pinned (page-locked) memory, so the copy is
    asynchronous (``non_blocking``): the host queues it and goes on preparing the step instead of
    waiting (a copy from ordinary pageable memory would block). PyTorch's caching host allocator
    reuses the pinned buffers and keeps each one until its copy has finished.
    """
    if isinstance(batch, torch.Tensor):
        if (
            torch.device(device).type == "cuda"
            and batch.device.type == "cpu"
            and not batch.is_pinned()
        ):
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


# ---------------------------------------------------------------------------------------------
# token streams, for language models


class TokenData(Protocol):
    """A token stream (``groundwork.corpus.TokenShards`` provides it)."""

    def __len__(self) -> int: ...

    def random_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sequential_batches(
        self, batch_size: int, seq_len: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class LMData:
    """Language-model data: random ``(B, T)`` windows of ``train`` with their next tokens, and
    the first ``eval_batches`` non-overlapping windows of ``val``."""

    train: TokenData
    val: TokenData | None
    batch_size: int
    seq_len: int
    eval_batches: int | None = None

    def __post_init__(self) -> None:
        if len(self.train) <= self.seq_len:
            raise ConfigError(
                f"train.seq_len={self.seq_len} needs more than {self.seq_len} training tokens; "
                f"the training split has {len(self.train)}"
            )

    def next_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train.random_batch(self.batch_size, self.seq_len, generator)

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.val is None:
            return iter(())
        windows = self.val.sequential_batches(self.batch_size, self.seq_len)
        return itertools.islice(windows, self.eval_batches)

    @property
    def val_description(self) -> str:
        if self.eval_batches is None:
            return "whole validation split"
        n = self.eval_batches
        return f"first {n} batch{'es' if n != 1 else ''} of {self.batch_size}x{self.seq_len}"


# ---------------------------------------------------------------------------------------------
# labelled sequences, for classifiers


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``ids (B, T)`` and ``lengths (B,)``.

    >>> pad_batch([[5, 6, 7], [8]])
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([3, 1]))
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths


def pad_with_mask(
    seqs: Sequence[Sequence[int]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``ids (B, T)`` with their ``attention_mask (B, T)`` (1 on a
    token, 0 on padding), as encoders and task heads read them.

    >>> pad_with_mask([[5, 6], [7]])[1].tolist()
    [[1, 1], [1, 0]]
    """
    ids, lengths = pad_batch(seqs, pad_id)  # (B, T), (B,)
    return ids, (torch.arange(ids.shape[1]) < lengths[:, None]).long()


def batches(
    encoded: Sequence[Sequence[int]],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[list[int]]:
    """Index batches of similar lengths (less padding): without a generator, in length order;
    with one, shuffled, then sorted by length within pools of 50 batches, in shuffled order.

    >>> list(batches([[1, 1], [1], [1, 1, 1]], 2))
    [[1, 0], [2]]
    """
    n = len(encoded)
    if generator is None:
        order = sorted(range(n), key=lambda i: len(encoded[i]))
        yield from (order[i : i + batch_size] for i in range(0, n, batch_size))
        return
    perm = torch.randperm(n, generator=generator).tolist()
    pool = 50 * batch_size
    chunks: list[list[int]] = []
    for start in range(0, n, pool):
        part = sorted(perm[start : start + pool], key=lambda i: len(encoded[i]))
        chunks += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    for j in torch.randperm(len(chunks), generator=generator).tolist():
        yield chunks[j]


class LabelledSequences:
    """Id sequences with a label each, read in epochs: every epoch a new shuffle (drawn with the
    engine's generator) of length-bucketed batches ``(ids (B, L), lengths (B,), labels (B,))``.

    Args:
        seqs: Training sequences (each of length >= 1).
        labels: Their class ids.
        batch_size: Sequences per batch.
        val_seqs: Validation sequences (read in length order, ``val_batch_size`` at a time).
        val_labels: Their class ids.
        pad_id: Id that fills short sequences.

    A subclass may give each sequence another kind of label (a target sequence:
    :class:`~groundwork.train.encoder_data.Seq2SeqPairs`) and make its batches in ``_batch``.
    """

    def __init__(
        self,
        seqs: Sequence[Sequence[int]],
        labels: Sequence[Any],
        *,
        batch_size: int,
        val_seqs: Sequence[Sequence[int]] = (),
        val_labels: Sequence[Any] = (),
        val_batch_size: int = 256,
        pad_id: int = 0,
    ) -> None:
        if len(seqs) != len(labels) or len(val_seqs) != len(val_labels):
            raise ConfigError("every sequence needs one label")
        if not seqs:
            raise ConfigError("no training sequences")
        self.seqs, self.labels, self.batch_size = seqs, labels, batch_size
        self.val_seqs, self.val_labels, self.val_batch_size = val_seqs, val_labels, val_batch_size
        self.pad_id = pad_id
        self._epoch: Iterator[list[int]] | None = None
        self._epoch_rng: torch.Tensor | None = None  # the generator's state at the epoch's start
        self._position = 0  # batches read in this epoch

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch (every pool of 50 batches but the last is full)."""
        return -(-len(self.seqs) // self.batch_size)

    def _batch(self, idx: list[int], seqs: Sequence[Sequence[int]], labels: Sequence[Any]) -> Batch:
        ids, lengths = pad_batch([seqs[i] for i in idx], self.pad_id)  # (B, L), (B,)
        return ids, lengths, torch.tensor([labels[i] for i in idx], dtype=torch.long)

    def _new_epoch(self, generator: torch.Generator) -> None:
        self._epoch_rng = generator.get_state()
        self._epoch = batches(self.seqs, self.batch_size, generator=generator)
        self._position = 0

    def next_batch(self, generator: torch.Generator) -> Batch:
        idx = None if self._epoch is None else next(self._epoch, None)
        if idx is None:  # the first epoch, or the previous one is used up
            self._new_epoch(generator)
            assert self._epoch is not None
            idx = next(self._epoch)
        self._position += 1
        return self._batch(idx, self.seqs, self.labels)

    def val_batches(self) -> Iterator[Batch]:
        for idx in batches(self.val_seqs, self.val_batch_size):
            yield self._batch(idx, self.val_seqs, self.val_labels)

    def state_dict(self) -> dict[str, Any]:
        """Where in which epoch the data is (for exact resume)."""
        if self._epoch_rng is None:
            return {}
        return {"epoch_rng": encode_rng_state(self._epoch_rng), "position": self._position}

    def load_state_dict(self, state: dict[str, Any], generator: torch.Generator) -> None:
        """Go back to the saved position: replay the epoch's shuffle and skip what was read."""
        if not state:
            return
        restore_rng_state(generator, state["epoch_rng"])
        self._new_epoch(generator)
        assert self._epoch is not None
        for _ in range(int(state["position"])):
            next(self._epoch)
        self._position = int(state["position"])
