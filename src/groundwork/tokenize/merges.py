"""Learning merges: the training algorithm shared by byte-pair encoding and WordPiece.

:func:`learn_merges` is BPE training (Sennrich et al. 2016) with incremental pair statistics:
unique words with their counts, pair counts updated only for the words a merge touches, and a
max-heap with lazy invalidation to find the best pair. Ties (equal counts) go to the pair with the
smallest ``(left id, right id)``, exactly like the ``tokenizers`` library's ``BpeTrainer``, so our
merges equal its merges (tested). :class:`~groundwork.tokenize.bpe.ByteLevelBPE` runs it on
bytes; :class:`~groundwork.tokenize.wordpiece.WordPiece` on characters with a ``##`` prefix on
every non-initial one, like ``tokenizers``' ``WordPieceTrainer``.

References:
    Sennrich, Haddow, Birch (2016), "Neural Machine Translation of Rare Words with Subword Units".

Chapter: ``docs/chapters/02-tokenization.md``.
"""

import heapq
import itertools
from collections import defaultdict

from tqdm import tqdm


# --8<-- [start:train]
def learn_merges(
    words: list[list[int]],
    counts: list[int],
    id_to_token: list[str],
    vocab_size: int,
    *,
    min_frequency: int = 0,
    continuing_subword_prefix: str | None = None,
    show_progress: bool = False,
) -> list[tuple[int, int]]:
    """Learn BPE merges from unique words (as lists of symbol ids) and their counts.

    Each step merges the most frequent adjacent pair ``(a, b)`` into a new symbol ``ab``
    everywhere, until the vocabulary holds ``vocab_size`` entries or no pair occurs at least
    ``min_frequency`` times. Equal counts go to the smallest ``(a, b)`` (ids compared as
    tuples), as in ``tokenizers``' ``BpeTrainer``.

    Rather than recounting the corpus after every merge (O(merges x corpus)), we keep

    * ``pair_counts[(a, b)]``: how often the pair occurs, weighted by word counts;
    * a max-heap of ``(count, pair, word positions)`` entries. When an entry is popped whose count
      is stale (an earlier merge changed it), it is pushed back with the fresh count ("lazy
      invalidation"); the word positions travel with the entry, so a merge visits only the
      words that contain the pair.

    Merging ``(a, b)`` in ``... x a b y ...`` removes the pairs ``(x, a)`` and ``(b, y)`` and
    creates ``(x, ab)`` and ``(ab, y)``: only those counts change, and only new pairs (those with
    ``ab``) need new heap entries.

    Args:
        words: the unique words, each a list of symbol ids; merged in place.
        counts: how often each word occurs.
        id_to_token: the vocabulary so far (specials and alphabet); new tokens are appended.
        vocab_size: stop when the vocabulary has this many entries.
        min_frequency: stop when the best pair occurs fewer times than this.
        continuing_subword_prefix: a prefix such as ``"##"`` on non-initial symbols, dropped
            from the right part when two symbols are joined (WordPiece-style training).
        show_progress: show a tqdm progress bar.

    Returns:
        The merges as ``(left id, right id)`` pairs in the order learned (their rank).

    Example:
        >>> vocab = ["a", "b", "c"]
        >>> learn_merges([[0, 1, 2], [0, 1]], [1, 2], vocab, vocab_size=5)
        [(0, 1), (3, 2)]
        >>> vocab
        ['a', 'b', 'c', 'ab', 'abc']
    """
    token_to_id = {t: i for i, t in enumerate(id_to_token)}
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in itertools.pairwise(word):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    # Heap entries: (-count, pair, tiebreak, positions); heapq is a min-heap, hence -count.
    heap: list[tuple[int, tuple[int, int], int, set[int]]] = []
    serial = 0
    for pair, positions in where.items():
        heap.append((-pair_counts[pair], pair, serial, positions))
        serial += 1
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    bar = tqdm(total=vocab_size - len(id_to_token), desc="BPE merges", disable=not show_progress)
    while len(id_to_token) < vocab_size and heap:
        neg_count, pair, _, positions = heapq.heappop(heap)
        count = pair_counts[pair]
        if -neg_count != count:  # stale entry: push back with the current count
            heapq.heappush(heap, (-count, pair, serial, positions))
            serial += 1
            continue
        if count < 1 or count < min_frequency:
            break
        a, b = pair
        right = id_to_token[b]
        if continuing_subword_prefix and right.startswith(continuing_subword_prefix):
            right = right[len(continuing_subword_prefix) :]
        new_token = id_to_token[a] + right
        new = token_to_id.get(new_token)
        if new is None:
            new = token_to_id[new_token] = len(id_to_token)
            id_to_token.append(new_token)
            bar.update(1)
        merges.append(pair)

        # Replace a b by new in every word that holds the pair; update the neighbours' counts.
        new_where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for i in positions:
            word = words[i]
            if a not in word:
                continue
            c = counts[i]
            out: list[int] = []
            j, n = 0, len(word)
            while j < n:
                if word[j] == a and j + 1 < n and word[j + 1] == b:
                    if out:  # (x, a) -> (x, ab)
                        x = out[-1]
                        pair_counts[(x, a)] -= c
                        pair_counts[(x, new)] += c
                        new_where[(x, new)].add(i)
                    if j + 2 < n:  # (b, y) -> (ab, y)
                        y = word[j + 2]
                        pair_counts[(b, y)] -= c
                        pair_counts[(new, y)] += c
                        new_where[(new, y)].add(i)
                    out.append(new)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            words[i] = out
        for new_pair, new_positions in new_where.items():
            if pair_counts[new_pair] > 0:
                heapq.heappush(heap, (-pair_counts[new_pair], new_pair, serial, new_positions))
                serial += 1
    bar.close()
    return merges


# --8<-- [end:train]
