r"""A bidirectional LSTM text classifier.

Words are embedded, a stack of bidirectional LSTM layers reads the text left to right and right to
left, and a linear head classifies a summary of the two readings: either the *max* over time of
the outputs (the default) or the *last* states (the forward state after the last word and the
backward state after the first word).

Padding. Sequences in a batch are right-padded with ``pad_id`` and their true ``lengths`` are
given (or found by counting non-pad tokens). The LSTM gets a mask that is False on padding, and
:class:`~groundwork.models.rnn.LSTM` carries its state unchanged through masked steps: the forward
direction's state stops at the last word, and the backward direction, which starts at the end of
the padded row, is still in its zero initial state when it reaches the last word. Every output at
a real position is therefore exactly what the text alone gives (what
``torch.nn.utils.rnn.pack_padded_sequence`` achieves for ``torch.nn.LSTM``). "Last" pooling reads
the forward output at position ``length - 1`` and the backward output at position 0; max pooling
ignores padded positions. A padded batch gives exactly the logits of each text alone.

References:
    * Hochreiter & Schmidhuber 1997, "Long Short-Term Memory".
    * Schuster & Paliwal 1997, "Bidirectional Recurrent Neural Networks".
    * Graves & Schmidhuber 2005, "Framewise phoneme classification with bidirectional LSTM and
      other neural network architectures".

Chapter 4 of the docs ("Recurrent and convolutional models").
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.cnn import check_batch, lengths_from_padding
from groundwork.models.config import check_choice, check_positive
from groundwork.models.rnn import LSTM
from groundwork.models.text_classifier import TextClassifier

Pooling = Literal["last", "max"]


@dataclass(kw_only=True)
class BiLSTMClassifierConfig:
    """Shape and options of a bidirectional LSTM classifier."""

    vocab_size: int
    """Number of word ids, ``pad_id`` included."""
    num_classes: int = 2
    """Number of output classes."""
    d_embed: int = 64
    """Width of the word embeddings."""
    hidden_size: int = 64
    """LSTM state size per direction; the summary has ``2 * hidden_size`` entries."""
    num_layers: int = 1
    """Stacked bidirectional layers; layer ``l > 0`` reads both directions of layer ``l - 1``."""
    dropout: float = 0.5
    """Dropout on the embeddings, between layers and on the summary (training only)."""
    pooling: Pooling = "max"
    """``"max"``: max over time of the outputs (padding excluded; the better of the two on
    sms-spam); ``"last"``: forward state at the last word and backward state at the first word."""
    pad_id: int = 0
    """Id of the padding token; its embedding is kept at zero."""

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "num_classes", "d_embed", "hidden_size", "num_layers")
        check_choice(self, "pooling", ["last", "max"])
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(
                f"pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id}"
            )


# --8<-- [start:bilstm]
class BiLSTMClassifier(TextClassifier):
    """Embeddings, ``num_layers`` bidirectional LSTM layers, a summary, dropout and a linear head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: BiLSTMClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed, padding_idx=c.pad_id)
        self.lstm = LSTM(
            c.d_embed, c.hidden_size, c.num_layers, bidirectional=True, dropout=c.dropout
        )
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(2 * c.hidden_size, c.num_classes)

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Outputs of the last layer, both directions, ``(B, T, 2 * hidden_size)``.

        ``out[b, t, :H]`` has read words ``0 .. t`` and ``out[b, t, H:]`` words
        ``t .. lengths[b] - 1``; entries at padded positions (``t >= lengths[b]``) are meaningless.
        """
        x = self.dropout(self.embed(ids))  # (B, T, D)
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        out, _ = self.lstm(x, mask=real)  # (B, T, 2H): [forward | backward] at each position
        return out

    def features(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The summary of each text, ``(B, 2 * hidden_size)``."""
        if lengths is None:
            lengths = lengths_from_padding(ids, self.config.pad_id)
        check_batch(ids, lengths)
        out = self.encode(ids, lengths)  # (B, T, 2H)
        H = self.config.hidden_size
        if self.config.pooling == "last":
            rows = torch.arange(ids.shape[0], device=ids.device)
            last_fwd = out[rows, lengths - 1, :H]  # (B, H): forward state after the last word
            first_bwd = out[:, 0, H:]  # (B, H): backward state after the first word
            return torch.cat([last_fwd, first_bwd], dim=-1)  # (B, 2H)
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        return out.masked_fill(~real[..., None], float("-inf")).max(dim=1).values  # (B, 2H)


# --8<-- [end:bilstm]
