"""The objectives for task heads: token classification (``TokenClassificationObjective``) and
sequence classification with a dict batch (``ClassificationObjective``), against
``F.cross_entropy``; and a few optimiser steps that make the loss fall."""

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.adapt import SequenceClassifier, TokenClassifier
from groundwork.models import GPT, Bert, BertConfig, GPTConfig
from groundwork.train import (
    IGNORE_INDEX,
    ClassificationObjective,
    LossOutput,
    TokenClassificationObjective,
)


class _Recorder(nn.Module):
    """Returns fixed logits and records how it was called."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.calls: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []

    def forward(self, input_ids: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        self.calls.append((input_ids, kwargs))
        return self.logits


def _token_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 500, (2, 6), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([[0, 2, IGNORE_INDEX, 1, 1, 0], [3, 0, 2, -100, -100, -100]])
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


def test_token_objective_is_cross_entropy_over_labelled_tokens() -> None:
    batch = _token_batch()
    logits = torch.randn(2, 6, 4)
    model = _Recorder(logits)
    out = TokenClassificationObjective()(model, batch)
    assert isinstance(out, LossOutput)
    expected = F.cross_entropy(logits.reshape(-1, 4), batch["labels"].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert out.items == 8 and out.tokens == 9
    keep = batch["labels"] != IGNORE_INDEX
    accuracy = (logits.argmax(-1)[keep] == batch["labels"][keep]).float().mean()
    torch.testing.assert_close(out.metrics["token_accuracy"], accuracy)
    ids, kwargs = model.calls[0]
    assert torch.equal(ids, batch["input_ids"]) and set(kwargs) == {"attention_mask"}
    TokenClassificationObjective()(model, {**batch, "token_type_ids": torch.zeros(2, 6)})
    assert set(model.calls[1][1]) == {"attention_mask", "token_type_ids"}


def test_classification_objective_takes_a_dict_batch() -> None:
    logits = torch.randn(3, 5)
    labels = torch.tensor([4, 0, 2])
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[2, 3:] = 0
    batch = dict(input_ids=torch.ones(3, 7, dtype=torch.long), attention_mask=mask, labels=labels)
    out = ClassificationObjective()(_Recorder(logits), batch)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, labels))
    assert out.items == 3 and out.tokens == 17
    accuracy = (logits.argmax(-1) == labels).float().mean()
    torch.testing.assert_close(out.metrics["accuracy"], accuracy)
    # The tuple batch of the BiLSTM/CNN classifiers is read as before.
    tuple_out = ClassificationObjective()(
        lambda ids, lengths: logits, (batch["input_ids"], torch.tensor([7, 7, 3]), labels)
    )
    torch.testing.assert_close(tuple_out.loss, out.loss)
    assert tuple_out.tokens == 17 and tuple_out.metrics == {}


def test_fine_tuning_lowers_the_loss() -> None:
    torch.manual_seed(0)
    batch = _token_batch()
    tagger = TokenClassifier(Bert(BertConfig.from_name("tiny")), 4, dropout=0.0)
    classifier = SequenceClassifier(GPT(GPTConfig.from_name("tiny")), 2, "last", 0.0)
    seq_batch = {**batch, "labels": torch.tensor([0, 1])}
    for model, objective, data in (
        (tagger, TokenClassificationObjective(), batch),
        (classifier, ClassificationObjective(), seq_batch),
    ):
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
        losses = []
        for _ in range(10):
            out = objective(model, data)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.loss.item())
        assert losses[-1] < 0.5 * losses[0], losses
