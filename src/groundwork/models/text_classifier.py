"""What every text classifier shares: features of right-padded word ids, dropout, a linear head.

:class:`~groundwork.models.cnn.TextCNN` and
:class:`~groundwork.models.rnn_classifier.BiLSTMClassifier` differ only in how they turn a sentence
into a feature vector (:meth:`TextClassifier.features`); the head and the calling convention
``net(ids, lengths) -> (B, num_classes)`` are written here once. Chapter 4.
"""

import torch
from torch import nn


class TextClassifier(nn.Module):
    """Base of the word-level classifiers: subclasses set ``self.dropout`` and ``self.head`` and
    define :meth:`features`."""

    dropout: nn.Module
    head: nn.Module

    def features(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence features ``(B, F)`` of right-padded word ids ``(B, T)``."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of right-padded word ids ``(B, T)``.

        Args:
            ids: Word ids, each row right-padded with ``pad_id``.
            lengths: True length of each row (default: the number of non-pad ids).
        """
        return self.head(self.dropout(self.features(ids, lengths)))

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())
