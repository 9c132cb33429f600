"""Pretraining data for encoders and encoder-decoders, in the engine's
:class:`~groundwork.train.data.TrainData` form.

* :class:`BertPretrainingData`: BERT's masked-LM (and next-sentence) batches from documents split
  into segments, a dict of ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` and
  ``next_sentence_label`` (:mod:`~groundwork.train.masking`, :mod:`~groundwork.train.pairs`).
* :class:`SpanCorruptionData`: T5's span-corrupted windows of a token stream, a dict of
  ``input_ids``, ``attention_mask``, ``decoder_input_ids`` and ``labels``
  (:mod:`~groundwork.train.span_corruption`).
* :class:`Seq2SeqPairs`: source/target pairs for fine-tuning an encoder-decoder, the same dict
  from right-padded sources and targets, in shuffled epochs.

Masks and pairs are random: for training they are drawn from the engine's generator, for
validation from a private generator seeded afresh at every ``val_batches()`` call, so every
evaluation sees the same batches and takes nothing from the engine's generator. Chapters 6 and 8.
"""

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from groundwork.checks import positive_int
from groundwork.errors import ConfigError
from groundwork.train.data import Batch, LabelledSequences, TokenData, pad_batch, pad_with_mask
from groundwork.train.masking import TokenMasker
from groundwork.train.objectives import IGNORE_INDEX, shift_right
from groundwork.train.pairs import Document, SentencePairs, pack_pair
from groundwork.train.span_corruption import (
    compute_input_and_target_lengths,
    noise_span_counts,
    random_spans_noise_mask,
    span_corrupt,
)


@dataclass
class _Example:
    ids: list[int]  # [CLS] A [SEP] (B [SEP])
    types: list[int]  # token types, 0 for A, 1 for B
    label: int | None  # the next-sentence label (None without NSP)


class BertPretrainingData:
    """BERT pretraining batches: segment pairs (or single segments) with masked tokens.

    Each training example is, with ``nsp``, ``[CLS] A [SEP] B [SEP]`` for a random pair
    (:class:`~groundwork.train.pairs.SentencePairs`: half IsNext, half NotNext; cut longest
    first to ``max_len`` from a random end), or without, ``[CLS] A [SEP]`` for a random segment
    (cut at the back). The batch is right-padded to its longest example and masked by
    ``masker`` (padding never chosen). Validation: every possible ``A`` of ``val_documents`` in
    order (every segment without ``nsp``), with labels, random ``B``'s and masks drawn from a
    generator seeded with ``val_seed``.

    Batch: a dict of ``input_ids``, ``attention_mask`` (1 for tokens, 0 for padding),
    ``token_type_ids`` (0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``), ``labels`` (original ids at
    the masked positions, -100 elsewhere), all ``(B, T)`` int64, and with ``nsp``
    ``next_sentence_label`` ``(B,)`` (0 = IsNext).

    Args:
        documents: Training documents, each a sequence of segments of token ids (no special
            tokens), e.g. encoded lines joined by :func:`~groundwork.train.pairs.chunk_segments`.
        val_documents: Validation documents, the same way.
        batch_size: Examples per batch.
        max_len: Tokens per example at most, special tokens included.
        cls_id, sep_id, pad_id: Ids of ``[CLS]``, ``[SEP]``, ``[PAD]``.
        masker: The masking (``[MASK]`` id, vocabulary size, special ids, rates).
        nsp: Make sentence pairs with a next-sentence label (BERT), or single segments.
        continuation_ids: Ids of word-continuation pieces (``##ing``;
            :func:`~groundwork.train.masking.wordpiece_continuation_ids`): whole-word masking.
        eval_batches: Validation batches at most (None: all).
        val_seed: Seed of the validation draws.
    """

    def __init__(
        self,
        documents: Sequence[Document],
        val_documents: Sequence[Document] = (),
        *,
        batch_size: int,
        max_len: int,
        cls_id: int,
        sep_id: int,
        pad_id: int,
        masker: TokenMasker,
        nsp: bool = True,
        continuation_ids: Iterable[int] | None = None,
        eval_batches: int | None = None,
        val_seed: int = 0,
    ) -> None:
        self.batch_size = positive_int("batch_size", batch_size)
        if max_len < (5 if nsp else 3):
            need = "5 ([CLS] A [SEP] B [SEP])" if nsp else "3 ([CLS] A [SEP])"
            raise ConfigError(f"max_len must be >= {need}, got {max_len}")
        self.max_len, self.nsp, self.masker = max_len, nsp, masker
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.eval_batches, self.val_seed = eval_batches, val_seed
        self.continuation = (
            None if continuation_ids is None else torch.tensor(sorted(continuation_ids))
        )
        self.pairs = SentencePairs(documents) if nsp else None
        self.segments = _segments(documents)
        if not self.segments:
            raise ConfigError("no training segments: every document is empty")
        has_val = any(len(s) for d in val_documents for s in d)
        self.val_pairs = SentencePairs(val_documents) if nsp and has_val else None
        self.val_segments = _segments(val_documents)

    def _example(self, g: torch.Generator, k: int | None, val: bool) -> _Example:
        """A random example (``k`` None) or the ``k``-th of validation."""
        if self.nsp:
            pairs = self.val_pairs if val else self.pairs
            assert pairs is not None
            p = pairs.sample(g) if k is None else pairs.pair_at(k, g)
            ids, types = pack_pair(
                p.a, p.b, cls_id=self.cls_id, sep_id=self.sep_id, max_len=self.max_len, generator=g
            )
            return _Example(ids, types, p.label)
        segments = self.val_segments if val else self.segments
        if k is None:
            k = int(torch.randint(len(segments), (1,), generator=g))
        ids = [self.cls_id, *segments[k][: self.max_len - 2], self.sep_id]
        return _Example(ids, [0] * len(ids), None)

    def _batch(self, examples: list[_Example], g: torch.Generator) -> Batch:
        ids, lengths = pad_batch([e.ids for e in examples], self.pad_id)  # (B, T), (B,)
        types, _ = pad_batch([e.types for e in examples], 0)  # (B, T)
        attention_mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()  # (B, T)
        continuation = None if self.continuation is None else torch.isin(ids, self.continuation)
        inputs, labels = self.masker(
            ids, g, special_tokens_mask=attention_mask == 0, continuation=continuation
        )
        batch = {
            "input_ids": inputs,
            "attention_mask": attention_mask,
            "token_type_ids": types,
            "labels": labels,
        }
        if self.nsp:
            batch["next_sentence_label"] = torch.tensor([e.label for e in examples])
        return batch

    def next_batch(self, generator: torch.Generator) -> Batch:
        examples = [self._example(generator, None, False) for _ in range(self.batch_size)]
        return self._batch(examples, generator)

    def val_batches(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.val_seed)  # the same draws at every evaluation
        if self.nsp:
            n = 0 if self.val_pairs is None else len(self.val_pairs)
        else:
            n = len(self.val_segments)
        if self.eval_batches is not None:
            n = min(n, self.eval_batches * self.batch_size)
        for start in range(0, n, self.batch_size):
            ks = range(start, min(start + self.batch_size, n))
            yield self._batch([self._example(g, k, True) for k in ks], g)

    @property
    def val_description(self) -> str:
        what = "pairs" if self.nsp else "segments"
        if self.eval_batches is None:
            return f"all validation {what}"
        return f"first {self.eval_batches * self.batch_size} validation {what}"


