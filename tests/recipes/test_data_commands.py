"""Tests for the data commands of groundwork.recipes.data: licences, prepare --redact-pii."""

import json
from pathlib import Path

import numpy as np
import pytest

from groundwork import corpus, tokenize
from groundwork.corpus import documents
from groundwork.corpus.document import Document
from groundwork.corpus.documents import Corpus
from groundwork.recipes.data import data_licences, data_prepare

TEXTS = {
    "train": ["Write to ada@example.org today.", "Call +44 20 7946 0958 now."],
    "val": ["Server 192.0.2.7 is down."],
    "test": [],
}


def test_licences_lists_every_source_with_its_licence(capsys: pytest.CaptureFixture[str]) -> None:
    data_licences()
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "name",
        "licence",
        "package",
        "fetched",
        "sha256",
    ]
    assert set(lines[1]) == {"|", "-"}
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == set(corpus.SOURCES)
    for name, source in corpus.SOURCES.items():
        assert source.licence in rows[name] and source.spec in rows[name]
    assert "public domain" in rows["shakespeare"]


@pytest.mark.parametrize("redact_pii", [False, True])
def test_prepare_redacts_pii_before_tokenizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redact_pii: bool
) -> None:
    splits = {
        s: [Document(f"{s}{i}", t, "toy") for i, t in enumerate(ts)] for s, ts in TEXTS.items()
    }
    monkeypatch.setattr(documents, "load_corpus", lambda name: Corpus(name, splits))
    texts = [t for ts in TEXTS.values() for t in ts] + ["[EMAIL] [PHONE] [IPV4] [CARD] [IPV6]"]
    tok = tokenize.train_tokenizer("char", texts, 200)
    tok_path = tmp_path / "tokenizer.json"
    tok.save(tok_path)
    out = tmp_path / "shards"
    data_prepare(source="toy", tokenizer=tok_path, out=out, redact_pii=redact_pii)
    meta = json.loads((out / "meta.json").read_text())
    assert meta.get("redact_pii", False) is redact_pii
    train = np.fromfile(out / "train.bin", dtype=meta["dtype"]).tolist()
    text = tok.decode([i for i in train if i != tok.eot_id])
    if redact_pii:
        assert "[EMAIL]" in text and "[PHONE]" in text and "@" not in text
        assert meta["splits"]["val"]["bytes"] == len("Server [IPV4] is down.")
    else:
        assert "ada@example.org" in text and "+44 20 7946 0958" in text
        assert meta["splits"]["train"]["documents"] == 2
