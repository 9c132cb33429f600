"""word2vec: hand-derived gradients vs autograd, the Huffman tree, noise and subsampling by hand,
the exact word2vec.c update, windows, a tiny training run that learns, saving, and bad input."""

import dataclasses
import doctest
import itertools
import json
import math
import random

import numpy as np
import pytest
import torch

from groundwork import runs
from groundwork.errors import CheckpointError, ConfigError, EmptyCorpusError, TrainingError
from groundwork.models import word2vec as w2v
from groundwork.models import word2vec_examples, word2vec_softmax
from groundwork.models.word2vec import (
    Word2Vec,
    Word2VecConfig,
    build_vocab,
    hierarchical_softmax_grads,
    hierarchical_softmax_loss,
    huffman_tree,
    keep_probabilities,
    learning_rate,
    negative_sampling_grads,
    negative_sampling_loss,
    noise_distribution,
    training_examples,
)
from groundwork.tokenize.words import Vocabulary


def vocab_of(words: list[str], counts: list[int]) -> Vocabulary:
    """A word2vec vocabulary: no special tokens, with counts."""
    return Vocabulary(words, counts=counts, specials=(), pattern=None)


@pytest.mark.parametrize("module", [w2v, word2vec_softmax, word2vec_examples])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_negative_sampling_gradients_equal_autograd(with_mask: bool) -> None:
    g = torch.Generator().manual_seed(0)
    B, K, D = 4, 3, 4
    h = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    u_pos = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    u_neg = torch.randn(B, K, D, generator=g, dtype=torch.float64, requires_grad=True)
    valid = (torch.rand(B, K, generator=g) > 0.3).double() if with_mask else None
    negative_sampling_loss(h, u_pos, u_neg, valid).backward()
    grad_h, grad_pos, grad_neg = negative_sampling_grads(
        h.detach(), u_pos.detach(), u_neg.detach(), valid
    )
    torch.testing.assert_close(grad_h, h.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_pos, u_pos.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_neg, u_neg.grad, rtol=1e-12, atol=1e-12)
    # and the loss itself is differentiable where autograd checks it numerically
    assert torch.autograd.gradcheck(
        lambda a, b, c: negative_sampling_loss(a, b, c, valid), (h, u_pos, u_neg)
    )


def test_hierarchical_softmax_gradients_equal_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    B, L, D = 5, 4, 6
    h = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    nodes = torch.randn(B, L, D, generator=g, dtype=torch.float64, requires_grad=True)
    codes = torch.randint(0, 2, (B, L), generator=g).double()
    mask = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    ).double()
    hierarchical_softmax_loss(h, nodes, codes, mask).backward()
    grad_h, grad_nodes = hierarchical_softmax_grads(h.detach(), nodes.detach(), codes, mask)
    torch.testing.assert_close(grad_h, h.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_nodes, nodes.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b: hierarchical_softmax_loss(a, b, codes, mask), (h, nodes)
    )


def test_hierarchical_softmax_is_a_distribution_over_the_leaves() -> None:
    """sum_w P(w | h) = 1: each inner node splits its probability between its two children."""
    counts = [50, 20, 9, 9, 5, 3, 1]
    tree = huffman_tree(counts)
    g = torch.Generator().manual_seed(2)
    nodes = torch.randn(len(counts) - 1, 3, generator=g, dtype=torch.float64)
    h = torch.randn(3, generator=g, dtype=torch.float64)
    total = 0.0
    for code, path in zip(tree.codes, tree.points, strict=True):
        p = 1.0
        for bit, node in zip(code, path, strict=True):
            x = float(nodes[node] @ h)
            p *= 1 / (1 + math.exp(-x)) if bit == 0 else 1 / (1 + math.exp(x))
        total += p
    assert total == pytest.approx(1.0, abs=1e-12)


