"""Next-sentence prediction pairs: the 50/50 rate, a random B always from another document,
packing and token types, longest-first truncation, determinism, and the error paths."""

import math
from collections import Counter

import pytest
import torch

from groundwork.errors import ConfigError, DataError
from groundwork.train import (
    IS_NEXT,
    NOT_NEXT,
    SentencePairs,
    chunk_segments,
    pack_pair,
    truncate_pair,
)


def documents(n_docs: int = 8, seed: int = 0) -> list[list[list[int]]]:
    """Document ``d``'s segment ``i`` is ``[1000 d + 10 i, 1000 d + 10 i + 1, ...]``: every
    token says where it comes from."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for d in range(n_docs):
        n_segments = int(torch.randint(1, 6, (1,), generator=g))
        lengths = torch.randint(1, 8, (n_segments,), generator=g).tolist()
        docs.append([[1000 * d + 10 * i + k for k in range(n)] for i, n in enumerate(lengths)])
    return docs


def where(segment: list[int]) -> tuple[int, int]:
    return segment[0] // 1000, segment[0] % 1000 // 10


def test_half_are_next_and_random_b_comes_from_another_document() -> None:
    docs = documents()
    pairs = SentencePairs(docs)
    g = torch.Generator().manual_seed(0)
    n, is_next = 20_000, 0
    b_docs: Counter[tuple[int, int]] = Counter()
    for _ in range(n):
        p = pairs.sample(g)
        (da, ia), (db, ib) = where(list(p.a)), where(list(p.b))
        assert (da, ia) == (p.doc, ia) and ia + 1 < len(docs[da])  # A has a successor
        if p.label == IS_NEXT:
            is_next += 1
            assert (db, ib) == (da, ia + 1)
        else:
            assert p.label == NOT_NEXT and db != da and db == p.b_doc
            b_docs[(da, db)] += 1
    assert abs(is_next - n / 2) <= 5 * math.sqrt(n / 4)
    # a random B's document is uniform over the other documents (given A's)
    for da in {d for d, _ in b_docs}:
        row = [b_docs[(da, db)] for db in range(len(docs)) if db != da]
        total = sum(row)
        expected = total / (len(docs) - 1)
        p = 1 / (len(docs) - 1)
        assert all(abs(c - expected) <= 5 * math.sqrt(total * p * (1 - p)) for c in row)


def test_every_segment_with_a_successor_can_be_a() -> None:
    docs = [[[1], [2], [3]], [[4]], [[5], [6]]]
    pairs = SentencePairs(docs)
    assert len(pairs) == 3
    g = torch.Generator().manual_seed(0)
    firsts = {pairs.sample(g).a[0] for _ in range(200)}
    assert firsts == {1, 2, 5}


def test_pack_pair_token_types() -> None:
    ids, types = pack_pair([5, 6, 7], [8, 9], cls_id=2, sep_id=3, max_len=32)
    assert ids == [2, 5, 6, 7, 3, 8, 9, 3]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]


def test_truncation_is_longest_first() -> None:
    a, b = list(range(10)), list(range(100, 104))
    ta, tb = truncate_pair(a, b, 9)  # a loses 5 tokens from the back
    assert ta == list(range(5)) and tb == b
    ta, tb = truncate_pair(a, b, 6)  # a down to 4, then a tie each time: b, a
    assert (len(ta), len(tb)) == (3, 3)
    assert truncate_pair([1], [2], 1) == ([1], [])
    ids, types = pack_pair(a, b, cls_id=2, sep_id=3, max_len=12)
    assert len(ids) == 12 and ids[:7] == [2, 0, 1, 2, 3, 4, 3] and types.count(1) == 5


def test_random_truncation_cuts_either_end() -> None:
    g = torch.Generator().manual_seed(0)
    a = list(range(20))
    fronts = Counter()
    for _ in range(2000):
        ta, tb = truncate_pair(a, [100], 11, g)  # a loses 10 tokens, each from a random end
        assert len(ta) == 10 and tb == [100] and ta == list(range(ta[0], ta[0] + 10))
        fronts[ta[0]] += 1
    # the number cut from the front is Binomial(10, 1/2)
    assert abs(sum(k * c for k, c in fronts.items()) / 2000 - 5) < 5 * math.sqrt(2.5 / 2000)


def test_deterministic_given_the_generator() -> None:
    pairs = SentencePairs(documents())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [pairs.sample(g1) for _ in range(50)] == [pairs.sample(g2) for _ in range(50)]
    g3 = torch.Generator().manual_seed(4)
    assert [pairs.sample(g1) for _ in range(50)] != [pairs.sample(g3) for _ in range(50)]


def test_chunk_segments() -> None:
    lines = [[1, 2], [3], [4, 5, 6, 7], [], [8], [9]]
    assert chunk_segments(lines, 3) == [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert chunk_segments(lines, 100) == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]


def test_errors() -> None:
    with pytest.raises(DataError, match="two documents"):
        SentencePairs([[[1], [2]], [[]]])
    with pytest.raises(DataError, match="two segments"):
        SentencePairs([[[1]], [[2]]])
    with pytest.raises(ConfigError, match="max_len"):
        pack_pair([1], [2], cls_id=2, sep_id=3, max_len=4)
