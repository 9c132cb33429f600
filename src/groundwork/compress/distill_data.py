r"""Sequence-level knowledge distillation's data: the teacher's own outputs, as a token stream.

Kim and Rush (2016, "Sequence-Level Knowledge Distillation") distil at the level of whole
sequences instead of single tokens. Word-level distillation (Hinton et al. 2015;
:mod:`groundwork.train.distill`) matches the teacher's distribution at each position of the
*data*; sequence-level distillation approximates the teacher's distribution over whole sequences
by its mode, the sequence it generates (greedy decoding or beam search), and trains the student
with the ordinary cross-entropy on those sequences:

$$ \mathcal{L}_\text{seq-KD} = -\sum_t \log p_S(\hat y_t \mid \hat y_{<t}), \qquad
   \hat y = \operatorname*{arg\,max}_y p_T(y \mid x) \ \text{(approximately)}. $$

For a language model, the conditioning :math:`x` is a *prompt*: a short window of real text
(:func:`sample_prompts`). :func:`teacher_sequences` continues every prompt with the teacher
(batched greedy decoding with a KV cache, :func:`groundwork.generate.generate`, or beam search,
:func:`groundwork.generate.beam_search`), and :func:`write_sequences` joins prompt and
continuation into token shards (the layout of :func:`groundwork.corpus.prepare_shards`, the
token ids exactly as the teacher produced them, never re-encoded), which the engine then reads
like any corpus with :class:`~groundwork.train.objectives.CausalLMObjective`. The student learns
the real prompt tokens and the teacher's continuation alike; the continuation dominates when
prompts are short.

The teacher runs in eval mode without gradients; it is not changed. This module sits in
``compress/`` (layer 5) because it decodes (``generate/``, layer 4), which the training engine
(layer 3) may not import. Chapter 18 (Efficient inference and compression: distillation).
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from groundwork.checks import positive_int
from groundwork.corpus.shards import META, dtype_for
from groundwork.errors import ConfigError, DataError
from groundwork.fileio import atomic_path
from groundwork.generate import GenerationConfig, beam_search, generate

__all__ = ["sample_prompts", "teacher_sequences", "write_sequences"]


class _TokenWindows(Protocol):
    def random_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def sample_prompts(
    tokens: _TokenWindows, n: int, prompt_len: int, *, seed: int = 0
) -> list[list[int]]:
    """``n`` prompts of ``prompt_len`` tokens at uniformly random offsets of a token stream
    (a :class:`~groundwork.corpus.TokenShards` split), reproducible from ``seed``.

    >>> from groundwork.corpus import TokenShards  # doctest: +SKIP
    >>> sample_prompts(TokenShards("data", "train"), 2, 4)  # doctest: +SKIP
    [[412, 9, 1180, 30], [77, 3021, 11, 5]]
    """
    positive_int("n", n)
    positive_int("prompt_len", prompt_len)
    x, _ = tokens.random_batch(n, prompt_len, torch.Generator().manual_seed(seed))  # (n, P)
    return [[int(t) for t in row] for row in x.tolist()]


# --8<-- [start:teacher_sequences]
@torch.no_grad()
def teacher_sequences(
    teacher: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    num_beams: int = 1,
    batch_size: int = 32,
    eos_ids: Iterable[int] = (),
    pad_id: int = 0,
    include_prompt: bool = True,
    progress: bool = False,
) -> list[list[int]]:
    """The teacher's continuation of each prompt: the data of sequence-level distillation.

    Args:
        teacher: A causal LM (``GPT``, ``Llama``); put in eval mode, not changed.
        prompts: Token ids, one non-empty list per sequence (lengths may differ).
        max_new_tokens: Generate at most this many tokens after each prompt.
        num_beams: 1: greedy decoding, ``batch_size`` prompts at a time with a KV cache;
            more: beam search with this many beams, one prompt at a time (Kim and Rush's
            "beam search approximation" of the teacher's mode), the best hypothesis kept.
        batch_size: Prompts decoded together (greedy).
        eos_ids: A continuation stops after one of these ids (kept in the sequence).
        pad_id: Padding of the left-padded prompt batches.
        include_prompt: Return ``prompt + continuation`` (else the continuation only).
        progress: Show a progress bar.

    Returns:
        One token list per prompt, in order.

    Raises:
        ConfigError: no prompts, an empty prompt or one longer than the teacher's context, or a
            bad ``max_new_tokens``, ``num_beams`` or ``batch_size``.
    """
    from tqdm.auto import tqdm

    if not prompts:
        raise ConfigError("teacher_sequences needs at least one prompt")
    positive_int("batch_size", batch_size)
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, num_beams=num_beams)
    ends = tuple(sorted(set(eos_ids)))
    was_training = teacher.training
    teacher.eval()
    out: list[list[int]] = []
    step = 1 if num_beams > 1 else batch_size
    bar = tqdm(total=len(prompts), desc="teacher", unit="seq", disable=not progress)
    try:
        for first in range(0, len(prompts), step):
            chunk = [list(p) for p in prompts[first : first + step]]
            if num_beams > 1:
                best, _ = beam_search(cast(Any, teacher), chunk[0], config, eos_ids=ends)[0]
                continuations = [best]
            else:  # greedy: temperature 0, a batch of left-padded prompts with a KV cache
                continuations = generate(
                    teacher, chunk, config, pad_id=pad_id, eos_ids=ends
                ).sequences
            for prompt, new in zip(chunk, continuations, strict=True):
                out.append([*prompt, *new] if include_prompt else list(new))
            bar.update(len(chunk))
    finally:
        bar.close()
        teacher.train(was_training)
    return out


# --8<-- [end:teacher_sequences]


def write_sequences(
    sequences: Sequence[Sequence[int]],
    out_dir: str | Path,
    *,
    vocab_size: int,
    eot_id: int | None,
    split: str = "train",
    n_bytes: int | None = None,
    source: str = "teacher",
    tokenizer_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write token sequences as one split of a shard directory (``<split>.bin`` and
    ``meta.json``, the layout :class:`~groundwork.corpus.TokenShards` reads), each followed by
    ``eot_id`` unless it already ends with it. The ids are written as given (no re-encoding).

    Args:
        sequences: Token ids, one list per sequence.
        out_dir: The shard directory (created); an existing ``meta.json`` there keeps its other
            splits.
        vocab_size: Every id must be below it; picks ``uint16`` or ``uint32``.
        eot_id: End-of-text id between sequences, or ``None``.
        split: The split's name.
        n_bytes: UTF-8 bytes of the sequences' text, recorded for bits per byte (None: not
            recorded).
        source: Recorded in ``meta.json``.
        tokenizer_path: Recorded in ``meta.json`` with its sha256.

    Returns:
        The ``meta.json`` written.

    Raises:
        DataError: an id outside ``[0, vocab_size)``, or no tokens at all.
    """
    from groundwork.corpus.fetch import sha256_file

    dtype = dtype_for(vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seq in sequences:
        ids = list(seq)
        if eot_id is not None and (not ids or ids[-1] != eot_id):
            ids.append(eot_id)
        rows.append(np.asarray(ids, dtype=np.int64))
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)  # (N,)
    if flat.size == 0:
        raise DataError("no tokens to write: every sequence is empty")
    if flat.min() < 0 or flat.max() >= vocab_size:
        bad = int(flat.max() if flat.max() >= vocab_size else flat.min())
        raise DataError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")
    with atomic_path(out / f"{split}.bin") as tmp, open(tmp, "wb") as f:
        flat.astype(dtype).tofile(f)
    meta_path = out / META
    meta: dict[str, Any] = (
        json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    )
    info: dict[str, int] = {"tokens": int(flat.size), "documents": len(rows)}
    if n_bytes is not None:
        info["bytes"] = int(n_bytes)
    tokenizer = None
    if tokenizer_path is not None:
        tokenizer = {"path": str(tokenizer_path), "sha256": sha256_file(Path(tokenizer_path))}
    meta.update(
        vocab_size=vocab_size,
        dtype=dtype.name,
        eot_id=eot_id,
        source=source,
        tokenizer=tokenizer,
        splits={**meta.get("splits", {}), split: info},
    )
    with atomic_path(meta_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
    return meta