def test_step_is_the_word2vec_c_update_for_one_example() -> None:
    """One skip-gram/hs step on one (input, target) pair, written the way word2vec.c does it:
    f = sigma(syn0[in] . syn1[p]); g = (1 - code - f) * alpha; neu1e += g syn1[p];
    syn1[p] += g syn0[in]; and at the end syn0[in] += neu1e."""
    vocab = vocab_of(["a", "b", "c", "d"], [4, 2, 1, 1])
    model = Word2Vec(vocab, Word2VecConfig(dim=3, loss="hs", min_count=1))
    g = torch.Generator().manual_seed(3)
    model.output = torch.randn(3, 3, generator=g)
    syn0, syn1 = model.input.clone().double(), model.output.clone().double()
    alpha, inp, target = 0.1, 1, 2  # predict "c" (code 1 1 0, points 2 1 0) from "b"
    neu1e = torch.zeros(3, dtype=torch.float64)
    for code, point in zip(model.tree.codes[target], model.tree.points[target], strict=True):  # type: ignore[union-attr]
        f = torch.sigmoid(syn0[inp] @ syn1[point])
        gg = (1 - code - f) * alpha
        neu1e += gg * syn1[point]
        syn1[point] += gg * syn0[inp]
    syn0[inp] += neu1e
    model._step(torch.tensor([inp]), torch.tensor([target]), alpha, torch.Generator())
    torch.testing.assert_close(model.input.double(), syn0, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.output.double(), syn1, rtol=1e-6, atol=1e-7)


def test_hs_caps_the_summed_update_of_a_node_hit_many_times() -> None:
    """100 copies of one example: each node on the path gets 100 equal updates in the batch;
    summed they would be 100 single steps, capped they are max_row_updates = 8 single steps."""
    vocab = vocab_of(["a", "b", "c", "d"], [4, 2, 1, 1])
    model = Word2Vec(vocab, Word2VecConfig(dim=3, loss="hs", min_count=1, max_row_updates=8))
    model.output = torch.randn(3, 3, generator=torch.Generator().manual_seed(4))
    before = model.output.clone()
    h = model.input[1][None, :]
    path = model.tree.points[2]  # type: ignore[union-attr]
    codes = torch.tensor([model.tree.codes[2]], dtype=torch.float32)  # type: ignore[union-attr]
    _, grad_nodes = hierarchical_softmax_grads(h, before[path][None], codes, torch.ones_like(codes))
    model._step(torch.full((100,), 1), torch.full((100,), 2), 0.01, torch.Generator())
    torch.testing.assert_close(model.output[path], before[path] - 0.01 * 8 * grad_nodes[0])


# --- Huffman tree -------------------------------------------------------------------------------


def test_huffman_worked_example() -> None:
    """Counts a=4, b=2, c=1, d=1 (ids 0..3).

    Merge 1: the two smallest are c (1) and d (1): inner node 0 = (c, d), count 2.
    Merge 2: b (2) and node 0 (2) tie on count; b is older, so b is the left child: node 1 =
    (b, node 0), count 4. Merge 3: a (4) and node 1 (4): node 2 = (a, node 1), the root.
    Reading root -> leaf: a = 0; b = 1 0; c = 1 1 0; d = 1 1 1, with inner nodes
    a: [2], b: [2, 1], c and d: [2, 1, 0].
    """
    tree = huffman_tree([4, 2, 1, 1])
    assert tree.codes == [[0], [1, 0], [1, 1, 0], [1, 1, 1]]
    assert tree.points == [[2], [2, 1], [2, 1, 0], [2, 1, 0]]


def test_huffman_codes_are_prefix_free_complete_and_shorter_for_frequent_words() -> None:
    rng = random.Random(0)
    for n in (2, 3, 17, 200):
        counts = sorted((rng.randint(1, 1000) for _ in range(n)), reverse=True)
        tree = huffman_tree(counts)
        codes = ["".join(map(str, c)) for c in tree.codes]
        assert len(set(codes)) == n
        for x, y in itertools.permutations(codes, 2):
            assert not y.startswith(x)  # prefix-free
        assert sum(2.0 ** -len(c) for c in codes) == pytest.approx(1.0)  # a full binary tree
        for i, j in itertools.combinations(range(n), 2):
            if counts[i] > counts[j]:
                assert len(codes[i]) <= len(codes[j])
        # every path starts at the root and uses valid inner-node ids
        assert all(p[0] == n - 2 and all(0 <= q < n - 1 for q in p) for p in tree.points)


