"""The two cheap replacements for word2vec's full softmax, with hand-derived gradients.

Predicting a word with a softmax over the whole vocabulary costs O(V) per example. Mikolov et al.
replace it by

- **negative sampling** (Mikolov, Sutskever, Chen, Corrado, Dean 2013, "Distributed
  Representations of Words and Phrases and their Compositionality"): tell the true word from ``k``
  noise words drawn from the unigram distribution raised to 3/4 (:func:`noise_distribution`),
  ``k + 1`` sigmoids per example; or
- **hierarchical softmax** (Mikolov, Chen, Corrado, Dean 2013, "Efficient Estimation of Word
  Representations in Vector Space"): one sigmoid per inner node on the path from the root of a
  Huffman tree to the word (:func:`huffman_tree`), about log2 V per example.

The gradients of both losses are derived by hand (:func:`negative_sampling_grads`,
:func:`hierarchical_softmax_grads`; the tests compare them with autograd); the model in
:mod:`groundwork.models.word2vec` applies them as sparse SGD updates.

Docs: chapter 3, "Word vectors and neural basics".
"""

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from groundwork.errors import EmptyCorpusError

# --- negative sampling --------------------------------------------------------------------------


# --8<-- [start:noise]
def noise_distribution(counts: Sequence[int], exponent: float = 0.75) -> torch.Tensor:
    """The negative-sampling noise distribution P_n(w) = count(w)^0.75 / sum_v count(v)^0.75.

    Raising counts to 3/4 flattens the unigram distribution: rare words are drawn more often than
    their frequency. Counts 16 and 1 give 8 : 1 instead of 16 : 1.

    >>> noise_distribution([16, 1]).tolist()
    [0.8888888888888888, 0.1111111111111111]
    """
    p = torch.tensor(counts, dtype=torch.float64) ** exponent
    return p / p.sum()


# --8<-- [end:noise]


# --- Huffman tree -------------------------------------------------------------------------------


@dataclass
class HuffmanTree:
    """The binary tree of hierarchical softmax.

    Attributes:
        codes: ``codes[w]`` is the path from the root to leaf ``w``: 0 = left, 1 = right.
        points: ``points[w]`` are the inner nodes on that path (ids ``0..V-2``, root = ``V-2``);
            ``points[w][j]`` is the node at which the ``j``-th bit ``codes[w][j]`` is decided.
    """

    codes: list[list[int]]
    points: list[list[int]]


