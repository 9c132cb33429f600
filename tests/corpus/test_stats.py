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
    assert sum(s["documents"] for s in stats["splits"].values()) == 42
    assert sum(s["bytes"] for s in stats["splits"].values()) == stats["bytes"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["plot"] == str(plot)


def test_stats_unknown_source() -> None:
    with pytest.raises(UnknownNameError):
        corpus.corpus_stats("no-such-source")
