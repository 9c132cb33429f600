"""Extraction of memorised training text: a tiny GPT trained on a stream where a card number is
planted 50 times gives it back from its prefix and nothing of the random filler around it; an
untrained one gives back nothing; sampling is seeded; the interval is Wilson's; bad inputs are
refused with the numbers; the plot is a PNG."""

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from groundwork.corpus import Document, TokenShards, prepare_shards
from groundwork.errors import ConfigError
from groundwork.evaluate.bias import binomial_ci
from groundwork.evaluate.memorization import (
    ExtractionResult,
    extraction_curve,
    extraction_rate,
    matched_prefix,
    plot_extraction,
)
from groundwork.models.gpt import GPT
from helpers import tiny_gpt

PREFIX = "my card number is "
SECRET = PREFIX + "7350 2841 96."  # digits all different: learnt in few steps by one layer
COPIES, FILLER = 50, 32  # each copy follows 32 random letters, so 31-token windows fit in them
K, SUFFIX = len(PREFIX), len(SECRET) - len(PREFIX)  # 18-token prompt, 13-token suffix
SHAPE = dict(vocab_size=256, d_model=32, n_layers=1, n_heads=2, max_seq_len=64)


def planted_text() -> tuple[str, list[int], list[int]]:
    """The training text (ASCII: one byte, one token) and where the secrets and fillers start."""
    rng = random.Random(0)
    text, secrets, fillers = "", [], []
    for _ in range(COPIES):
        fillers.append(len(text))
        text += "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(FILLER))
        secrets.append(len(text))
        text += SECRET
    return text, secrets, fillers


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Ops this small only lose time to threads on a busy machine (as under pytest-xdist)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenShards, list[int], list[int]]:
    """Byte-level shards of :func:`planted_text`, with the secret and filler offsets."""
    text, secrets, fillers = planted_text()
    out = tmp_path_factory.mktemp("planted")
    docs = {"train": [Document(id="leak", text=text, source="test")]}
    prepare_shards(docs, lambda s: list(s.encode()), 256, out, eot_id=None, progress=False)
    return TokenShards(out, "train"), secrets, fillers


