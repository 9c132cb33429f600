r"""Evaluation sets for retrieval and retrieve-then-read, built from real documents.

No labelled question-passage pairs ship with the bundled corpora, so both sets are made from the
text itself:

* :func:`sentence_queries`, the *inverse cloze task* of Lee, Chang & Toutanova (2019, "Latent
  Retrieval for Weakly Supervised Open Domain Question Answering", ORQA): a sentence taken out of
  a document is the query, and the passages of that document are the relevant ones. The sentence
  is removed from the indexed text, so a retriever must find its context, not the sentence.
* :func:`cloze_questions`: sentences holding a year, the year blanked out ("Fill in the blank:
  ... in ____."): questions whose answer is in the corpus, for retrieval-augmented generation
  (Lewis et al. 2020, RAG). A model answers from the retrieved passages or from memory.

Sentences are found by a deliberately simple rule (:func:`split_sentences`): each line is cut
after ``.``, ``!`` or ``?`` followed by whitespace and a capital letter (the regex
``(?<=[.!?])\s+(?=[A-Z])``). It errs on abbreviations ("Dr. Smith"), which only makes a few
queries odd; the sets are deterministic for a seed.

Chapter 15 (Prompting, agents and retrieval).
"""

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from groundwork.checks import positive_int
from groundwork.corpus.document import Document
from groundwork.errors import ConfigError
from groundwork.retrieval.chunking import Passage, chunk_documents

SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
"""A four-digit year from 1000 to 2099."""
SENTENCE_END = (".", "!", "?")


@dataclass(frozen=True)
class RetrievalQuery:
    """A query of the inverse cloze task.

    Attributes:
        text: The sentence (whitespace normalised), absent from every indexed passage.
        doc_id: The document it was taken from.
        relevant: Indices of that document's passages in the list of passages.
    """

    text: str
    doc_id: str
    relevant: frozenset[int]


@dataclass(frozen=True)
class ClozeQuestion:
    """A fill-in-the-blank question whose answer is in the corpus.

    Attributes:
        question: ``"Fill in the blank: "`` and the sentence with its answer replaced by ``____``.
        answer: The blanked-out text (a year).
        doc_id: The document holding the sentence.
        sentence: The original sentence (whitespace normalised).
    """

    question: str
    answer: str
    doc_id: str
    sentence: str


BLANK = "____"
CLOZE_PROMPT = "Fill in the blank: "


