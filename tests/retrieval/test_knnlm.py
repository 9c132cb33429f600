"""kNN-LM: lambda 0 is the model's own sliding-window perplexity exactly, exact search agrees with
FAISS, the kNN distribution by hand, and self-retrieval on the datastore's own text."""

import math
import sys
from typing import Any

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError, DataError, EmptyCorpusError
from groundwork.evaluate.perplexity import perplexity, sliding_windows
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.retrieval.knnlm import (
    Datastore,
    ExactSearch,
    FaissSearch,
    _knn_target_log_probs,
    build_datastore,
    context_vectors,
    interpolate,
    knn_log_probs,
    knnlm_evaluate,
    knnlm_scores,
    make_searcher,
)
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_gpt, tiny_llama

TRAIN = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered as the rightful property of some one or other."
)
VAL = "It is a truth universally acknowledged that a good fortune must be in want of a wife."


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train([TRAIN, VAL], vocab_size=64)


def _model(arch: str, vocab_size: int) -> GPT | Llama:
    if arch == "gpt":
        return tiny_gpt(vocab_size=vocab_size, max_seq_len=32, d_model=32)
    return tiny_llama(vocab_size=vocab_size, max_seq_len=32, d_model=32, d_ff=64)


def _ids(tokenizer: CharTokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
@pytest.mark.parametrize(("window", "stride", "batch_size"), [(16, 16, 8), (16, 5, 3), (32, 7, 2)])
def test_lambda_zero_is_the_models_perplexity_exactly(
    tokenizer: CharTokenizer, arch: str, window: int, stride: int, batch_size: int
) -> None:
    model = _model(arch, tokenizer.vocab_size)
    store = build_datastore(
        model, _ids(tokenizer, TRAIN), context_len=window, stride=stride, batch_size=batch_size
    )
    got = knnlm_evaluate(
        model,
        store,
        _ids(tokenizer, VAL),
        lambdas=[0.0, 0.3],
        k=4,
        context_len=window,
        stride=stride,
        batch_size=batch_size,
    )
    want = perplexity(model, tokenizer, VAL, window=window, stride=stride, batch_size=batch_size)
    assert got[0.0].tokens == want.tokens
    assert got[0.0].nats_per_token == want.nats_per_token  # bit for bit
    assert got[0.0].perplexity == want.perplexity
    assert got[0.3].perplexity != want.perplexity
    assert got[0.0].bits_per_token == pytest.approx(want.nats_per_token / math.log(2))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_context_vectors_are_what_the_head_reads(arch: str) -> None:
    model = _model(arch, 50)
    x = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        h = context_vectors(model, x)
        assert h.shape == (2, 9, 32)
        assert torch.equal(model.lm_head(h), model(x))
    with pytest.raises(ConfigError, match="GPT or Llama"):
        context_vectors(nn.Linear(3, 3), x)


def test_datastore_has_one_key_per_scored_token(tokenizer: CharTokenizer) -> None:
    model = _model("gpt", tokenizer.vocab_size)
    ids = _ids(tokenizer, TRAIN)
    overlapping = build_datastore(model, ids, context_len=16, stride=4)
    assert torch.equal(overlapping.values, ids[1:])  # stride < window: every token but the first
    disjoint = build_datastore(model, ids, context_len=16)  # stride = window
    n_scored = sum(n for *_, n in sliding_windows(len(ids), 16, 16))
    assert len(disjoint) == n_scored < len(ids) - 1  # a chunk's first token has no context
    assert disjoint.keys.shape == (n_scored, 32) and disjoint.keys.dtype == torch.float32
    capped = build_datastore(model, ids, context_len=16, stride=4, max_entries=50)
    assert len(capped) == 50 and torch.equal(capped.keys, overlapping.keys[:50])
    half = build_datastore(model, ids, context_len=16, stride=4, dtype=torch.float16)
    assert half.keys.dtype == torch.float16
    torch.testing.assert_close(half.keys.float(), overlapping.keys, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_the_datastores_own_text_retrieves_itself(tokenizer: CharTokenizer, arch: str) -> None:
    model = _model(arch, tokenizer.vocab_size)
    ids = _ids(tokenizer, TRAIN)
    store = build_datastore(model, ids, context_len=32, stride=8)
    d, i = ExactSearch(store.keys).search(store.keys, 1)
    assert torch.equal(i[:, 0], torch.arange(len(store)))
    assert d.abs().max() < 1e-3
    # each token's single neighbour is itself, holding the right token: p_kNN = 1, PPL 1
    own = knnlm_evaluate(model, store, ids, lambdas=[1.0], k=1, context_len=32, stride=8)
    assert own[1.0].perplexity == 1.0


def test_exact_search_matches_faiss() -> None:
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    keys, queries = torch.randn(700, 16, generator=g), torch.randn(40, 16, generator=g)
    d_exact, i_exact = ExactSearch(keys, chunk_size=64).search(queries, 10)
    d_flat, i_flat = FaissSearch(keys).search(queries, 10)
    assert torch.equal(i_exact, i_flat)
    torch.testing.assert_close(d_exact, d_flat, rtol=1e-4, atol=1e-4)
    # squared L2, ascending
    want = torch.cdist(queries.double(), keys.double()).pow(2).sort(dim=1).values[:, :10]
    torch.testing.assert_close(d_exact.double(), want, rtol=1e-4, atol=1e-4)
    # an inverted file probing every cell is exact too
    d_ivf, i_ivf = FaissSearch(keys, nlist=8, nprobe=8).search(queries, 10)
    assert torch.equal(i_ivf, i_exact)
    torch.testing.assert_close(d_ivf, d_exact, rtol=1e-4, atol=1e-4)
    # chunking does not change the answer
    d_one, i_one = ExactSearch(keys, chunk_size=10_000).search(queries, 10)
    assert torch.equal(i_one, i_exact)
    torch.testing.assert_close(d_one, d_exact)


def test_faiss_backend_gives_the_exact_backends_perplexity(tokenizer: CharTokenizer) -> None:
    pytest.importorskip("faiss")
    model = _model("gpt", tokenizer.vocab_size)
    store = build_datastore(model, _ids(tokenizer, TRAIN), context_len=16, stride=4)
    runs = {
        backend: knnlm_evaluate(
            model, store, _ids(tokenizer, VAL), lambdas=[0.25], k=8, backend=backend, stride=4
        )[0.25].perplexity
        for backend in ("exact", "faiss")
    }
    assert runs["faiss"] == pytest.approx(runs["exact"], rel=1e-5)


def test_knn_log_probs_by_hand() -> None:
    # two neighbours hold token 3 at distance 1, one holds token 1 at distance 2; tau = 1
    distances = torch.tensor([[1.0, 2.0, 1.0]])
    values = torch.tensor([[3, 1, 3]])
    z = 2 * math.exp(-1) + math.exp(-2)
    log_p = knn_log_probs(distances, values, vocab_size=5, temperature=1.0)
    assert log_p.shape == (1, 5)
    torch.testing.assert_close(log_p[0, 3], torch.tensor(math.log(2 * math.exp(-1) / z)))
    torch.testing.assert_close(log_p[0, 1], torch.tensor(math.log(math.exp(-2) / z)))
    assert torch.isinf(log_p[0, [0, 2, 4]]).all()  # no neighbour holds them
    torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0))
    # a hot temperature flattens: tau -> infinity gives each neighbour weight 1/k
    flat = knn_log_probs(distances, values, vocab_size=5, temperature=1e9).exp()
    torch.testing.assert_close(flat[0, [1, 3]], torch.tensor([1 / 3, 2 / 3]))


