r"""Reward models: a language model with a scalar head, trained on preference pairs to score
answers as people ranked them (Ouyang et al. 2022, "Training language models to follow
instructions with human feedback", §3.5; the Bradley-Terry model of paired comparisons, Bradley
& Terry 1952, "Rank Analysis of Incomplete Block Designs").

The reward :math:`r_\phi(x, y)` of an answer :math:`y` to a prompt :math:`x` is a linear function
of the backbone's final hidden state at the sequence's last real token (the only position of a
causal decoder that has read everything), as ``transformers``' ``LlamaForSequenceClassification``
with one label, the head ``trl``'s ``RewardTrainer`` trains. Bradley and Terry model the chance
that :math:`y_w` is preferred to :math:`y_l` as :math:`\sigma(r(x, y_w) - r(x, y_l))`; the loss is
its negative log-likelihood,

$$ \mathcal{L} = -\log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l) - m\big), $$

with an optional margin :math:`m \ge 0` by which the chosen answer should win (Llama 2's
graded preferences; ``trl``'s ``margin`` column). Only differences of rewards are learnt: a
constant can be added to every reward, which ``center_rewards_coefficient`` (Eisenstein et al.
2023, as ``trl``) pins down by penalising :math:`(r_w + r_l)^2`.

A reward model scores the policy's samples during RLHF, so it must read the policy's tokens:
:func:`check_same_tokenizer` refuses a reward model whose tokenizer differs.

Chapter 14.
"""

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.adapt.features import hidden_size, last_hidden_state
from groundwork.adapt.heads import INIT_STD, pool
from groundwork.align.preference import (
    PreferenceData,
    PreferenceExample,
    collate_preferences,
    stack_pairs,
)
from groundwork.checks import in_range, positive_int
from groundwork.errors import ConfigError
from groundwork.tokenize import Tokenizer
from groundwork.train.objectives import LossOutput

__all__ = [
    "RewardModel",
    "RewardObjective",
    "bradley_terry_loss",
    "check_same_tokenizer",
    "pairwise_accuracy",
    "tokenizer_fingerprint",
]


class RewardModel(nn.Module):
    """A backbone with a scalar head on its last real token: ``score(h_last)``, one reward per
    sequence (``transformers``: ``*ForSequenceClassification`` with ``num_labels=1``, whose
    ``score`` has no bias).

    Args:
        backbone: A GPT or Llama (or another backbone :mod:`groundwork.adapt.features` reads);
            its own output head is unused.

    Raises:
        ConfigError: A backbone we cannot read.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(hidden_size(backbone), 1, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=INIT_STD)
        self.train(backbone.training)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rewards ``(B,)`` of right-padded ``input_ids`` ``(B, T)`` (``attention_mask`` 1 on
        tokens, 0 on padding; ``None``: no padding).

        Raises:
            ConfigError: Inputs of the wrong shape, or a row that is all padding.
        """
        hidden = last_hidden_state(self.backbone, input_ids, attention_mask)  # (B, T, d)
        if attention_mask is None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)  # (B, T)
        else:
            mask = attention_mask.bool()  # (B, T)
            if not bool(mask.any(dim=1).all()):
                raise ConfigError("a row of the batch is all padding (its attention_mask is all 0)")
        return self.score(pool(hidden, mask, "last")).squeeze(-1)  # (B, d) -> (B,)


# --8<-- [start:bradley_terry_loss]
def bradley_terry_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The mean of :math:`-\log \sigma(r_w - r_l - m)` over pairs: the negative log-likelihood
    of the preferences under the Bradley-Terry model (``margin`` :math:`m`: ``(B,)``, or none).

    >>> round(float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]))), 4)  # log 2
    0.6931
    """
    if rewards_chosen.shape != rewards_rejected.shape:
        raise ConfigError(
            f"chosen and rejected rewards differ in shape: {tuple(rewards_chosen.shape)} and "
            f"{tuple(rewards_rejected.shape)}"
        )
    diff = rewards_chosen - rewards_rejected  # (B,)
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


# --8<-- [end:bradley_terry_loss]


def _pair_rewards(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rewards ``(2B,)`` of a preference batch, chosen first, from one forward pass."""
    stacked = stack_pairs(batch)  # (2B, T) each
    rewards = model(stacked["input_ids"], attention_mask=stacked["attention_mask"])
    return rewards.squeeze(-1) if rewards.dim() == 2 else rewards  # (2B,)