def _segments(documents: Sequence[Document]) -> list[list[int]]:
    return [list(s) for d in documents for s in d if len(s)]


# ---------------------------------------------------------------------------------------------
# T5's span corruption


class SpanCorruptionData:
    """T5 pretraining batches: random windows of a token stream, span-corrupted.

    Every window holds ``tokens_length`` raw tokens, chosen by
    :func:`~groundwork.train.span_corruption.compute_input_and_target_lengths` so that its
    corrupted input, EOS included, has exactly ``inputs_length`` tokens (one fewer at noise
    density 0.5, then padded) and its target ``targets_length``; every window of a batch has
    the same numbers of noise tokens and spans, so nothing else is padded. Validation reads the
    first non-overlapping windows of ``val`` with noise drawn from a generator seeded with
    ``val_seed``.

    Batch: a dict of ``input_ids``, ``attention_mask`` ``(B, inputs_length)`` and
    ``decoder_input_ids``, ``labels`` ``(B, targets_length)`` (``labels`` shifted right after
    ``decoder_start_token_id``), int64.

    Args:
        train: The training token stream (:class:`groundwork.corpus.TokenShards`).
        val: The validation stream, or None.
        batch_size: Windows per batch.
        inputs_length: Encoder tokens per example (512 in T5).
        eos_id: End-of-sequence id, appended to inputs and targets.
        sentinel_start: Id of ``<extra_id_0>``; sentinel ``k`` is ``sentinel_start - k``. In
            T5 the tokenizer's last id, 32099 (not ``vocab_size - 1``: the embedding matrix is
            padded to 32128 rows).
        num_sentinels: Sentinel ids available (100 in T5).
        noise_density: Fraction of the tokens dropped (0.15).
        mean_noise_span_length: Mean length of a dropped span (3).
        decoder_start_token_id: First decoder input (T5: its pad id, 0).
        pad_id: Id that pads inputs (and decoder inputs).
        eval_batches: Validation batches at most (None: the whole split).
        val_seed: Seed of the validation noise.
    """

    def __init__(
        self,
        train: TokenData,
        val: TokenData | None,
        *,
        batch_size: int,
        inputs_length: int,
        eos_id: int,
        sentinel_start: int,
        num_sentinels: int = 100,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        decoder_start_token_id: int = 0,
        pad_id: int = 0,
        eval_batches: int | None = None,
        val_seed: int = 0,
    ) -> None:
        self.train, self.val = train, val
        self.batch_size = positive_int("batch_size", batch_size)
        self.inputs_length = inputs_length
        self.tokens_length, self.targets_length = compute_input_and_target_lengths(
            inputs_length, noise_density, mean_noise_span_length
        )
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length
        _, spans = noise_span_counts(self.tokens_length, noise_density, mean_noise_span_length)
        if spans + 1 > num_sentinels:
            raise ConfigError(
                f"inputs_length {inputs_length} gives {spans} noise spans, which need "
                f"{spans + 1} sentinels; only {num_sentinels} exist (use shorter inputs)"
            )
        if len(train) <= self.tokens_length:
            raise ConfigError(
                f"inputs_length {inputs_length} reads windows of {self.tokens_length} tokens; "
                f"the training split has only {len(train)}"
            )
        self.eos_id, self.sentinel_start = eos_id, sentinel_start
        self.decoder_start_token_id, self.pad_id = decoder_start_token_id, pad_id
        self.eval_batches, self.val_seed = eval_batches, val_seed

    def _corrupt(self, windows: torch.Tensor, g: torch.Generator) -> Batch:
        """Span-corrupt ``(B, tokens_length)`` windows into a batch."""
        B = windows.shape[0]
        input_ids = torch.full((B, self.inputs_length), self.pad_id, dtype=torch.long)
        labels = torch.full((B, self.targets_length), IGNORE_INDEX, dtype=torch.long)
        for i in range(B):
            noise = random_spans_noise_mask(
                self.tokens_length,
                self.noise_density,
                self.mean_noise_span_length,
                generator=g,
            )
            inputs, targets = span_corrupt(
                windows[i].long(), noise, sentinel_start=self.sentinel_start, eos_id=self.eos_id
            )
            input_ids[i, : len(inputs)] = inputs
            labels[i, : len(targets)] = targets
        attention_mask = (torch.arange(self.inputs_length) < len(inputs)).long().expand(B, -1)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.contiguous(),
            "decoder_input_ids": shift_right(
                labels, decoder_start_token_id=self.decoder_start_token_id, pad_id=self.pad_id
            ),
            "labels": labels,
        }

    def next_batch(self, generator: torch.Generator) -> Batch:
        windows, _ = self.train.random_batch(self.batch_size, self.tokens_length, generator)
        return self._corrupt(windows, generator)

    def val_batches(self) -> Iterator[Batch]:
        if self.val is None:
            return
        g = torch.Generator().manual_seed(self.val_seed)
        windows = self.val.sequential_batches(self.batch_size, self.tokens_length)
        for x, _ in itertools.islice(windows, self.eval_batches):
            yield self._corrupt(x, g)

    @property
    def val_description(self) -> str:
        size = f"{self.batch_size}x{self.inputs_length}"
        if self.eval_batches is None:
            return f"whole validation split, {size}"
        return f"first {self.eval_batches} batches of {size}"


