"""The :class:`Document`: one unit of text in a corpus (a play, an article, a fortune).

Splits and deduplication work on whole documents, never on lines, so that no document can leak
between the training and the held-out split (chapter 7, "Data for large models").
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """A document of a corpus.

    Attributes:
        id: Identifier, unique within its source and stable across runs (it decides the split).
        text: The cleaned text (NFC, ``\\n`` line endings, no trailing whitespace).
        source: Name of the data source it came from (``"shakespeare"``, or ``"user"``).
        meta: Free-form metadata (title, file, ...).
    """

    id: str
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