@pytest.fixture(scope="module")
def memorised(planted: tuple[TokenShards, list[int], list[int]]) -> GPT:
    """A 1-layer GPT (d 32) after 200 AdamW steps of 8 x 32 random windows (about 2 s)."""
    shards = planted[0]
    model = tiny_gpt(**SHAPE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        x, y = shards.random_batch(8, 32, generator)  # (B, T) each
        logits = model(x)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_the_planted_secret_is_extracted_and_the_filler_is_not(
    planted: tuple[TokenShards, list[int], list[int]], memorised: GPT
) -> None:
    shards, secrets, fillers = planted
    leak = extraction_rate(
        memorised, shards.tokens, prefix_len=K, suffix_len=SUFFIX, offsets=secrets
    )
    assert (leak.n, leak.extracted, leak.rate) == (COPIES, COPIES, 1.0)
    assert leak.matched == [SUFFIX] * COPIES and leak.matched_prefix_len == SUFFIX
    assert leak.ci[1] == 1.0 and leak.ci[0] > 0.9
    noise = extraction_rate(
        memorised, shards.tokens, prefix_len=K, suffix_len=SUFFIX, offsets=fillers
    )
    assert (noise.extracted, noise.rate) == (0, 0.0) and noise.ci[0] == pytest.approx(0, abs=1e-12)
    assert noise.matched_prefix_len < 1  # random letters: hardly ever even the first one


def test_an_untrained_model_extracts_nothing(
    planted: tuple[TokenShards, list[int], list[int]],
) -> None:
    shards, secrets, fillers = planted
    fresh = tiny_gpt(**SHAPE)
    for offsets in (secrets, fillers):
        result = extraction_rate(
            fresh, shards.tokens, prefix_len=K, suffix_len=SUFFIX, offsets=offsets
        )
        assert result.rate == 0.0


def test_sampled_offsets_are_seeded_distinct_and_inside_the_stream() -> None:
    model, tokens = tiny_gpt(), list(range(97)) * 3
    a = extraction_rate(model, tokens, prefix_len=4, suffix_len=3, n=20, seed=1)
    b = extraction_rate(model, tokens, prefix_len=4, suffix_len=3, n=20, seed=1)
    c = extraction_rate(model, tokens, prefix_len=4, suffix_len=3, n=20, seed=2)
    assert a == b and a.offsets != c.offsets
    assert a.offsets == sorted(set(a.offsets)) and len(a.offsets) == a.n == 20
    assert a.offsets[0] >= 0 and a.offsets[-1] + 4 + 3 <= len(tokens)


def test_a_stream_with_exactly_n_windows_uses_every_offset() -> None:
    tokens = list(range(10))  # windows of 4 + 2 tokens start at 0..4
    result = extraction_rate(tiny_gpt(), tokens, prefix_len=4, suffix_len=2, n=5, batch_size=2)
    assert result.offsets == [0, 1, 2, 3, 4] and len(result.matched) == 5


def test_matched_prefix_counts_up_to_the_first_mismatch() -> None:
    assert matched_prefix([5, 6, 9, 8], [5, 6, 7, 8]) == 2  # the 8 after the mistake is not counted
    assert matched_prefix([1, 2], [1, 2]) == 2
    assert matched_prefix([3], [1]) == 0


def test_the_interval_is_wilsons() -> None:
    model, tokens = tiny_gpt(), list(range(97))
    result = extraction_rate(model, tokens, prefix_len=2, suffix_len=2, n=10)
    assert result.ci == binomial_ci(result.extracted, result.n)
    # 0 of 10 by hand: the lower end is 0 and the upper z^2 / (n + z^2) = 3.8415 / 13.8415.
    assert result.extracted == 0 and result.ci[0] == pytest.approx(0, abs=1e-12)
    assert result.ci[1] == pytest.approx(1.959964**2 / (10 + 1.959964**2), abs=1e-6)


def test_the_curve_scores_the_same_suffixes_at_every_prefix_length() -> None:
    model, tokens = tiny_gpt(), list(range(97)) * 2
    curve = extraction_curve(model, tokens, [1, 3, 8], suffix_len=4, n=12, seed=3)
    assert [r.prefix_len for r in curve] == [1, 3, 8]
    suffix_starts = [[o + r.prefix_len for o in r.offsets] for r in curve]
    assert suffix_starts[0] == suffix_starts[1] == suffix_starts[2]
    assert min(suffix_starts[0]) >= 8  # room for the longest prefix


def test_the_model_is_left_in_the_mode_it_was_in() -> None:
    model = tiny_gpt().train()
    extraction_rate(model, list(range(50)), prefix_len=3, suffix_len=2, n=4)
    assert model.training


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(prefix_len=0), "prefix_len must be a positive integer, got 0"),
        (dict(prefix_len=4, suffix_len=0), "suffix_len must be a positive integer"),
        (dict(prefix_len=4, n=0), "n must be a positive integer, got 0"),
        (dict(prefix_len=4, batch_size=0), "batch_size must be"),
        (dict(prefix_len=20, suffix_len=10), "a stream of 25 tokens has 0 start offsets"),
        (dict(prefix_len=4, suffix_len=2, n=30), "n=30 samples asked for, but a stream of 25"),
        (dict(prefix_len=4, suffix_len=2, offsets=[20]), "offset 20 is outside 0..19"),
        (dict(prefix_len=4, offsets=[]), "offsets is empty"),
    ],
)
def test_bad_inputs_are_refused_with_the_numbers(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        extraction_rate(tiny_gpt(), list(range(25)), **kw)  # type: ignore[arg-type]


def test_a_prefix_longer_than_the_context_is_refused() -> None:
    model = tiny_gpt(max_seq_len=8)
    with pytest.raises(ConfigError, match="more than the model's context of 8"):
        extraction_rate(model, list(range(40)), prefix_len=9, suffix_len=2, n=2)


def test_curve_inputs_are_checked() -> None:
    with pytest.raises(ConfigError, match="prefix_lens is empty"):
        extraction_curve(tiny_gpt(), list(range(40)), [])
    with pytest.raises(ConfigError, match="has 0 suffix starts with 30 tokens"):
        extraction_curve(tiny_gpt(), list(range(40)), [2, 30], suffix_len=11, n=1)


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    def point(k: int, hits: int) -> ExtractionResult:
        return ExtractionResult(k, 50, 20, hits, hits / 20, binomial_ci(hits, 20))

    curves = {"dup x1": [point(8, 0), point(32, 1)], "dup x50": [point(32, 9), point(8, 2)]}
    path = plot_extraction(curves, tmp_path / "plots" / "extraction.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matched = plot_extraction(curves, tmp_path / "matched.png", metric="matched")
    assert matched.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="non-empty curve"):
        plot_extraction({"empty": []}, tmp_path / "no.png")
    with pytest.raises(ConfigError, match="metric"):
        plot_extraction(curves, tmp_path / "no.png", metric="loss")