# ---------------------------------------------------------------------------------------------
# source -> target pairs (fine-tuning an encoder-decoder)


class Seq2SeqPairs(LabelledSequences):
    """Source and target id sequences for an encoder-decoder (translation, spelling
    modernisation, ...), read in shuffled epochs of length-bucketed batches as
    :class:`~groundwork.train.data.LabelledSequences` reads a classifier's (the target is the
    "label"; batches group sources of similar length).

    Batch: a dict of ``input_ids``, ``attention_mask`` ``(B, S)`` (sources right-padded) and
    ``decoder_input_ids``, ``labels`` ``(B, T)``: ``labels`` are the targets, -100 after their
    end, and the decoder reads them shifted right after ``decoder_start_token_id``. The ids are
    taken as they are: append the EOS to sources and targets before.

    Args:
        sources: Encoder inputs (each of length >= 1).
        targets: What the decoder must write for each (each of length >= 1).
        batch_size: Pairs per training batch.
        val_sources: Validation inputs (read in source-length order).
        val_targets: Their targets.
        val_batch_size: Pairs per validation batch.
        pad_id: Id that pads sources and decoder inputs.
        decoder_start_token_id: The decoder's first input.
    """

    def __init__(
        self,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        *,
        batch_size: int,
        val_sources: Sequence[Sequence[int]] = (),
        val_targets: Sequence[Sequence[int]] = (),
        val_batch_size: int = 256,
        pad_id: int = 0,
        decoder_start_token_id: int = 0,
    ) -> None:
        if any(not s for s in (*sources, *val_sources)) or any(
            not t for t in (*targets, *val_targets)
        ):
            raise ConfigError("every source and every target needs at least one token")
        super().__init__(
            sources,
            targets,
            batch_size=positive_int("batch_size", batch_size),
            val_seqs=val_sources,
            val_labels=val_targets,
            val_batch_size=positive_int("val_batch_size", val_batch_size),
            pad_id=pad_id,
        )
        self.decoder_start_token_id = decoder_start_token_id

    def _batch(self, idx: list[int], seqs: Sequence[Sequence[int]], labels: Sequence[Any]) -> Batch:
        input_ids, attention_mask = pad_with_mask([seqs[i] for i in idx], self.pad_id)  # (B, S)
        targets, _ = pad_batch([labels[i] for i in idx], IGNORE_INDEX)  # (B, T)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": shift_right(
                targets, decoder_start_token_id=self.decoder_start_token_id, pad_id=self.pad_id
            ),
            "labels": targets,
        }

    @property
    def val_description(self) -> str:
        return f"{len(self.val_seqs):,} validation pairs"
