"""BERT's masked-LM masking: the 15% / 80-10-10 rates within binomial bounds, special tokens and
padding never chosen, labels, whole-word masking, determinism, bit-for-bit agreement with
transformers' DataCollatorForLanguageModeling, and the error paths."""

import math

import pytest
import torch

from groundwork.errors import ConfigError, DataError
from groundwork.train import IGNORE_INDEX, TokenMasker, mask_tokens, wordpiece_continuation_ids

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = {PAD, UNK, CLS, SEP, MASK}
V = 1000


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Whether a Binomial(n, p) draw ``count`` is within ``sigmas`` standard deviations."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def sample_batch(b: int = 200, t: int = 256, seed: int = 0) -> torch.Tensor:
    """``[CLS] words [SEP] [PAD]...`` rows of random lengths, words in ``[5, V)``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (b, t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, n - 1] = CLS, SEP
        ids[i, n:] = PAD
    return ids


def masker(**kw: object) -> TokenMasker:
    return TokenMasker(mask_id=MASK, vocab_size=V, special_ids=SPECIAL, **kw)  # type: ignore[arg-type]


def test_rates_are_15_percent_then_80_10_10() -> None:
    ids = sample_batch()
    inputs, labels = masker()(ids, torch.Generator().manual_seed(1))
    maskable = ~torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    chosen = labels != IGNORE_INDEX
    n, k = int(maskable.sum()), int(chosen.sum())
    assert within(k, n, 0.15)
    masked = int((inputs[chosen] == MASK).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    randomized = k - masked - kept
    # a random replacement equals the original token with probability 1 / (V - 5)
    assert within(masked, k, 0.8)
    assert within(kept, k, 0.1 + 0.1 / (V - len(SPECIAL)))
    assert within(randomized, k, 0.1 * (1 - 1 / (V - len(SPECIAL))))


def test_labels_specials_and_unchosen_positions() -> None:
    ids = sample_batch(50, 64)
    inputs, labels = masker()(ids, torch.Generator().manual_seed(2))
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])  # the original id where chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    assert not chosen[special].any()  # [CLS], [SEP], [PAD] never chosen
    # random replacements are never special tokens (and [MASK] only where replaced by it)
    assert not torch.isin(inputs[chosen & (inputs != MASK)], torch.tensor(sorted(SPECIAL))).any()


def test_special_tokens_mask_blocks_positions() -> None:
    ids = sample_batch(20, 64)
    block = torch.zeros_like(ids, dtype=torch.bool)
    block[:, :32] = True
    _, labels = masker(mlm_probability=0.9)(
        ids, torch.Generator().manual_seed(0), special_tokens_mask=block
    )
    assert (labels[:, :32] == IGNORE_INDEX).all() and (labels[:, 32:] != IGNORE_INDEX).any()


def test_random_replacements_are_uniform_over_non_special_ids() -> None:
    vocab, special = 20, {0, 1, 2, 3, 4}
    m = TokenMasker(
        mask_id=4,
        vocab_size=vocab,
        special_ids=special,
        mlm_probability=0.5,
        mask_replace_prob=0.0,
        random_replace_prob=1.0,
    )
    ids = torch.full((400, 100), 7)
    inputs, labels = m(ids, torch.Generator().manual_seed(0))
    drawn = inputs[labels != IGNORE_INDEX]
    counts = torch.bincount(drawn, minlength=vocab).double()
    assert counts[:5].sum() == 0
    expected = drawn.numel() / 15
    chi2 = float(((counts[5:] - expected) ** 2 / expected).sum())
    assert chi2 < 60  # 14 degrees of freedom: P(chi2 > 60) < 1e-6


def test_whole_word_masking_masks_all_pieces_or_none() -> None:
    g = torch.Generator().manual_seed(0)
    b, t = 100, 128
    ids = torch.randint(5, V, (b, t), generator=g)
    continuation = torch.rand(b, t, generator=g) < 0.4  # ~40% of the pieces continue a word
    ids[:, 0], ids[:, -1] = CLS, SEP
    continuation[:, 0] = False
    continuation[:, 1] = True  # a "##" piece right after [CLS] starts a word of its own
    _, labels = masker()(ids, torch.Generator().manual_seed(3), continuation=continuation)
    chosen = labels != IGNORE_INDEX
    words, n_words = 0, 0
    for i in range(b):
        start = None
        for j in range(1, t):
            if ids[i, j] == SEP or not continuation[i, j] or j == 1:
                if start is not None:  # close the word [start, j)
                    piece_chosen = chosen[i, start:j]
                    assert piece_chosen.all() or not piece_chosen.any()
                    words += int(piece_chosen[0])
                    n_words += 1
                start = j if ids[i, j] != SEP else None
    assert within(words, n_words, 0.15)  # 15% of the words, not of the tokens
    assert not chosen[:, 0].any() and not chosen[:, -1].any()


def test_wordpiece_continuation_ids() -> None:
    vocab = {"[PAD]": 0, "un": 5, "##aff": 6, "##able": 7, "##": 8, "#": 9}
    assert wordpiece_continuation_ids(vocab) == {6, 7}


def test_deterministic_given_the_generator() -> None:
    ids = sample_batch(10, 64)
    a = masker()(ids, torch.Generator().manual_seed(5))
    b = masker()(ids, torch.Generator().manual_seed(5))
    c = masker()(ids, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    # the functional form is the same masker
    d = mask_tokens(
        ids, torch.Generator().manual_seed(5), mask_id=MASK, vocab_size=V, special_ids=SPECIAL
    )
    assert all(torch.equal(x, y) for x, y in zip(a, d, strict=True))


class _Tokenizer:
    """The part of a transformers tokenizer that ``torch_mask_tokens`` reads."""

    mask_token = "[MASK]"
    is_fast = True

    def __len__(self) -> int:
        return V

    def convert_tokens_to_ids(self, token: str) -> int:
        return MASK


def test_equals_transformers_collator_bit_for_bit() -> None:
    transformers = pytest.importorskip("transformers")
    collator = transformers.DataCollatorForLanguageModeling(_Tokenizer(), mlm_probability=0.15)
    ids = sample_batch(30, 64)
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL))).long()
    collator.generator = torch.Generator().manual_seed(11)
    hf_inputs, hf_labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
    ours = masker(random_excludes_special=False)
    inputs, labels = ours(ids, torch.Generator().manual_seed(11))
    assert torch.equal(inputs, hf_inputs) and torch.equal(labels, hf_labels)
    # excluding specials from random replacements changes only the random tokens' values
    inputs2, labels2 = masker()(ids, torch.Generator().manual_seed(11))
    assert torch.equal(labels2, hf_labels)
    assert torch.equal(inputs2 == MASK, hf_inputs == MASK)


def test_whole_word_equals_transformers_collator() -> None:
    transformers = pytest.importorskip("transformers")
    with pytest.warns(UserWarning):  # it turns random replacements off for whole words
        collator = transformers.DataCollatorForLanguageModeling(
            _Tokenizer(), mlm_probability=0.15, whole_word_mask=True
        )
    g = torch.Generator().manual_seed(0)
    b, t = 20, 64
    ids = torch.randint(5, V, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    continuation = torch.rand(b, t, generator=g) < 0.4
    continuation[:, :2] = False
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    # character offsets: a continuation piece starts where the previous one ended
    offsets = torch.zeros(b, t, 2, dtype=torch.long)
    for i in range(b):
        end = 0
        for j in range(t):
            if special[i, j]:
                continue
            start = end if continuation[i, j] else end + 1
            offsets[i, j] = torch.tensor([start, start + 3])
            end = start + 3
    collator.generator = torch.Generator().manual_seed(4)
    hf_inputs, hf_labels = collator.torch_mask_tokens(
        ids.clone(), special_tokens_mask=special.long(), offset_mapping=offsets
    )
    ours = masker(mask_replace_prob=1.0, random_replace_prob=0.0)
    inputs, labels = ours(ids, torch.Generator().manual_seed(4), continuation=continuation)
    assert torch.equal(labels, hf_labels) and torch.equal(inputs, hf_inputs)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_probability_outside_open_interval(p: float) -> None:
    with pytest.raises(ConfigError, match="mlm_probability"):
        masker(mlm_probability=p)


def test_bad_configurations() -> None:
    with pytest.raises(ConfigError, match="at most 1"):
        masker(mask_replace_prob=0.8, random_replace_prob=0.3)
    with pytest.raises(ConfigError, match="mask_id"):
        TokenMasker(mask_id=V, vocab_size=V)
    with pytest.raises(ConfigError, match="special ids"):
        TokenMasker(mask_id=4, vocab_size=10, special_ids={12})
    with pytest.raises(ConfigError, match="every id is special"):
        TokenMasker(mask_id=1, vocab_size=2, special_ids={0})


def test_no_maskable_tokens_is_a_data_error() -> None:
    ids = torch.tensor([[CLS, SEP, PAD, PAD]])
    with pytest.raises(DataError, match="no token of the batch can be masked"):
        masker()(ids, torch.Generator())
    with pytest.raises(DataError, match="vocabulary"):
        masker()(torch.tensor([[CLS, V, SEP]]), torch.Generator())
    with pytest.raises(DataError, match=r"\(B, T\)"):
        masker()(torch.tensor([7, 8]), torch.Generator())