def test_huffman_single_word_and_empty() -> None:
    assert huffman_tree([7]).codes == [[0]]
    with pytest.raises(EmptyCorpusError, match="empty vocabulary"):
        huffman_tree([])


# --- noise distribution, subsampling, learning rate ----------------------------------------------


def test_noise_distribution_is_count_to_the_three_quarters() -> None:
    # 81^0.75 = 27, 16^0.75 = 8, 1^0.75 = 1: probabilities 27/36, 8/36, 1/36
    p = noise_distribution([81, 16, 1])
    assert p.tolist() == pytest.approx([27 / 36, 8 / 36, 1 / 36], abs=1e-12)
    assert noise_distribution([81, 16, 1], exponent=1.0).tolist() == pytest.approx(
        [81 / 98, 16 / 98, 1 / 98]
    )


def test_noise_samples_follow_the_distribution() -> None:
    vocab = vocab_of(["a", "b", "c"], [81, 16, 1])
    model = Word2Vec(vocab, Word2VecConfig(dim=2, min_count=1))
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.searchsorted(model._noise_cdf, u), minlength=3).double()
    assert (counts / counts.sum()).tolist() == pytest.approx([27 / 36, 8 / 36, 1 / 36], abs=0.005)


def test_keep_probability_by_hand() -> None:
    """counts 1000 and 10, total 1010, t = 0.01: t * total = 10.1 counts.

    word 0: (sqrt(1000 / 10.1) + 1) * 10.1 / 1000 = (9.9504 + 1) * 0.0101 = 0.11060.
    word 1: (sqrt(10 / 10.1) + 1) * 10.1 / 10 = 2.0050 > 1, so it is always kept.
    """
    p = keep_probabilities([1000, 10], 0.01)
    assert p[0].item() == pytest.approx((math.sqrt(1000 / 10.1) + 1) * 10.1 / 1000, abs=1e-12)
    assert p[0].item() == pytest.approx(0.11060, abs=1e-5)
    assert p[1].item() == 1.0
    assert keep_probabilities([1000, 10], 0.0).tolist() == [1.0, 1.0]


def test_learning_rate_decays_linearly() -> None:
    assert learning_rate(0.025, 0.0001, 0, 1000) == 0.025
    assert learning_rate(0.025, 0.0001, 500, 1000) == pytest.approx((0.025 + 0.0001) / 2)
    assert learning_rate(0.025, 0.0001, 1000, 1000) == pytest.approx(0.0001)
    assert learning_rate(0.025, 0.0001, 2000, 1000) == 0.0001


# --- vocabulary and windows ---------------------------------------------------------------------


def test_vocab_sorted_by_count_ties_first_seen_and_min_count() -> None:
    vocab = build_vocab([["b", "a", "c", "a"], ["c", "d", "b", "e"]], min_count=2)
    assert vocab.tokens == ["b", "a", "c"] and vocab.counts == [2, 2, 2]
    assert vocab.ids(["a", "zzz", "d", "c"]) == [1, 2]  # unknown words are dropped
    assert build_vocab([["x", "y", "y"]], min_count=1, max_vocab=1).tokens == ["y"]


def test_dynamic_window_and_sentence_boundaries() -> None:
    """Skip-gram examples are (context -> centre) pairs inside each centre's shrunk window."""
    words = np.array([0, 1, 2, 3])
    raw = np.arange(4)

    def pairs(sent: list[int], reach: list[int]) -> set[tuple[int, int]]:
        out = set()
        batches = training_examples(
            words, np.array(sent), np.array(reach), raw, arch="skipgram", window=2, batch_size=2048
        )
        for inputs, targets, _ in batches:
            out |= set(zip(inputs.tolist(), targets.tolist(), strict=True))
        return out

    # one sentence; centres 0 and 2 see 2 words each side, centres 1 and 3 only 1
    assert pairs([0, 0, 0, 0], [2, 1, 2, 1]) == {
        (1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2), (3, 2), (2, 3)
    }  # fmt: skip
    # two sentences: no pair crosses the boundary between 1 and 2
    assert pairs([0, 0, 1, 1], [2, 2, 2, 2]) == {(1, 0), (0, 1), (3, 2), (2, 3)}