def test_knn_target_log_probs_gather_the_full_distribution() -> None:
    g = torch.Generator().manual_seed(1)
    distances = torch.rand(6, 5, generator=g).sort(dim=1).values * 10
    values = torch.randint(0, 7, (6, 5), generator=g)
    targets = torch.randint(0, 7, (6,), generator=g)
    full = knn_log_probs(distances, values, 7, temperature=2.0)
    got = _knn_target_log_probs(distances, values, targets, temperature=2.0)
    torch.testing.assert_close(got, full[torch.arange(6), targets])


def test_interpolate() -> None:
    g = torch.Generator().manual_seed(2)
    lm = torch.log_softmax(torch.randn(3, 7, generator=g), -1)
    knn = knn_log_probs(
        torch.rand(3, 4, generator=g), torch.randint(0, 7, (3, 4), generator=g), 7, 1.0
    )
    assert torch.equal(interpolate(lm, knn, 0.0), lm)  # bit for bit, -inf of kNN or not
    assert torch.equal(interpolate(lm, knn, 1.0), knn)
    mixed = interpolate(lm, knn, 0.3)
    torch.testing.assert_close(mixed.exp(), 0.7 * lm.exp() + 0.3 * knn.exp())
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(3))
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ConfigError, match="lam"):
            interpolate(lm, knn, bad)
    with pytest.raises(ConfigError, match="shapes"):
        interpolate(lm, knn[:, :3], 0.5)