# --8<-- [start:huffman]
def huffman_tree(counts: Sequence[int]) -> HuffmanTree:
    """Build the Huffman tree over word counts (Mikolov et al. 2013a, as in word2vec.c).

    Repeatedly merge the two least frequent nodes into a new inner node; the first popped
    becomes the left child (bit 0), the second the right child (bit 1). Inner node ``k`` (the
    ``k``-th merge) has id ``k``, so the root is ``V - 2``. Frequent words end up near the root:
    short codes, few sigmoids per prediction (about log2 V on average).

    Worked example, ids 0..3 = a, b, c, d with counts 4, 2, 1, 1 (ties: the older node first):
    merge c + d -> inner node 0 (count 2); merge b (2) + node 0 (2) -> node 1 (count 4); merge
    a (4) + node 1 (4) -> node 2, the root. Codes: a = 0, b = 10, c = 110, d = 111.

    >>> huffman_tree([4, 2, 1, 1]).codes
    [[0], [1, 0], [1, 1, 0], [1, 1, 1]]
    """
    n = len(counts)
    if n == 0:
        raise EmptyCorpusError("cannot build a Huffman tree over an empty vocabulary")
    if n == 1:  # one word: a single inner node with the word on the left
        return HuffmanTree(codes=[[0]], points=[[0]])
    # heap of (count, order, node): leaves are 0..n-1, inner nodes n..2n-2; order breaks ties
    heap = [(c, i, i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    bit = [0] * (2 * n - 1)
    for k in range(n - 1):
        c1, _, left = heapq.heappop(heap)
        c2, _, right = heapq.heappop(heap)
        node = n + k
        parent[left], bit[left] = node, 0
        parent[right], bit[right] = node, 1
        heapq.heappush(heap, (c1 + c2, node, node))
    root = 2 * n - 2
    codes, points = [], []
    for w in range(n):
        code, path, node = [], [], w
        while node != root:  # walk up, then reverse to read root -> leaf
            code.append(bit[node])
            node = parent[node]
            path.append(node - n)  # inner node ids start at 0
        codes.append(code[::-1])
        points.append(path[::-1])
    return HuffmanTree(codes=codes, points=points)


# --8<-- [end:huffman]


# --- the two losses and their hand-derived gradients ---------------------------------------------


# --8<-- [start:ns_grads]
def negative_sampling_loss(
    h: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative-sampling loss summed over a batch.

    L = -log sigma(u_o . h) - sum_k log sigma(-u_k . h), with h the input vector, u_o the output
    vector of the true word and u_k those of k noise words.

    Args:
        h: Input vectors, ``(B, D)``.
        u_pos: Output vectors of the true words, ``(B, D)``.
        u_neg: Output vectors of the noise words, ``(B, K, D)``.
        valid: Optional ``(B, K)`` 0/1 weights of the noise terms (0 skips a noise word).
    """
    pos = (u_pos * h).sum(-1)  # (B,)
    neg = torch.einsum("bkd,bd->bk", u_neg, h)  # (B, K)
    neg_terms = torch.nn.functional.logsigmoid(-neg)  # (B, K)
    if valid is not None:
        neg_terms = neg_terms * valid
    return -(torch.nn.functional.logsigmoid(pos).sum() + neg_terms.sum())


def negative_sampling_grads(
    h: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`negative_sampling_loss`, derived by hand.

    With d/dx log sigma(x) = 1 - sigma(x) and d/dx log sigma(-x) = -sigma(x):

        dL/du_o = (sigma(u_o.h) - 1) h
        dL/du_k = sigma(u_k.h) h
        dL/dh   = (sigma(u_o.h) - 1) u_o + sum_k sigma(u_k.h) u_k

    i.e. with label t = 1 for the true word and 0 for noise, every output word j gets
    e_j = sigma(u_j.h) - t_j, dL/du_j = e_j h and dL/dh = sum_j e_j u_j. word2vec.c's update is
    u_j -= alpha e_j h, h -= alpha sum_j e_j u_j (its ``g = (label - f) * alpha`` is -alpha e_j).

    Returns:
        ``(dL/dh (B, D), dL/du_pos (B, D), dL/du_neg (B, K, D))``.
    """
    e_pos = torch.sigmoid((u_pos * h).sum(-1)) - 1  # (B,)
    e_neg = torch.sigmoid(torch.bmm(u_neg, h[:, :, None]).squeeze(2))  # (B, K)
    if valid is not None:
        e_neg = e_neg * valid
    grad_h = e_pos[:, None] * u_pos + torch.bmm(e_neg[:, None, :], u_neg).squeeze(1)  # (B, D)
    return grad_h, e_pos[:, None] * h, e_neg[:, :, None] * h[:, None, :]


# --8<-- [end:ns_grads]


# --8<-- [start:hs_grads]
def hierarchical_softmax_loss(
    h: torch.Tensor, nodes: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Hierarchical-softmax loss summed over a batch.

    P(w | h) = prod_j sigma((1 - 2 c_j) n_j . h) over the inner nodes n_j on the path to w with
    bits c_j (bit 0: go left with probability sigma(n.h); bit 1: right, sigma(-n.h)), so

        L = -sum_j log sigma((1 - 2 c_j) n_j . h).

    Args:
        h: Input vectors, ``(B, D)``.
        nodes: Inner-node vectors on each path, ``(B, L, D)`` (paths padded to length L).
        codes: The bits, ``(B, L)`` (float 0/1).
        mask: 1 where the path has a node, 0 in the padding, ``(B, L)``.
    """
    x = torch.einsum("bld,bd->bl", nodes, h)  # (B, L)
    return -(torch.nn.functional.logsigmoid((1 - 2 * codes) * x) * mask).sum()


def hierarchical_softmax_grads(
    h: torch.Tensor, nodes: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`hierarchical_softmax_loss`, derived by hand.

    Each node is a binary logistic regression with target t_j = 1 - c_j ("go left"):
    -log sigma(s x) with s = 1 - 2c has derivative -s (1 - sigma(s x)) = sigma(x) - (1 - c)
    (check both bits). So with e_j = sigma(n_j.h) - (1 - c_j):

        dL/dn_j = e_j h,     dL/dh = sum_j e_j n_j.

    word2vec.c writes ``g = (1 - code - f) * alpha`` = -alpha e_j.

    Returns:
        ``(dL/dh (B, D), dL/dnodes (B, L, D))``.
    """
    x = torch.bmm(nodes, h[:, :, None]).squeeze(2)  # (B, L)
    e = (torch.sigmoid(x) - (1 - codes)) * mask  # (B, L)
    return torch.bmm(e[:, None, :], nodes).squeeze(1), e[:, :, None] * h[:, None, :]


# --8<-- [end:hs_grads]