def test_cbow_examples_hold_the_context_of_each_centre() -> None:
    words, raw = np.array([0, 1, 2, 3]), np.arange(4)
    ((inputs, targets, _),) = training_examples(
        words,
        np.zeros(4, dtype=int),
        np.array([1, 2, 1, 2]),
        raw,
        arch="cbow",
        window=2,
        batch_size=2048,
    )
    assert targets.tolist() == [0, 1, 2, 3]
    # columns are offsets -2, -1, +1, +2; -1 marks "no word"
    assert inputs.tolist() == [[-1, -1, 1, -1], [-1, 0, 2, 3], [-1, 1, 3, -1], [1, 2, -1, -1]]


# --- training -----------------------------------------------------------------------------------


def _two_clusters(seed: int = 0) -> tuple[list[list[str]], list[str], list[str]]:
    rng = random.Random(seed)
    left = [f"l{i}" for i in range(6)]
    right = [f"r{i}" for i in range(6)]
    sentences = [
        [rng.choice(group) for _ in range(8)] for _ in range(100) for group in (left, right)
    ]
    rng.shuffle(sentences)
    return sentences, left, right


@pytest.mark.parametrize(
    ("arch", "loss"),
    [("skipgram", "negative"), ("skipgram", "hs"), ("cbow", "negative"), ("cbow", "hs")],
)
def test_tiny_training_separates_two_clusters(arch: str, loss: str) -> None:
    sentences, left, right = _two_clusters()
    config = Word2VecConfig(
        arch=arch,  # type: ignore[arg-type]
        loss=loss,  # type: ignore[arg-type]
        dim=16,
        window=3,
        min_count=1,
        sample=0,
        epochs=5,
        batch_size=64,  # a 12-word vocabulary: small batches, so few updates of a row add up
    )
    model = Word2Vec.train(sentences, config)

    def mean_sim(a: list[str], b: list[str]) -> float:
        return float(np.mean([model.similarity(x, y) for x in a for y in b if x != y]))

    within = (mean_sim(left, left) + mean_sim(right, right)) / 2
    across = mean_sim(left, right)
    assert within > across + 0.3, (within, across)
    assert model.nearest("l0", 5)[0][0] in left


def test_divergence_is_a_clear_error() -> None:
    sentences, _, _ = _two_clusters()
    config = Word2VecConfig(dim=16, min_count=1, sample=0, epochs=1, batch_size=1024, alpha=0.5)
    with pytest.raises(TrainingError, match="lower batch_size or alpha"):
        Word2Vec.train(sentences, config)


def test_training_is_reproducible_with_the_seed() -> None:
    sentences, _, _ = _two_clusters()
    cfg = Word2VecConfig(dim=8, min_count=1, epochs=1, batch_size=128)
    a, b = Word2Vec.train(sentences, cfg), Word2Vec.train(sentences, cfg)
    assert torch.equal(a.vectors, b.vectors)


# --- saving and loading -------------------------------------------------------------------------


def test_save_load_round_trip_and_text_format(tmp_path) -> None:
    sentences, _, _ = _two_clusters()
    model = Word2Vec.train(sentences, Word2VecConfig(dim=4, min_count=1, epochs=1, loss="hs"))
    model.save(tmp_path / "run")
    again = Word2Vec.load(tmp_path / "run")
    assert again.vocab == model.vocab and again.config == model.config
    assert torch.equal(again.input, model.input) and torch.equal(again.output, model.output)
    model.save_word2vec_format(tmp_path / "v.txt")
    lines = (tmp_path / "v.txt").read_text().splitlines()
    assert lines[0] == f"{len(model.vocab)} 4" and lines[1].split()[0] == model.vocab.tokens[0]