# --8<-- [start:split_sentences]
def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, line by line, each with its whitespace normalised.

    A line is cut after ``.``, ``!`` or ``?`` followed by whitespace and a capital letter; lines
    that are not sentences (headings) come out as they are. Joining the result with spaces gives
    the words of ``text``, in order.

    >>> split_sentences("Title\\n\\nIt rains.  Dr. Who came! why?\\nEnd")
    ['Title', 'It rains.', 'Dr.', 'Who came! why?', 'End']
    """
    sentences = []
    for line in text.split("\n"):
        for piece in SENTENCE_BOUNDARY.split(line.strip()):
            normalised = " ".join(piece.split())
            if normalised:
                sentences.append(normalised)
    return sentences


# --8<-- [end:split_sentences]


def _is_sentence(s: str, min_words: int, max_words: int) -> bool:
    return s.endswith(SENTENCE_END) and min_words <= len(s.split()) <= max_words


# --8<-- [start:sentence_queries]
def sentence_queries(
    docs: Sequence[Document],
    *,
    n: int,
    seed: int = 0,
    min_words: int = 8,
    max_words: int = 50,
    size: int = 100,
    overlap: int = 20,
) -> tuple[list[Passage], list[RetrievalQuery]]:
    """The inverse cloze task: ``n`` sentences as queries, their documents as the targets.

    Sentences of ``min_words`` to ``max_words`` words that end in ``.``, ``!`` or ``?`` and occur
    exactly once in the whole corpus are candidates; ``n`` are drawn at random (``seed``). Each
    is removed from its document, every document is cut into passages
    (:func:`~groundwork.retrieval.chunking.chunk_documents`), and a query's relevant passages
    are all those of its document. A document always keeps at least one sentence.

    Args:
        docs: The corpus (every document is indexed; queries come from any of them).
        n: Number of queries.
        seed: Random seed of the draw.
        min_words: Shortest query sentence, in words.
        max_words: Longest query sentence, in words.
        size: Words per passage.
        overlap: Words shared by consecutive passages.

    Returns:
        ``(passages, queries)``: the passages to index (query sentences removed) and the
        queries in draw order.

    Raises:
        ConfigError: Bad ``n``, ``min_words``, ``size`` or ``overlap``, or fewer than ``n``
            candidate sentences.
    """
    positive_int("n", n)
    positive_int("min_words", min_words)
    sentences = [split_sentences(doc.text) for doc in docs]  # per document
    everything = "\n".join(" ".join(doc_sentences) for doc_sentences in sentences)
    counts = Counter(s for doc_sentences in sentences for s in doc_sentences)
    candidates = [
        (d, i)
        for d, doc_sentences in enumerate(sentences)
        for i, s in enumerate(doc_sentences)
        if counts[s] == 1 and _is_sentence(s, min_words, max_words)
    ]
    rng = random.Random(seed)
    rng.shuffle(candidates)
    kept = [len(doc_sentences) for doc_sentences in sentences]  # sentences left per document
    removed: set[tuple[int, int]] = set()
    drawn: list[tuple[int, int]] = []
    for d, i in candidates:
        if len(drawn) == n:
            break
        s = sentences[d][i]
        if kept[d] < 2 or everything.count(s) != 1:  # would empty the doc / also inside another
            continue
        kept[d] -= 1
        removed.add((d, i))
        drawn.append((d, i))
    if len(drawn) < n:
        raise ConfigError(
            f"only {len(drawn)} sentences of {min_words}-{max_words} words can be queries, "
            f"{n} asked for: ask for fewer or pass more documents"
        )

    pruned = [
        replace(doc, text=" ".join(s for i, s in enumerate(sentences[d]) if (d, i) not in removed))
        for d, doc in enumerate(docs)
    ]
    passages = chunk_documents(pruned, size, overlap)
    by_doc: dict[str, set[int]] = {}
    for p, passage in enumerate(passages):
        by_doc.setdefault(passage.doc_id, set()).add(p)
    queries = [
        RetrievalQuery(sentences[d][i], docs[d].id, frozenset(by_doc[docs[d].id])) for d, i in drawn
    ]
    return passages, queries


# --8<-- [end:sentence_queries]


# --8<-- [start:cloze_questions]
def cloze_questions(
    docs: Sequence[Document],
    *,
    n: int,
    seed: int = 0,
    min_words: int = 10,
    max_words: int = 40,
    answer: re.Pattern[str] = YEAR,
) -> list[ClozeQuestion]:
    """``n`` fill-in-the-blank questions, each a corpus sentence with its year blanked out.

    Candidates are sentences of ``min_words`` to ``max_words`` words, ending in ``.``, ``!`` or
    ``?``, in which ``answer`` (default: a year, 1000-2099) matches exactly once, so the blank
    is not given away elsewhere in the sentence and a sentence with several years is skipped as
    ambiguous. A sentence found in several documents counts once (its first document).

    Args:
        docs: The corpus.
        n: Number of questions.
        seed: Random seed of the draw.
        min_words: Shortest sentence, in words.
        max_words: Longest sentence, in words.
        answer: What to blank out.

    Returns:
        Questions in draw order.

    Raises:
        ConfigError: A bad ``n``, or fewer than ``n`` candidate sentences.

    Example:
        >>> from groundwork.corpus.document import Document
        >>> doc = Document("d", "The bridge over the river Tay was opened in 1878.", "user")
        >>> cloze_questions([doc], n=1)[0].question
        'Fill in the blank: The bridge over the river Tay was opened in ____.'
    """
    positive_int("n", n)
    seen: set[str] = set()
    candidates: list[tuple[str, str, re.Match[str]]] = []
    for doc in docs:
        for s in split_sentences(doc.text):
            if s in seen or not _is_sentence(s, min_words, max_words):
                continue
            seen.add(s)
            matches = list(answer.finditer(s))
            if len(matches) == 1:
                candidates.append((doc.id, s, matches[0]))
    if len(candidates) < n:
        raise ConfigError(
            f"only {len(candidates)} sentences of {min_words}-{max_words} words hold exactly one "
            f"match of {answer.pattern!r}, {n} asked for: ask for fewer or pass more documents"
        )
    questions = []
    for doc_id, s, m in random.Random(seed).sample(candidates, n):
        blanked = s[: m.start()] + BLANK + s[m.end() :]
        questions.append(ClozeQuestion(CLOZE_PROMPT + blanked, m.group(0), doc_id, s))
    return questions


# --8<-- [end:cloze_questions]
