"""The keys' second moment: against an explicit computation on a tiny model, the early stop
after the deepest layer, the token windows, and the cache (keyed on model, layer, n_tokens)."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from groundwork import corpus
from groundwork.edit import covariance
from groundwork.edit.covariance import (
    cached_second_moments,
    mlp_keys,
    model_fingerprint,
    second_moments,
    text_windows,
)
from groundwork.edit.layers import mlp_out_proj
from groundwork.errors import ConfigError, DataError
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.tokenize.char import CharTokenizer


def tiny_llama(seed: int = 0, vocab_size: int = 512) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig.from_name("tiny", vocab_size=vocab_size, n_layers=3)).eval()


def explicit_second_moment(model: Llama, windows: list[list[int]], layer: int) -> torch.Tensor:
    """Each window alone (no padding), every token's key stacked, K^T K / N in float64."""
    keys = []
    proj = mlp_out_proj(model, layer)
    handle = proj.register_forward_hook(lambda m, args, out: keys.append(args[0][0].double()))
    with torch.no_grad():
        for w in windows:
            model(torch.tensor([w]))
    handle.remove()
    K = torch.cat(keys)  # (N, d_ff)
    return K.T @ K / K.shape[0]


def test_second_moments_equal_an_explicit_computation() -> None:
    model = tiny_llama()
    g = torch.Generator().manual_seed(0)
    lengths = [17, 5, 32, 1, 20, 9, 31]  # ragged: the batches are padded
    windows = [torch.randint(0, 512, (n,), generator=g).tolist() for n in lengths]
    stats = second_moments(model, windows, [2, 0], batch_size=3)
    assert set(stats) == {0, 2}
    for layer in (0, 2):
        C = stats[layer]
        assert C.shape == (172, 172) and C.dtype == torch.float32
        expected = explicit_second_moment(model, windows, layer)
        torch.testing.assert_close(C.double(), expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(C, C.T)
    # one forward pass per batch serves several layers: the same as one layer at a time
    torch.testing.assert_close(second_moments(model, windows, [2])[2], stats[2])


def test_mlp_keys_stops_after_the_deepest_layer() -> None:
    model = tiny_llama()
    called = []
    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda *a, i=i: called.append(f"block {i}"))
    model.lm_head.register_forward_hook(lambda *a: called.append("head"))
    ids = torch.randint(0, 512, (2, 6))
    keys = mlp_keys(model, ids, None, [1, 0])
    assert set(keys) == {0, 1} and keys[1].shape == (2, 6, 172)
    assert called == ["block 0"]  # block 1 stopped inside, at its MLP's output projection
    called.clear()
    mlp_keys(model, ids, None, [2])
    assert called == ["block 0", "block 1"]


def test_text_windows_cut_exactly_n_tokens_without_crossing_texts() -> None:
    tok = CharTokenizer.train(["abcdefghij"], vocab_size=20)
    windows = text_windows(tok, ["abcdefg", "hij", "abcdefghij"], n_tokens=15, window=4)
    assert [len(w) for w in windows] == [4, 3, 3, 4, 1]
    assert tok.decode(windows[1]) == "efg" and tok.decode(windows[4]) == "e"
    with pytest.raises(DataError, match="only 10 tokens"):
        text_windows(tok, ["abcdefg", "hij"], n_tokens=11)
    with pytest.raises(ConfigError, match="window"):
        text_windows(tok, ["abc"], n_tokens=2, window=0)


def test_fingerprint_ignores_the_mlp_output_projections_only() -> None:
    model = tiny_llama()
    tok = CharTokenizer.train(["abcdefghij"], vocab_size=20)
    base = model_fingerprint(model, tok)
    assert base == model_fingerprint(tiny_llama(), tok)  # same weights, same name
    with torch.no_grad():
        mlp_out_proj(model, 1).weight += 1.0  # an edit: keys are unchanged
    assert model_fingerprint(model, tok) == base
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight += 1e-3  # every element moves
    assert model_fingerprint(model, tok) != base
    assert model_fingerprint(tiny_llama(seed=1), tok) != base
    other_tok = CharTokenizer.train(["abcdefghijk"], vocab_size=20)
    assert model_fingerprint(tiny_llama(), other_tok) != base


