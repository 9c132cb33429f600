"""Markdown tables, written once for every report (evaluation, classification, n-grams, word2vec).

>>> print(markdown_table(["model", "F1"], [["cnn", "0.94"]], align="lr"), end="")
| model | F1 |
|---|---:|
| cnn | 0.94 |
"""

from collections.abc import Iterable, Sequence

from groundwork.errors import ConfigError


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, align: str | None = None
) -> str:
    """A GitHub-flavoured Markdown table, one line per row, ending in a newline.

    Args:
        header: Column titles.
        rows: Cells (converted with ``str``); each row as long as ``header``.
        align: One letter per column, ``l`` (left) or ``r`` (right); default all left.
    """
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ConfigError(f"align needs one of 'l'/'r' per column ({len(header)}), got {align!r}")
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row in rows:
        if len(row) != len(header):
            raise ConfigError(f"a table row has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"