@pytest.mark.parity
def test_gensim_loads_the_text_format(tmp_path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    sentences, _, _ = _two_clusters()
    model = Word2Vec.train(sentences, Word2VecConfig(dim=4, min_count=1, epochs=1))
    model.save_word2vec_format(tmp_path / "v.txt")
    kv = gensim_models.KeyedVectors.load_word2vec_format(tmp_path / "v.txt")
    assert kv.index_to_key == model.vocab.tokens
    np.testing.assert_allclose(kv.vectors, model.vectors.numpy(), rtol=0, atol=1e-6)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="cannot load word2vec"):
        Word2Vec.load(tmp_path / "missing")
    sentences, _, _ = _two_clusters()
    Word2Vec.train(sentences, Word2VecConfig(dim=4, min_count=1, epochs=1)).save(tmp_path / "a")
    (tmp_path / "a" / "vocab.json").write_text('{"tokens": ["l0"], "counts": [3], "specials": []}')
    with pytest.raises(CheckpointError, match="does not match"):
        Word2Vec.load(tmp_path / "a")
    (tmp_path / "a" / "config.yaml").write_text("kind: word2vec\nmodel: {dim: 0}\n")
    with pytest.raises(CheckpointError, match=r"cannot load word2vec.*dim"):
        Word2Vec.load(tmp_path / "a")


def test_a_saved_model_is_a_run_directory(tmp_path) -> None:
    sentences, _, _ = _two_clusters()
    model = Word2Vec.train(sentences, Word2VecConfig(dim=4, min_count=1, epochs=1))
    model.save(tmp_path / "run")
    loaded, vocab, config = runs.load_run(tmp_path / "run")
    assert config["kind"] == "word2vec" and config["model"]["dim"] == 4
    assert isinstance(loaded, Word2Vec) and vocab is loaded.vocab and vocab == model.vocab
    assert torch.equal(loaded.vectors, model.vectors) and loaded.config == model.config
    fresh, _, _ = runs.load_run(tmp_path / "run", weights=False)
    assert fresh.vectors.shape == model.vectors.shape
    assert not fresh.output.any() and model.output.any()  # freshly initialised: zeros


def test_directories_of_older_versions_still_load(tmp_path) -> None:
    """Before run directories: word2vec_config.json, and a vocab.json of words and counts."""
    sentences, _, _ = _two_clusters()
    model = Word2Vec.train(sentences, Word2VecConfig(dim=4, min_count=1, epochs=1))
    model.save_weights(tmp_path)
    (tmp_path / "word2vec_config.json").write_text(json.dumps(dataclasses.asdict(model.config)))
    vocab = {"words": model.vocab.tokens, "counts": model.vocab.counts}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    again = Word2Vec.load(tmp_path)
    assert again.vocab.tokens == model.vocab.tokens and again.config == model.config
    assert torch.equal(again.vectors, model.vectors)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [[], [[]], [[], []]])
def test_empty_training_text(text: list[list[str]]) -> None:
    with pytest.raises(EmptyCorpusError, match="no words"):
        Word2Vec.train(text, Word2VecConfig(min_count=1))


def test_min_count_leaving_no_vocabulary() -> None:
    with pytest.raises(EmptyCorpusError, match="min_count=5"):
        Word2Vec.train([["a", "b", "a"]], Word2VecConfig(min_count=5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"window": 0}, "window"),
        ({"epochs": 0}, "epochs"),
        ({"min_count": 0}, "min_count"),
        ({"batch_size": 0}, "batch_size"),
        ({"arch": "bag-of-words"}, "arch"),
        ({"loss": "softmax"}, "loss"),
        ({"negative": 0}, "negative"),
        ({"sample": -1e-3}, "sample"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 0.01, "min_alpha": 0.1}, "min_alpha"),
        ({"max_vocab": 0}, "max_vocab"),
        ({"max_row_updates": 0}, "max_row_updates"),
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Word2VecConfig(**kwargs)


def test_hs_does_not_need_negative_and_unknown_word_lookup() -> None:
    Word2VecConfig(loss="hs", negative=0)  # fine: negative is unused by hierarchical softmax
    model = Word2Vec(vocab_of(["a", "b"], [2, 1]), Word2VecConfig(dim=2, min_count=1))
    with pytest.raises(KeyError, match="not in the vocabulary"):
        model.nearest("zzz")
    with pytest.raises(KeyError, match="not in the vocabulary"):
        model["zzz"]