def test_cache_round_trips_and_is_keyed_on_model_layer_and_n_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [d.text for d in corpus.load_documents("wiki-sample", split="train")[:3]]
    tok = CharTokenizer.train(texts, vocab_size=128)
    model = tiny_llama(vocab_size=tok.vocab_size)
    kwargs = dict(n_tokens=600, window=64, cache_dir=tmp_path)
    first = cached_second_moments(model, tok, [0, 2], **kwargs)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)
    assert not any(f.startswith(".") for f in files)  # no temporary files left behind
    with safe_open(str(tmp_path / files[0]), framework="pt") as f:
        meta = f.metadata()
    assert meta["layer"] == "0" and meta["n_tokens"] == "600" and meta["source"] == "wiki-sample"
    assert meta["model"] == model_fingerprint(model, tok) and meta["window"] == "64"

    # the statistics are the explicit ones over the first 600 tokens of the train split
    windows = text_windows(tok, texts, n_tokens=600, window=64)
    torch.testing.assert_close(
        first[2].double(), explicit_second_moment(model, windows, 2), rtol=1e-5, atol=1e-7
    )

    computed: list[list[int]] = []
    real = covariance.second_moments

    def spy(model, windows, layers, **kw):  # type: ignore[no-untyped-def]
        computed.append(sorted(layers))
        return real(model, windows, layers, **kw)

    monkeypatch.setattr(covariance, "second_moments", spy)
    again = cached_second_moments(model, tok, [2, 0], **kwargs)
    assert computed == []  # read back, not recomputed
    for layer in (0, 2):
        assert torch.equal(again[layer], first[layer])
    cached_second_moments(model, tok, [0, 1], **kwargs)
    assert computed == [[1]]  # only the missing layer
    cached_second_moments(model, tok, [0], **{**kwargs, "n_tokens": 700})
    assert computed == [[1], [0]]  # another n_tokens is another statistic
    cached_second_moments(tiny_llama(seed=5, vocab_size=tok.vocab_size), tok, [0], **kwargs)
    assert computed == [[1], [0], [0]]  # another model too
    assert len(list(tmp_path.iterdir())) == 5


def test_a_cached_file_written_for_another_key_is_not_used(tmp_path: Path) -> None:
    texts = [d.text for d in corpus.load_documents("wiki-sample", split="train")[:2]]
    tok = CharTokenizer.train(texts, vocab_size=128)
    model = tiny_llama(vocab_size=tok.vocab_size)
    cached_second_moments(model, tok, [0], n_tokens=300, window=64, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    save_file({"mom2": torch.zeros(172, 172)}, str(path), metadata={"format": "old"})
    stats = cached_second_moments(model, tok, [0], n_tokens=300, window=64, cache_dir=tmp_path)
    assert stats[0].abs().sum() > 0  # recomputed (and rewritten)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] != "old"


def test_second_moments_reject_bad_input() -> None:
    model = tiny_llama()
    with pytest.raises(ConfigError, match="no layers"):
        second_moments(model, [[1, 2]], [])
    with pytest.raises(ConfigError, match="layer 3 is out of range"):
        second_moments(model, [[1, 2]], [3])
    with pytest.raises(ConfigError, match="empty"):
        second_moments(model, [[1, 2], []], [0])
    with pytest.raises(ConfigError, match="context of 128"):
        second_moments(model, [[1] * 129], [0])
    with pytest.raises(ConfigError, match="batch_size"):
        second_moments(model, [[1, 2]], [0], batch_size=0)


def test_windows_are_cut_to_a_short_context(tmp_path: Path) -> None:
    texts = [d.text for d in corpus.load_documents("wiki-sample", split="train")[:2]]
    tok = CharTokenizer.train(texts, vocab_size=128)
    model = tiny_llama(vocab_size=tok.vocab_size)  # context 128, default window 256
    cached_second_moments(model, tok, [1], n_tokens=300, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["window"] == "128"
