r"""Masked language modelling: which tokens BERT hides and must recover (Devlin et al. 2019, §3.1).

An encoder sees the whole sequence, so "predict the next token" would be trivial; instead a random
15% of the tokens are *chosen*, and the model predicts the original token at each chosen position
from the corrupted sequence. Of the chosen tokens

* 80% are replaced by ``[MASK]``,
* 10% by a random token,
* 10% are left unchanged,

so that the model cannot learn that only ``[MASK]`` positions matter (``[MASK]`` never occurs at
fine-tuning time) and must keep a good representation of every token. The loss is the mean
cross-entropy over the chosen positions only; the labels hold the original id there and
``IGNORE_INDEX`` (-100) everywhere else:

$$ \mathcal{L}_\text{MLM} = -\frac{1}{|M|} \sum_{i \in M} \log p_\theta(x_i \mid \tilde x) $$

Special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]`` itself) are never chosen.

**Whole-word masking** (the later BERT release): WordPiece splits rare words into pieces
(``"un", "##aff", "##able"``), and hiding one piece of a word while showing the others makes the
task too easy. With a per-token ``continuation`` mask (True on ``##`` pieces,
:func:`wordpiece_continuation_ids`), the 15% draw is made over *words* (their first piece), and
every piece of a chosen word is chosen; the 80/10/10 split stays per token, as in Google's
release.

**Relation to transformers.** :class:`TokenMasker` draws exactly as
``DataCollatorForLanguageModeling.torch_mask_tokens`` (``mlm_probability=0.15``,
``mask_replace_prob=0.8``, ``random_replace_prob=0.1``): a Bernoulli draw per token (so the
number chosen varies around 15%, unlike the original ``create_pretraining_data.py``, which picks
exactly ``min(max_predictions_per_seq, round(0.15 n))``), then one Bernoulli for ``[MASK]``, one
for "random" among the rest, one ``randint`` of replacement tokens, all from the same generator,
in that order. With ``random_excludes_special=False`` the
output equals the collator's bit for bit for the same generator state (tested). Two differences:

* by default, random replacements are drawn uniformly from the non-special ids (the collator
  draws from the whole vocabulary, so it can insert ``[CLS]`` or ``[PAD]`` mid-sentence); the
  positions and the ``[MASK]`` choices are still the collator's;
* with whole-word masking the collator (5.x) replaces every chosen token by ``[MASK]``; here the
  80/10/10 split applies unless ``mask_replace_prob=1``. Words are given by ``continuation``
  instead of the collator's character offsets; with ``mask_replace_prob=1`` the two agree.

Chapter 6 (Model families: the encoder) and chapter 8 (Training).
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch

from groundwork.checks import in_range, positive_int
from groundwork.errors import ConfigError, DataError

__all__ = [
    "MLM_PROBABILITY",
    "TokenMasker",
    "mask_tokens",
    "wordpiece_continuation_ids",
]

MLM_PROBABILITY = 0.15
"""BERT's fraction of tokens chosen for prediction."""

_IGNORE_INDEX = -100  # = groundwork.train.objectives.IGNORE_INDEX (not imported: no cycle)


def wordpiece_continuation_ids(vocab: Mapping[str, int], prefix: str = "##") -> frozenset[int]:
    """Ids of the pieces that continue a word (``##ing``), for whole-word masking.

    >>> sorted(wordpiece_continuation_ids({"[CLS]": 0, "un": 1, "##aff": 2, "##able": 3}))
    [2, 3]
    """
    return frozenset(i for t, i in vocab.items() if t.startswith(prefix) and len(t) > len(prefix))


