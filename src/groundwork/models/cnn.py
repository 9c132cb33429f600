r"""A convolutional text classifier: Kim's CNN for sentence classification.

Words are looked up in an embedding table, several 1-D convolutions of different widths slide over
the sequence of embeddings (each filter is a soft n-gram detector), a ReLU and a max over time keep
each filter's strongest match anywhere in the text, and a linear layer on the concatenated maxima
gives the class logits. Dropout on the pooled features regularises the head.

Padding. Sequences in a batch are right-padded with ``pad_id`` and their true ``lengths`` are
given (or found by counting non-pad tokens). Padded positions are zeroed before the convolution,
each convolution pads ``k - 1`` zeros on both sides (a "wide" convolution, so a text shorter than
the widest filter still has windows), and windows that lie entirely in the padding are set to
``-inf`` before the max. A padded batch therefore gives exactly the logits of each text alone.

References:
    * Kim 2014, "Convolutional Neural Networks for Sentence Classification" (EMNLP): filter widths
      3, 4, 5 with 100 maps each, max-over-time pooling, dropout 0.5.
    * Collobert et al. 2011, "Natural Language Processing (Almost) from Scratch" (max over time).
    * Zhang & Wallace 2017, "A Sensitivity Analysis of (and Practitioners' Guide to) Convolutional
      Neural Networks for Sentence Classification".

Chapter 4 of the docs ("Recurrent and convolutional models").
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_positive
from groundwork.models.text_classifier import TextClassifier


@dataclass(kw_only=True)
class TextCNNConfig:
    """Shape and options of a Kim-style text CNN."""

    vocab_size: int
    """Number of word ids, ``pad_id`` included."""
    num_classes: int = 2
    """Number of output classes."""
    d_embed: int = 64
    """Width of the word embeddings (Kim: 300, word2vec's; 64 trains in seconds on a CPU)."""
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    """Widths (in words) of the parallel convolutions: one bank of filters per width."""
    n_filters: int = 64
    """Filters (feature maps) per width (Kim: 100); the pooled feature vector has
    ``n_filters * len(kernel_sizes)`` entries."""
    dropout: float = 0.5
    """Dropout on the pooled features (training only)."""
    pad_id: int = 0
    """Id of the padding token; its embedding is kept at zero."""

    def __post_init__(self) -> None:
        self.kernel_sizes = tuple(self.kernel_sizes)
        check_positive(self, "vocab_size", "num_classes", "d_embed", "n_filters")
        if not self.kernel_sizes or any(
            not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.kernel_sizes
        ):
            raise ConfigError(
                f"kernel_sizes must be a non-empty list of positive integers, got "
                f"{self.kernel_sizes!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(
                f"pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id}"
            )


def lengths_from_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """True lengths of right-padded sequences: the number of non-pad ids in each row. ``(B,)``."""
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (batch, time), got {tuple(ids.shape)}")
    return (ids != pad_id).sum(dim=1)


def check_batch(ids: torch.Tensor, lengths: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``ids`` is ``(B, T)`` and every length is in ``[1, T]``."""
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (batch, time), got {tuple(ids.shape)}")
    if lengths.shape != (ids.shape[0],):
        raise ValueError(f"lengths must have shape ({ids.shape[0]},), got {tuple(lengths.shape)}")
    if ids.shape[0] and (int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]):
        raise ValueError(
            f"every length must be in [1, {ids.shape[1]}], got {lengths.tolist()}; "
            "encode an empty text as one <unk> token"
        )


# --8<-- [start:textcnn]
class TextCNN(TextClassifier):
    """Kim (2014): embeddings, parallel wide 1-D convolutions, ReLU, max over time, linear head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: TextCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed, padding_idx=c.pad_id)
        # One bank of n_filters filters per width k; filter w in R^{k x d} scores each k-gram.
        self.convs = nn.ModuleList(
            nn.Conv1d(c.d_embed, c.n_filters, kernel_size=k, padding=k - 1) for k in c.kernel_sizes
        )
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.n_filters * len(c.kernel_sizes), c.num_classes)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled feature vector of each text, ``(B, n_filters * len(kernel_sizes))``."""
        if lengths is None:
            lengths = lengths_from_padding(ids, self.config.pad_id)
        check_batch(ids, lengths)
        T = ids.shape[1]
        real = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        x = self.embed(ids) * real[..., None]  # (B, T, D), padding positions exactly zero
        x = x.transpose(1, 2)  # (B, D, T): Conv1d wants channels first
        pooled = []
        for k, conv in zip(self.config.kernel_sizes, self.convs, strict=True):
            # c_j = ReLU(w . x_{j-k+1 : j} + b) for j = 0 .. T + k - 2 (wide convolution)
            c = F.relu(conv(x))  # (B, F, T + k - 1)
            # Window j touches a real word iff j - k + 1 < length, i.e. j < length + k - 1.
            valid = torch.arange(T + k - 1, device=ids.device)[None, :] < (lengths[:, None] + k - 1)
            c = c.masked_fill(~valid[:, None, :], float("-inf"))  # (B, F, T + k - 1)
            pooled.append(c.max(dim=2).values)  # (B, F): max over time, c_hat = max_j c_j
        return torch.cat(pooled, dim=1)  # (B, F * len(kernel_sizes))


# --8<-- [end:textcnn]
