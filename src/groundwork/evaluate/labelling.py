r"""Entity-level evaluation of BIO-tagged sequences (named-entity recognition, chunking), written
from scratch and equal to ``seqeval``'s default, conlleval-compatible mode
(``seqeval.metrics.precision_score``, ``recall_score``, ``f1_score``,
``classification_report(output_dict=True)``, ``accuracy_score``): exactly for the entity counts,
to 1e-12 for the scores.

**Chunks.** A tag is ``O`` or a prefix ``B``, ``I``, ``E`` or ``S`` optionally followed by ``-``
and a type (``B-PER``, ``I-LOC``, ``S-MISC``; a bare ``B`` or ``B-`` has type ``_``). Reading a
sentence left to right, a tag *continues* the open chunk when it is ``I`` or ``E`` of the same
type right after a ``B`` or ``I``; every other non-``O`` tag starts a new chunk, and a chunk ends
where the next tag does not continue it. This is conlleval's lenient reading, so it scores IOB2,
IOB1 and IOBES (IOE) alike and accepts ill-formed sequences:

    B-PER I-PER O    -> PER(0, 1)
    O I-PER I-PER    -> PER(1, 2)             (I- after O starts a chunk: IOB1)
    B-PER I-LOC      -> PER(0, 0), LOC(1, 1)  (a type change ends one and starts another)
    B-PER B-PER      -> PER(0, 0), PER(1, 1)
    B-PER E-PER I-PER -> PER(0, 1), PER(2, 2) (after E- nothing continues)

**Scores.** A predicted entity is correct when a true entity has the same type, start and end.
For each type, with $\mathrm{TP}$ the correct predictions, $\hat n$ the predicted and $n$ the true
entities,

$$ P = \frac{\mathrm{TP}}{\hat n}, \qquad R = \frac{\mathrm{TP}}{n}, \qquad
   F_1 = \frac{2 P R}{P + R}, $$

each $0$ where its denominator is $0$ (seqeval's default ``zero_division``, without its warning).
*Micro* scores use the counts summed over types; *macro* averages the per-type scores; *weighted*
averages them weighted by $n$ (all $0$ when there is no true entity). Types are those seen in the
true or the predicted tags, in sorted order.

**Differences from seqeval**, on input it does not score sensibly: tags that are not of the form
above (``U-PER``, ``PER``, ``o``, ...; seqeval only warns "seems not to be NE tag" and then chunks
them unpredictably) raise :class:`~groundwork.errors.DataError`, and so do sentences of different
lengths, naming the first such sentence (seqeval's ``ValueError`` prints every length). When no
entity of any type occurs, the macro averages are $0$ rather than seqeval's ``nan``.

References: Ramshaw and Marcus 1995, "Text Chunking using Transformation-Based Learning" (IOB);
Tjong Kim Sang and De Meulder 2003, "Introduction to the CoNLL-2003 Shared Task:
Language-Independent Named Entity Recognition" (conlleval); Nakayama 2018, seqeval.

Chapter 12 (Adaptation) scores a token-classification model on the CoNLL NER sample with these.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from groundwork.errors import DataError, EmptyCorpusError

Entity = tuple[str, int, int]
"""``(type, start, end)`` with ``end`` inclusive, as seqeval gives them."""

_PREFIXES = frozenset("BIES")


def _parse(tag: str, where: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"B" -> ("B", "_")``, ``"O" -> ("O", "")``."""
    if tag == "O":
        return "O", ""
    if isinstance(tag, str) and tag[:1] in _PREFIXES and (len(tag) == 1 or tag[1] == "-"):
        return tag[0], tag[2:] or "_"
    raise DataError(
        f"{tag!r}{where} is not a BIO/IOBES tag: expected 'O', or B, I, E or S optionally "
        "followed by '-' and a type ('B-PER'); convert other schemes (BILOU U-/L-, suffix "
        "tags 'PER-B') first"
    )


def _entities(tags: Sequence[str], where: str = "") -> list[Entity]:
    entities: list[Entity] = []
    prev_prefix, prev_type, start = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the final "O" closes a chunk open at the end
        at = f" (tag {i}{where})" if i < len(tags) else ""
        prefix, type_ = _parse(tag, at)
        continues = prev_prefix in ("B", "I") and prefix in ("I", "E") and type_ == prev_type
        if prev_prefix != "O" and not continues:
            entities.append((prev_type, start, i - 1))
        if prefix != "O" and not continues:
            start = i
        prev_prefix, prev_type = prefix, type_
    return entities


def get_entities(tags: Sequence[str]) -> list[Entity]:
    """The chunks of one tagged sentence, as ``(type, start, end)`` with ``end`` inclusive.

    Args:
        tags: One tag per token (``"O"``, ``"B-PER"``, ``"I-PER"``, ...).

    Raises:
        DataError: A tag is not ``O`` or ``B``/``I``/``E``/``S`` with an optional ``-type``.

    >>> get_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4), ('ORG', 5, 5)]
    """
    return _entities(tags)


@dataclass(frozen=True)
class EntityScores:
    """Precision, recall and F1 of one entity type, or an average over the types."""

    precision: float
    recall: float
    f1: float
    support: int
    """True entities (of this type; all types for an average)."""
    predicted: int
    """Predicted entities (of this type; all types for an average)."""
    correct: int
    """Predicted entities equal to a true one (of this type; all types for an average)."""