def test_scores_serve_any_smaller_k_and_temperature(tokenizer: CharTokenizer) -> None:
    model = _model("llama", tokenizer.vocab_size)
    store = build_datastore(model, _ids(tokenizer, TRAIN), context_len=16, stride=4)
    val = _ids(tokenizer, VAL)
    scores = knnlm_scores(model, store, val, k=16, context_len=16, stride=4)
    assert scores.distances.shape == (len(val) - 1, 16)
    for k, tau in [(4, 1.0), (16, 3.0)]:
        once = scores.results([0.2], k=k, temperature=tau)[0.2]
        again = knnlm_evaluate(
            model, store, val, lambdas=[0.2], k=k, temperature=tau, context_len=16, stride=4
        )[0.2]
        assert once.perplexity == pytest.approx(again.perplexity, rel=1e-6)
        assert (once.k, once.temperature, once.tokens) == (k, tau, len(val) - 1)
    with pytest.raises(ConfigError, match="only 16 neighbours"):
        scores.results([0.2], k=17)


def test_bad_input(tokenizer: CharTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("gpt", tokenizer.vocab_size)
    ids = _ids(tokenizer, TRAIN)
    store = build_datastore(model, ids, context_len=16)
    with pytest.raises(EmptyCorpusError, match="two tokens"):
        build_datastore(model, ids[:1])
    with pytest.raises(EmptyCorpusError):
        knnlm_evaluate(model, store, torch.tensor([], dtype=torch.long))
    with pytest.raises(ConfigError, match="1-D"):
        build_datastore(model, ids.float())
    with pytest.raises(ConfigError, match="1-D"):
        build_datastore(model, ids[None])
    with pytest.raises(DataError, match="outside"):
        build_datastore(model, torch.tensor([1, 2, 999]))
    with pytest.raises(ConfigError, match="lam"):
        knnlm_evaluate(model, store, ids, lambdas=[0.0, 1.2])
    with pytest.raises(ConfigError, match="temperature"):
        knnlm_evaluate(model, store, ids, temperature=0.0)
    wrong_dim = Datastore(torch.zeros(10, 33), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ConfigError, match="dimension 33"):
        knnlm_evaluate(model, wrong_dim, ids)
    with pytest.raises(ConfigError, match="queries must be"):
        ExactSearch(store.keys).search(torch.zeros(2, 31), 1)
    with pytest.raises(ConfigError, match="k = 9999"):
        knnlm_evaluate(model, store, ids, k=9999)
    with pytest.raises(ConfigError, match="context_len"):
        build_datastore(model, ids, context_len=33)
    with pytest.raises(ConfigError, match="stride"):
        build_datastore(model, ids, context_len=16, stride=17)
    unknown: Any = "annoy"
    with pytest.raises(ConfigError, match="backend"):
        make_searcher(store, unknown)
    with pytest.raises(ConfigError, match="keys"):
        Datastore(torch.zeros(10, 4), torch.zeros(9, dtype=torch.long))
    with pytest.raises(ConfigError, match="GPT or Llama"):
        build_datastore(nn.Linear(2, 2), ids)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ConfigError, match=r"groundwork\[retrieval\]"):
        make_searcher(store, "faiss")
