"""Sliding-window perplexity: equal to Hugging Face's recipe run on the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.evaluate import perplexity, perplexity_of_texts, sliding_windows
from groundwork.models import GPT, GPTConfig
from groundwork.tokenize.char import CharTokenizer

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune."


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train([TEXT], vocab_size=64)


@pytest.fixture(scope="module")
def model(tokenizer: CharTokenizer) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_name(
        "tiny", vocab_size=tokenizer.vocab_size, max_seq_len=32, d_model=32, n_layers=2
    )
    return GPT(config).eval()


def test_sliding_windows_score_each_token_at_most_once() -> None:
    windows = sliding_windows(10, window=4, stride=3)
    scored = [t for begin, end, n in windows for t in range(end - n, end)]
    assert scored == sorted(set(scored))
    assert scored == list(range(1, 10))  # stride < window: every token after the first
    disjoint = sliding_windows(10, window=4, stride=4)
    assert [(b, e) for b, e, _ in disjoint] == [(0, 4), (4, 8), (8, 10)]
    assert [n for *_, n in disjoint] == [3, 3, 1]  # each chunk's first token has no context


def _hf_sliding_nll(hf_model: torch.nn.Module, ids: list[int], window: int, stride: int) -> float:
    """Hugging Face's "perplexity of fixed-length models" recipe, summed instead of averaged."""
    input_ids = torch.tensor([ids])
    total, prev_end = 0.0, 0
    for begin in range(0, input_ids.size(1), stride):
        end = min(begin + window, input_ids.size(1))
        trg_len = end - prev_end
        x = input_ids[:, begin:end]
        labels = x.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            logits = hf_model(x).logits
        total += F.cross_entropy(
            logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum"
        ).item()
        prev_end = end
        if end == input_ids.size(1):
            break
    return total


@pytest.mark.parity
@pytest.mark.parametrize(("window", "stride"), [(16, 5), (16, 16), (32, 7)])
def test_equals_transformers_sliding_window(
    model: GPT, tokenizer: CharTokenizer, window: int, stride: int
) -> None:
    pytest.importorskip("transformers")
    from groundwork.interop.hf import to_hf

    hf_model = to_hf(model).eval()
    ids = tokenizer.encode(TEXT)
    expected = _hf_sliding_nll(hf_model, ids, window, stride)
    result = perplexity(model, tokenizer, TEXT, window=window, stride=stride, batch_size=3)
    assert result.total_nats == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert result.perplexity == pytest.approx(math.exp(result.nats_per_token))
    assert result.bytes == len(TEXT.encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(expected / math.log(2) / result.bytes, rel=1e-4)


def test_window_covering_the_text_equals_one_forward_pass(
    model: GPT, tokenizer: CharTokenizer
) -> None:
    text = TEXT[:30]
    ids = tokenizer.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))
    nll = F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]), reduction="sum").item()
    for stride in (1, 7, 32):
        result = perplexity(model, tokenizer, text, window=32, stride=stride)
        assert result.tokens == len(ids) - 1
        assert result.total_nats == pytest.approx(nll, rel=1e-5)


def test_batch_size_does_not_change_the_result(model: GPT, tokenizer: CharTokenizer) -> None:
    one = perplexity(model, tokenizer, TEXT, window=16, stride=4, batch_size=1)
    many = perplexity(model, tokenizer, TEXT, window=16, stride=4, batch_size=16)
    assert one.total_nats == pytest.approx(many.total_nats, rel=1e-5)


def test_documents_pool_their_nll(model: GPT, tokenizer: CharTokenizer) -> None:
    a, b = TEXT[:40], TEXT[40:]
    pooled = perplexity_of_texts(model, tokenizer, [a, b, ""], window=16, stride=8)
    parts = [perplexity(model, tokenizer, t, window=16, stride=8) for t in (a, b)]
    assert pooled.tokens == sum(p.tokens for p in parts)
    assert pooled.total_nats == pytest.approx(sum(p.total_nats for p in parts), rel=1e-6)


def test_bad_input(model: GPT, tokenizer: CharTokenizer) -> None:
    with pytest.raises(EmptyCorpusError):
        perplexity(model, tokenizer, "")
    with pytest.raises(ConfigError, match="stride"):
        perplexity(model, tokenizer, TEXT, window=8, stride=9)
    with pytest.raises(ConfigError, match="stride"):
        perplexity(model, tokenizer, TEXT, window=8, stride=0)
    with pytest.raises(ConfigError, match="max_seq_len"):
        perplexity(model, tokenizer, TEXT, window=64)
