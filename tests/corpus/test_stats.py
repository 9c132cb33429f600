"""Tests for groundwork.corpus.stats."""

from pathlib import Path

import pytest

from groundwork import corpus
from groundwork.errors import UnknownNameError


def test_shakespeare_stats_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "lengths.png"
    stats = corpus.corpus_stats("shakespeare", plot=plot)
    assert stats["documents"] == 42
    assert stats["bytes"] > 4_500_000
    assert stats["characters"] <= stats["bytes"]
    assert stats["words"] > 800_000
    assert stats["exact_duplicates"] == 0
    # Four-century-old plays hold no e-mail addresses, phone numbers, IPs or card numbers.
    assert stats["pii"] == {"email": 0, "card": 0, "ipv6": 0, "ipv4": 0, "phone": 0}
    assert sum(s["documents"] for s in stats["splits"].values()) == 42
    assert sum(s["bytes"] for s in stats["splits"].values()) == stats["bytes"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["plot"] == str(plot)


def test_stats_unknown_source() -> None:
    with pytest.raises(UnknownNameError):
        corpus.corpus_stats("no-such-source")


def test_stats_counts_pii(monkeypatch: pytest.MonkeyPatch) -> None:
    from groundwork.corpus import stats
    from groundwork.corpus.documents import Corpus

    docs = [
        corpus.Document("a", "Mail ada@example.org or bob@example.com.", "toy"),
        corpus.Document("b", "Call +44 20 7946 0958 from 192.0.2.7.", "toy"),
    ]
    fake = Corpus("toy", {"train": docs, "val": [], "test": []})
    monkeypatch.setattr(stats, "load_corpus", lambda name, dedup, home: fake)
    counts = corpus.corpus_stats("toy")["pii"]
    assert counts == {"email": 2, "card": 0, "ipv6": 0, "ipv4": 1, "phone": 1}
    assert "pii" not in corpus.corpus_stats("toy", pii=False)
