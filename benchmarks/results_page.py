"""Writing a measured table into its docs page (imported by the run scripts in ``scripts/``,
which put ``benchmarks/`` on their path as they do for :mod:`machine`)."""

from pathlib import Path

START, END = "<!-- table -->", "<!-- /table -->"


def write_table(page: Path, table: str) -> None:
    """Put ``table`` between the page's ``<!-- table -->`` and ``<!-- /table -->`` markers (the
    prose around them is kept), or write a page holding just the table."""
    text = page.read_text() if page.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"
    else:
        text = f"{START}\n{table}\n{END}\n"
    page.write_text(text)