# --8<-- [start:masker]
@dataclass(frozen=True)
class TokenMasker:
    """BERT's masking of a batch of token ids (see the module docstring).

    Args:
        mask_id: Id of ``[MASK]``.
        vocab_size: Size of the vocabulary (random replacements are below it).
        special_ids: Ids never chosen and never inserted: ``[CLS]``, ``[SEP]``, ``[PAD]``, ...
            (``mask_id`` is always among them).
        mlm_probability: Fraction of the maskable tokens (or words) chosen, in (0, 1).
        mask_replace_prob: Fraction of the chosen tokens replaced by ``[MASK]``.
        random_replace_prob: Fraction replaced by a random token (the rest are kept).
        random_excludes_special: Draw random tokens from the non-special ids only (True), or
            from the whole vocabulary as transformers does (False).

    Example:
        >>> masker = TokenMasker(mask_id=4, vocab_size=100, special_ids={0, 1, 2, 3})
        >>> ids = torch.tensor([[2, 17, 23, 42, 3, 0]])  # [CLS] ... [SEP] [PAD]
        >>> inputs, labels = masker(ids, torch.Generator().manual_seed(3))
        >>> inputs.tolist()  # 17 became [MASK], 42 a random token
        [[2, 4, 23, 84, 3, 0]]
        >>> labels.tolist()
        [[-100, 17, -100, 42, -100, -100]]
    """

    mask_id: int
    vocab_size: int
    special_ids: Collection[int] = ()
    mlm_probability: float = MLM_PROBABILITY
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    random_excludes_special: bool = True
    _special: torch.Tensor = field(init=False, repr=False, compare=False)
    _random_ids: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive_int("vocab_size", self.vocab_size)
        if not 0 <= self.mask_id < self.vocab_size:
            raise ConfigError(
                f"mask_id {self.mask_id} is outside the vocabulary [0, {self.vocab_size})"
            )
        p = self.mlm_probability
        in_range("mlm_probability", p, 0.0, 1.0, high_inclusive=False)
        if p == 0:
            raise ConfigError("mlm_probability must be in (0, 1), got 0")
        in_range("mask_replace_prob", self.mask_replace_prob, 0.0, 1.0)
        in_range("random_replace_prob", self.random_replace_prob, 0.0, 1.0)
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ConfigError(
                "mask_replace_prob + random_replace_prob must be at most 1, got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )
        special = sorted({int(i) for i in self.special_ids} | {self.mask_id})
        if special[0] < 0 or special[-1] >= self.vocab_size:
            raise ConfigError(f"special ids {special} must lie in [0, {self.vocab_size})")
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[special] = False
        random_ids = keep.nonzero().squeeze(1)  # (V - |special|,) ids a random replacement can be
        if self.random_excludes_special and self.random_replace_prob > 0 and not len(random_ids):
            raise ConfigError("every id is special: there is no token to use as a random one")
        object.__setattr__(self, "_special", torch.tensor(special, dtype=torch.long))
        object.__setattr__(self, "_random_ids", random_ids)

    def maskable(
        self, input_ids: torch.Tensor, special_tokens_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, T)`` bool: the tokens that may be chosen (not special, not in the mask)."""
        ok = ~torch.isin(input_ids, self._special.to(input_ids.device))
        if special_tokens_mask is not None:
            ok &= ~special_tokens_mask.bool()
        return ok

    def __call__(
        self,
        input_ids: torch.Tensor,
        generator: torch.Generator,
        *,
        special_tokens_mask: torch.Tensor | None = None,
        continuation: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask a batch.

        Args:
            input_ids: ``(B, T)`` token ids (CPU, like ``generator``).
            generator: The only source of randomness.
            special_tokens_mask: ``(B, T)`` True where a token must not be chosen (padding, or
                anything else), on top of ``special_ids``.
            continuation: ``(B, T)`` True on the pieces that continue a word, for whole-word
                masking (None: every token is a word of its own).

        Returns:
            ``inputs``: ``(B, T)`` the corrupted ids; ``labels``: ``(B, T)`` the original id at
            the chosen positions and -100 elsewhere.

        Raises:
            DataError: No token of the batch can be masked, or an id is outside the vocabulary.
        """
        if input_ids.dim() != 2:
            raise DataError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size
        ):
            raise DataError(f"input_ids must lie in [0, {self.vocab_size}) (the vocabulary)")
        maskable = self.maskable(input_ids, special_tokens_mask)  # (B, T)
        if not bool(maskable.any()):
            raise DataError(
                "no token of the batch can be masked: every one is special or padding "
                f"(special ids {self._special.tolist()})"
            )
        candidates = maskable if continuation is None else _word_starts(maskable, continuation)
        # 1. choose mlm_probability of the candidates (tokens, or words' first pieces)
        probability = torch.full(input_ids.shape, self.mlm_probability)  # (B, T) float32
        probability.masked_fill_(~candidates, 0.0)
        chosen = torch.bernoulli(probability, generator=generator).bool()  # (B, T)
        if continuation is not None:
            chosen = _whole_words(chosen, candidates, maskable)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, _IGNORE_INDEX))
        # 2. of the chosen tokens, mask_replace_prob become [MASK]
        inputs = input_ids.clone()
        to_mask = torch.full(input_ids.shape, self.mask_replace_prob)
        replaced = torch.bernoulli(to_mask, generator=generator).bool() & chosen
        inputs[replaced] = self.mask_id
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        # 3. of the others, random_replace_prob / (1 - mask_replace_prob) become a random token
        scaled = self.random_replace_prob / (1 - self.mask_replace_prob)
        to_random = torch.full(input_ids.shape, scaled)
        randomized = torch.bernoulli(to_random, generator=generator).bool() & chosen & ~replaced
        if self.random_excludes_special:
            pick = torch.randint(len(self._random_ids), input_ids.shape, generator=generator)
            words = self._random_ids[pick]  # (B, T) uniform over the non-special ids
        else:
            words = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        inputs[randomized] = words[randomized]
        return inputs, labels


# --8<-- [end:masker]


def _word_starts(maskable: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` True on the first piece of each maskable word: a maskable token that is not
    a continuation of a maskable token before it."""
    if continuation.shape != maskable.shape:
        raise DataError(
            f"continuation must have the shape of input_ids {tuple(maskable.shape)}, "
            f"got {tuple(continuation.shape)}"
        )
    prev = torch.zeros_like(maskable)
    prev[:, 1:] = maskable[:, :-1]
    return maskable & ~(continuation.bool() & prev)


def _whole_words(
    chosen_starts: torch.Tensor, starts: torch.Tensor, maskable: torch.Tensor
) -> torch.Tensor:
    """Spread the choice of a word's first piece over all its pieces."""
    B, T = starts.shape
    word = starts.long().cumsum(1)  # (B, T) word number within the row, from 1
    flat = word + (T + 1) * torch.arange(B)[:, None]  # (B, T) a number unique in the batch
    picked = torch.zeros(B * (T + 1), dtype=torch.bool)
    picked[flat[chosen_starts]] = True
    return picked[flat] & maskable


def mask_tokens(
    input_ids: torch.Tensor,
    generator: torch.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Collection[int] = (),
    mlm_probability: float = MLM_PROBABILITY,
    special_tokens_mask: torch.Tensor | None = None,
    continuation: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 15% / 80-10-10 masking of ``(B, T)`` ids: ``(inputs, labels)`` (a one-off
    :class:`TokenMasker`)."""
    masker = TokenMasker(
        mask_id=mask_id,
        vocab_size=vocab_size,
        special_ids=special_ids,
        mlm_probability=mlm_probability,
    )
    return masker(
        input_ids,
        generator,
        special_tokens_mask=special_tokens_mask,
        continuation=continuation,
    )
