"""Text normalisation and strict reading of text files.

Every text that enters a corpus goes through :func:`normalize_text`, so that two copies of the
same text that differ only in how they were stored (Unicode composition, ``\\r\\n`` line endings,
trailing spaces, runs of blank lines) become byte-identical: this is what makes exact
deduplication work and what keeps the byte counts used for bits-per-byte stable.
See chapter 7, "Data for large models".
"""

import re
import unicodedata
from pathlib import Path

from groundwork.errors import DataError, InputEncodingError

_TRAILING_SPACE = re.compile(r"[ \t\f\v]+$", re.MULTILINE)
_MANY_BLANK_LINES = re.compile(r"\n{4,}")


# --8<-- [start:normalize]
def normalize_text(text: str) -> str:
    r"""Normalise a text for the corpus.

    Steps, in order: Unicode NFC (so ``"e\u0301"`` and ``"é"`` are the same string); ``\r\n``
    and ``\r`` become ``\n``; trailing whitespace is removed from every line; runs of three or
    more blank lines collapse to two; leading and trailing blank lines are removed.

    Args:
        text: Any string.

    Returns:
        The normalised string (possibly empty).

    Example:
        >>> normalize_text("Cafe\u0301  \r\nline two\n\n\n\n\nend\n")
        'Café\nline two\n\n\nend'
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_SPACE.sub("", text)
    # Three or more blank lines are four or more newlines in a row; keep two blank lines.
    text = _MANY_BLANK_LINES.sub("\n\n\n", text)
    return text.strip("\n")


# --8<-- [end:normalize]


def decode_utf8(data: bytes, name: str, *, strip_bom: bool = True) -> str:
    """Decode UTF-8 bytes strictly, naming the file and byte offset of the first bad byte.

    Args:
        data: The raw bytes.
        name: What the bytes came from, for the error message (usually a path).
        strip_bom: Drop a leading byte-order mark (``False``: keep it as U+FEFF).

    Raises:
        InputEncodingError: The bytes are not valid UTF-8.
    """
    try:
        return data.decode("utf-8-sig" if strip_bom else "utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 4]
        raise InputEncodingError(
            f"{name} is not valid UTF-8: byte {bad[:1]!r} at offset {e.start} ({e.reason}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        ) from None


def read_text_file(
    path: str | Path, *, encoding: str = "utf-8", normalize: bool = True, strip_bom: bool = True
) -> str:
    """Read a text file strictly and normalise it.

    Used for the user's own corpora (``groundwork ... --text FILE``) and by the source parsers.

    Args:
        path: The file.
        encoding: ``"utf-8"`` (strict, errors name the byte offset) or another codec name such as
            ``"latin-1"`` for sources declared so.
        normalize: Apply :func:`normalize_text`.
        strip_bom: Drop a leading UTF-8 byte-order mark. With ``normalize=False`` and
            ``strip_bom=False`` the text is exactly the file's bytes, decoded.

    Returns:
        The text.

    Raises:
        DataError: The file does not exist or is a directory.
        InputEncodingError: The file is not valid in ``encoding``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file {str(path)!r} does not exist or is not a file")
    data = path.read_bytes()
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        text = decode_utf8(data, str(path), strip_bom=strip_bom)
    else:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as e:
            raise InputEncodingError(
                f"{path} is not valid {encoding}: bad byte at offset {e.start} ({e.reason})"
            ) from None
    return normalize_text(text) if normalize else text