class RewardObjective:
    """The Bradley-Terry loss for the training engine, on the batches of
    :class:`~groundwork.align.preference.PreferenceData` (a ``margin`` ``(B,)`` in the batch is
    used when present). The model (a :class:`RewardModel`) scores chosen and rejected sequences
    as one batch of ``2B`` rows. ``items`` is the number of pairs; metrics ``accuracy`` (the
    share of pairs whose chosen answer gets the higher reward) and ``margin`` (the mean of
    :math:`r_w - r_l`).

    Args:
        center_rewards_coefficient: If given, adds this times the mean of :math:`(r_w + r_l)^2`
            to the loss (rewards centred on 0).
    """

    def __init__(self, center_rewards_coefficient: float | None = None) -> None:
        if center_rewards_coefficient is not None:
            in_range("center_rewards_coefficient", center_rewards_coefficient, 0.0, math.inf)
        self.center_rewards_coefficient = center_rewards_coefficient

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        chosen, rejected = _pair_rewards(model, batch).chunk(2)  # (B,), (B,)
        loss = bradley_terry_loss(chosen, rejected, batch.get("margin"))
        if self.center_rewards_coefficient is not None:
            loss = loss + self.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        tokens = batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum()
        return LossOutput(
            loss=loss,
            items=len(chosen),
            tokens=int(tokens),
            metrics={
                "accuracy": (chosen > rejected).float().mean().detach(),
                "margin": (chosen - rejected).mean().detach(),
            },
        )


def pairwise_accuracy(
    model: nn.Module,
    pairs: PreferenceData | Sequence[PreferenceExample],
    *,
    batch_size: int = 32,
    pad_id: int = 0,
) -> float:
    """The share of held-out pairs whose chosen answer ``model`` scores strictly higher (ties
    count as wrong), computed in eval mode without gradients on the model's device.

    Args:
        model: A reward model, ``model(ids, attention_mask=...) -> (B,)``.
        pairs: The pairs, or :class:`PreferenceData` (its validation pairs).
        batch_size: Pairs per forward pass.
        pad_id: Padding id (default: the ``PreferenceData``'s).

    Raises:
        ConfigError: No pairs.
    """
    positive_int("batch_size", batch_size)
    if isinstance(pairs, PreferenceData):
        pad_id, pairs = pairs.pad_id, pairs.val_pairs
    if not pairs:
        raise ConfigError("no held-out pairs to measure the accuracy on")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                batch = collate_preferences(pairs[start : start + batch_size], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                chosen, rejected = _pair_rewards(model, batch).chunk(2)  # (b,), (b,)
                correct += int((chosen > rejected).sum())
    finally:
        model.train(was_training)
    return correct / len(pairs)


# ---------------------------------------------------------------------------------------------
# the reward model must read the policy's tokens

PROBES = (
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  Indented\tcode: def f(x): return x ** 2  # 100%\n",
    "Numbers 0123456789, 3.14159 and 1e-10; URLs https://example.org/a?b=c.",
    "Unicode: café, naïve, 東京, Ελληνικά, emoji 🙂.",
)
"""Texts both tokenizers encode: two with one vocabulary but other merges differ on them."""


def _vocabulary(tokenizer: Any) -> dict[str, int]:
    """Token string -> id, for our tokenizers, ``tokenizers`` and ``transformers`` ones."""
    if isinstance(tokenizer, Tokenizer):
        return {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        raise ConfigError(
            f"cannot read the vocabulary of a {type(tokenizer).__name__}: give a groundwork "
            "Tokenizer, a tokenizers.Tokenizer or a transformers tokenizer"
        )
    return dict(get_vocab())


def _encode(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text``, without special tokens added (``transformers`` adds a BOS)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.encode(text)
    out = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(out, "ids", out))  # tokenizers.Encoding or a list


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A SHA-256 hex digest of the vocabulary (every token and its id) and of the encodings of
    :data:`PROBES`: equal for tokenizers that map text to the same ids."""
    vocab = sorted(_vocabulary(tokenizer).items(), key=lambda kv: (kv[1], kv[0]))
    probes = [_encode(tokenizer, text) for text in PROBES]
    blob = json.dumps({"vocab": vocab, "probes": probes}, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def check_same_tokenizer(policy_tokenizer: Any, reward_tokenizer: Any) -> None:
    """Refuse a reward model that reads other tokens than the policy writes: the vocabularies
    (tokens and ids) must be equal and both must encode :data:`PROBES` alike.

    Raises:
        ConfigError: Saying what differs (vocabulary size, the first token with another id, or
            a text encoded differently) and what to do.
    """
    advice = (
        ": the reward model must share the policy's tokenizer (train it from the same base "
        "model, or decode and re-encode between them)"
    )
    ours, theirs = _vocabulary(policy_tokenizer), _vocabulary(reward_tokenizer)
    if len(ours) != len(theirs):
        raise ConfigError(
            f"the policy's tokenizer has {len(ours)} tokens and the reward model's "
            f"{len(theirs)}{advice}"
        )
    for token, i in sorted(ours.items(), key=lambda kv: kv[1]):
        if theirs.get(token) != i:
            raise ConfigError(
                f"token {token!r} has id {i} for the policy and {theirs.get(token)} for the "
                f"reward model{advice}"
            )
    for text in PROBES:
        if _encode(policy_tokenizer, text) != _encode(reward_tokenizer, text):
            raise ConfigError(
                f"the two tokenizers have one vocabulary but encode {text!r} differently "
                f"(other merges or normalisation){advice}"
            )