@dataclass(frozen=True)
class EntityReport:
    """Entity-level scores of a set of tagged sentences (see :func:`entity_scores`)."""

    per_type: dict[str, EntityScores]
    """Scores of each entity type seen in the true or predicted tags, sorted by name."""
    micro: EntityScores
    """Scores from the counts summed over types: the usual headline NER F1."""
    macro: EntityScores
    """Unweighted mean of the per-type scores."""
    weighted: EntityScores
    """Mean of the per-type scores weighted by support."""

    @property
    def precision(self) -> float:
        return self.micro.precision

    @property
    def recall(self) -> float:
        return self.micro.recall

    @property
    def f1(self) -> float:
        return self.micro.f1

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        """The layout of ``seqeval.metrics.classification_report(..., output_dict=True)``."""
        rows = {**self.per_type, "micro avg": self.micro}
        rows |= {"macro avg": self.macro, "weighted avg": self.weighted}
        return {
            name: {
                "precision": s.precision,
                "recall": s.recall,
                "f1-score": s.f1,
                "support": s.support,
            }
            for name, s in rows.items()
        }


def _check(
    true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> tuple[list[Sequence[str]], list[Sequence[str]]]:
    """Validate the shapes; return the sentences as lists."""
    for name, sentences in (("true", true), ("pred", pred)):
        if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
            raise DataError(
                f"{name} must be a sequence of sentences, each a sequence of tags, not strings; "
                "wrap a single sentence in a list"
            )
    true, pred = list(true), list(pred)
    if len(true) != len(pred):
        raise DataError(f"true has {len(true)} sentences but pred has {len(pred)}")
    if not true:
        raise EmptyCorpusError("no sentences to score (true and pred are empty)")
    for i, (t, p) in enumerate(zip(true, pred, strict=True)):
        if len(t) != len(p):
            raise DataError(f"sentence {i} has {len(t)} true tags but {len(p)} predicted tags")
    if not any(true):
        raise EmptyCorpusError(f"no tags to score (all {len(true)} sentences are empty)")
    return true, pred


def _scores(correct: int, predicted: int, support: int) -> EntityScores:
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return EntityScores(precision, recall, f1, support, predicted, correct)


# --8<-- [start:entity_scores]
def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> EntityReport:
    """Entity-level precision, recall and F1 (micro, macro, weighted, per type), as conlleval.

    Args:
        true: The gold tags, one sequence of tags per sentence.
        pred: The predicted tags, the same number of sentences of the same lengths.

    Raises:
        DataError: Different numbers of sentences, a sentence of different lengths (named by
            its index), or a tag that is not BIO/IOBES.
        EmptyCorpusError: No sentences, or only empty ones.

    >>> r = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    >>> r.precision, r.recall, r.per_type["LOC"].f1, r.per_type["ORG"].predicted
    (0.5, 0.5, 0.0, 1)
    """
    true, pred = _check(true, pred)
    gold: dict[str, set[tuple[int, int, int]]] = {}
    found: dict[str, set[tuple[int, int, int]]] = {}
    for which, sentences, entities in (("true", true, gold), ("pred", pred, found)):
        for s, tags in enumerate(sentences):
            for type_, start, end in _entities(tags, f" of {which} sentence {s}"):
                entities.setdefault(type_, set()).add((s, start, end))
    per_type = {}
    for type_ in sorted(gold.keys() | found.keys()):
        g, f = gold.get(type_, set()), found.get(type_, set())
        per_type[type_] = _scores(len(g & f), len(f), len(g))
    rows = list(per_type.values())
    correct = sum(r.correct for r in rows)
    predicted = sum(r.predicted for r in rows)
    support = sum(r.support for r in rows)
    n = len(rows)
    macro = EntityScores(
        precision=sum(r.precision for r in rows) / n if n else 0.0,
        recall=sum(r.recall for r in rows) / n if n else 0.0,
        f1=sum(r.f1 for r in rows) / n if n else 0.0,
        support=support,
        predicted=predicted,
        correct=correct,
    )
    weighted = EntityScores(
        precision=sum(r.precision * r.support for r in rows) / support if support else 0.0,
        recall=sum(r.recall * r.support for r in rows) / support if support else 0.0,
        f1=sum(r.f1 * r.support for r in rows) / support if support else 0.0,
        support=support,
        predicted=predicted,
        correct=correct,
    )
    return EntityReport(per_type, _scores(correct, predicted, support), macro, weighted)


# --8<-- [end:entity_scores]


def token_accuracy(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """The fraction of tokens whose predicted tag equals the true tag (``O`` tokens included).

    Raises:
        DataError: Different numbers of sentences or a sentence of different lengths.
        EmptyCorpusError: No sentences, or only empty ones.

    >>> token_accuracy([["B-PER", "I-PER", "O"], ["O"]], [["B-PER", "O", "O"], ["O"]])
    0.75
    """
    true, pred = _check(true, pred)
    correct = sum(
        t == p for ts, ps in zip(true, pred, strict=True) for t, p in zip(ts, ps, strict=True)
    )
    return correct / sum(len(ts) for ts in true)
