"""Sentence embeddings from a BERT-style encoder: mean pooling over the tokens, then L2 norm.

Sentence-BERT (Reimers & Gurevych 2019) turns an encoder's per-token states into one vector per
sentence by averaging the states of the real tokens (padding excluded):

$$e = \\frac{\\sum_t m_t\\, h_t}{\\sum_t m_t}, \\qquad \\hat e = \\frac{e}{\\lVert e \\rVert_2}$$

with $m_t = 1$ for a token and $0$ for padding. With unit vectors, the cosine similarity of two
sentences is a dot product, so a batch's similarity matrix is $\\hat E \\hat E^\\top$. This is what
``SentenceTransformer("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True)`` computes
(tested equal to 1e-5), here with our :class:`~groundwork.models.bert.Bert` and WordPiece.

Chapter 6 (Pretrained model families: encoders).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from groundwork.checks import positive_int
from groundwork.errors import ConfigError
from groundwork.models.bert import Bert
from groundwork.runtime import eval_mode
from groundwork.tokenize.base import Tokenizer


# --8<-- [start:mean_pool]
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the token states, padding excluded: ``(B, T, d), (B, T) -> (B, d)``.

    >>> mean_pool(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[1, 1, 0]]))
    tensor([[2.]])
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    total = (hidden * mask).sum(dim=1)  # (B, d)
    count = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1): tokens per row
    return total / count


# --8<-- [end:mean_pool]


def encode_for_encoder(
    tokenizer: Tokenizer, text: str, max_length: int, *, cls: str = "[CLS]", sep: str = "[SEP]"
) -> list[int]:
    """``[CLS] tokens [SEP]``, the tokens cut so that the whole fits in ``max_length``.

    Raises:
        ConfigError: The tokenizer has no ``[CLS]`` or ``[SEP]`` token, or ``max_length < 2``.
    """
    cls_id, sep_id = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    if cls_id is None or sep_id is None:
        raise ConfigError(
            f"the tokenizer has no {cls} or {sep} token: sentence embeddings need a BERT-style "
            "(WordPiece) tokenizer"
        )
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2 ({cls} and {sep}), got {max_length}")
    return [cls_id, *tokenizer.encode(text)[: max_length - 2], sep_id]


def sentence_embeddings(
    model: Bert,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int | None = None,
) -> torch.Tensor:
    """One vector per text: the encoder's mean-pooled last hidden states (Sentence-BERT).

    Args:
        model: The encoder (:class:`~groundwork.models.bert.Bert`): ``model(ids,
            attention_mask=mask)`` returns the hidden states ``(B, T, d)``.
        tokenizer: Its tokenizer, with ``[CLS]`` and ``[SEP]`` (each text becomes
            ``[CLS] ... [SEP]``).
        texts: The texts to embed.
        batch_size: Texts per forward pass (each batch is padded to its longest text).
        normalize: Scale every vector to unit length (then dot products are cosines).
        max_length: Longest input in tokens, ``[CLS]`` and ``[SEP]`` included; longer texts
            are cut (default: ``model.config.max_seq_len``; sentence-transformers uses 256 for
            all-MiniLM-L6-v2).

    Returns:
        Embeddings ``(len(texts), d)`` in float32, on the model's device.

    Raises:
        ConfigError: No texts, a bad ``batch_size``/``max_length``, or a tokenizer without
            ``[CLS]``/``[SEP]``.
    """
    positive_int("batch_size", batch_size)
    if not texts:
        raise ConfigError("no texts to embed: pass at least one")
    limit = model.config.max_seq_len
    max_length = limit if max_length is None else min(max_length, limit)
    device = next(model.parameters()).device
    pad_id = 0  # any id: padded positions are masked out of attention and of the mean
    out = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, len(texts), batch_size):
            rows = [
                encode_for_encoder(tokenizer, t, max_length)
                for t in texts[start : start + batch_size]
            ]
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T): 1 = token
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = model(ids, attention_mask=mask)  # (B, T, d)
            out.append(mean_pool(hidden.float(), mask))  # (B, d)
    embeddings = torch.cat(out)  # (N, d)
    return F.normalize(embeddings, p=2, dim=1) if normalize else embeddings


def cosine_similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of rows: ``(N, d) -> (N, N)``.

    >>> cosine_similarity_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0]])).round(decimals=3)
    tensor([[1.0000, 0.7070],
            [0.7070, 1.0000]])
    """
    unit = F.normalize(embeddings, p=2, dim=1)
    return unit @ unit.T  # (N, N)
