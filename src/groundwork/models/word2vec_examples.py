"""From text to word2vec's training examples: subsampling of frequent words, the dynamic window,
and batches of (input, target) pairs in text order.

Following word2vec.c and gensim (Mikolov, Sutskever, Chen, Corrado, Dean 2013, "Distributed
Representations of Words and Phrases and their Compositionality", section 2.3): frequent words
are dropped at random before windowing (:func:`keep_probabilities`), each centre word draws its
own window size in 1..window, and windows never cross a sentence boundary
(:func:`training_examples`). :class:`groundwork.models.word2vec.Word2Vec` trains on the batches.

Docs: chapter 3, "Word vectors and neural basics".
"""

from collections.abc import Iterator, Sequence

import numpy as np
import torch


# --8<-- [start:subsample]
def keep_probabilities(counts: Sequence[int], sample: float) -> torch.Tensor:
    """Probability of keeping each occurrence of a word when subsampling frequent words.

    With f(w) = count(w) / total and threshold t (``sample``), word2vec.c and gensim keep a word
    with probability

        P_keep(w) = (sqrt(f(w) / t) + 1) * t / f(w)      (clipped to 1),

    a smoothed version of the paper's 1 - P_discard = sqrt(t / f). Words with f <= t are always
    kept; ``sample=0`` keeps everything. With counts [1000, 10] (total 1010) and t = 0.01:
    f = 1000/1010, t/f = 0.0101, P_keep = (sqrt(1/0.0101) + 1) * 0.0101 = 0.1106.

    >>> [round(p, 4) for p in keep_probabilities([1000, 10], 0.01).tolist()]
    [0.1106, 1.0]
    """
    c = torch.tensor(counts, dtype=torch.float64)
    if sample <= 0:
        return torch.ones_like(c)
    threshold = sample * c.sum()  # t * total, in counts
    return (((c / threshold).sqrt() + 1) * threshold / c).clamp(max=1.0)


# --8<-- [end:subsample]


def training_examples(
    words: np.ndarray,
    sent: np.ndarray,
    reach: np.ndarray,
    raw_pos: np.ndarray,
    *,
    arch: str,
    window: int,
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Batches of training examples in text order: ``(inputs, targets, raw position)``.

    ``words`` are the ids of the kept (subsampled) tokens, ``sent`` their sentence numbers,
    ``reach`` the window each centre drew (1..window) and ``raw_pos`` their positions in the
    whole text (for the learning rate). A context word must lie in the centre's sentence and
    within its window. Batches hold about ``batch_size`` examples.

    Skip-gram: inputs ``(B,)`` context-word ids, targets ``(B,)`` centre-word ids (word2vec.c
    predicts the centre from each context word; over a whole text the pairs are the same set
    as centre -> context). CBOW: inputs ``(B, 2W)`` context ids (-1 = none), targets ``(B,)``.
    """
    w = window
    offsets = np.concatenate([np.arange(-w, 0), np.arange(1, w + 1)])  # (2W,)
    n = words.size
    chunk = max(1, batch_size if arch == "cbow" else batch_size // w)
    carry_in: list[np.ndarray] = []
    carry_out: list[np.ndarray] = []
    carried = 0
    for start in range(0, n, chunk):
        centre = np.arange(start, min(start + chunk, n))  # (C,)
        ctx = centre[:, None] + offsets[None, :]  # (C, 2W)
        inside = (ctx >= 0) & (ctx < n)
        ctx_c = np.clip(ctx, 0, n - 1)
        ok = inside & (sent[ctx_c] == sent[centre][:, None])  # same sentence
        ok &= np.abs(offsets)[None, :] <= reach[centre][:, None]  # within the shrunk window
        if arch == "cbow":
            has = ok.any(1)
            ctx_ids = np.where(ok, words[ctx_c], -1)[has]  # (C', 2W)
            if ctx_ids.shape[0]:
                yield (
                    torch.from_numpy(ctx_ids),
                    torch.from_numpy(words[centre[has]]),
                    int(raw_pos[centre[0]]),
                )
            continue
        rows, cols = np.nonzero(ok)  # row-major: in text order of the centre
        carry_in.append(words[ctx_c[rows, cols]])
        carry_out.append(words[centre[rows]])
        carried += rows.size
        if carried >= batch_size or start + chunk >= n:
            if carried:
                yield (
                    torch.from_numpy(np.concatenate(carry_in)),
                    torch.from_numpy(np.concatenate(carry_out)),
                    int(raw_pos[centre[0]]),
                )
            carry_in, carry_out, carried = [], [], 0
