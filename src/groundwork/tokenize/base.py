"""The common interface of every Groundwork tokenizer, and reading/writing ``tokenizer.json``.

A tokenizer maps text to a list of integer ids and back. The three tokenizers of this package
(:class:`~groundwork.tokenize.char.CharTokenizer`, :class:`~groundwork.tokenize.bpe.ByteLevelBPE`,
:class:`~groundwork.tokenize.wordpiece.WordPiece`) share the interface below, and all of them save
to and load from the Hugging Face ``tokenizers`` library's ``tokenizer.json`` format, so a file we
write loads in ``tokenizers.Tokenizer.from_file`` and encodes identically (tested in
``tests/tokenize/test_tokenizers_parity.py``).

Special tokens (``<|endoftext|>``, ``[CLS]``, ...) are split out of the text *before* any other
processing, exactly like ``tokenizers``' added vocabulary: the special token string in the text
becomes its single id and is never split into pieces.

Chapter: ``docs/chapters/02-tokenization.md``.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import regex

from groundwork.errors import TokenIdError, TokenizerError


class Tokenizer(ABC):
    """A reversible map between text and integer token ids.

    Subclasses implement :meth:`encode`, :meth:`decode`, the vocabulary look-ups and
    :meth:`to_json_dict` / :meth:`from_json_dict` for the ``tokenizer.json`` format.
    """

    #: Special token strings and their ids, e.g. ``{"<|endoftext|>": 50256}``.
    special_tokens: dict[str, int]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """The number of ids: every valid id lies in ``range(vocab_size)``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Turn ``text`` into token ids."""

    @abstractmethod
    def _id_to_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes (or raw bytes, for byte-level models) one id stands for in ``decode``."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry (as stored in ``tokenizer.json``), or ``None``."""

    @abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry (as stored in ``tokenizer.json``) of an id."""

    @abstractmethod
    def to_json_dict(self) -> dict[str, Any]:
        """The ``tokenizer.json`` contents as a dictionary."""

    @classmethod
    @abstractmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | Path = "<dict>") -> "Tokenizer":
        """Build the tokenizer from parsed ``tokenizer.json`` contents (``path`` for messages)."""

    # --- shared behaviour -------------------------------------------------------------------

    @property
    def eot_id(self) -> int | None:
        """The end-of-text (document separator) id, or ``None`` if the tokenizer has none."""
        for name in ("<|endoftext|>", "</s>", "[SEP]", "<eos>"):
            if name in self.special_tokens:
                return self.special_tokens[name]
        return None

    def check_ids(self, ids: Sequence[int]) -> None:
        """Raise :class:`TokenIdError` naming the first id outside ``range(vocab_size)``."""
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise TokenIdError(
                    f"token id {i} is out of range: this tokenizer's vocab_size is {n}, "
                    f"so ids must lie in 0..{n - 1}"
                )

    def decode(self, ids: Sequence[int]) -> str:
        """Turn token ids back into text.

        Raises:
            TokenIdError: if an id is negative or ``>= vocab_size``.
        """
        self.check_ids(ids)
        return b"".join(self._id_to_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The human-readable text each id contributes (for coloured display of a tokenization).

        Byte-level pieces that are only part of a UTF-8 character show as ``"�"``.
        """
        self.check_ids(ids)
        return [self._id_to_bytes(i).decode("utf-8", errors="replace") for i in ids]

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (``tokenizers`` loads it too); return the path."""
        from groundwork.fileio import atomic_write

        path = Path(path)
        text = json.dumps(self.to_json_dict(), ensure_ascii=False, indent=2)
        atomic_write(path, text.encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Read a ``tokenizer.json`` written by us or by the ``tokenizers`` library.

        Raises:
            TokenizerError: the file is missing, not valid JSON, or of another model type.
        """
        data = read_tokenizer_json(path)
        if cls is Tokenizer:  # Tokenizer.load: choose the class from the file's model type
            return tokenizer_class(data, path).from_json_dict(data, path)
        return cls.from_json_dict(data, path)


_CLASSES: dict[str, type[Tokenizer]] = {}
"""Our tokenizer class for each ``tokenizer.json`` model type, filled by
:func:`register_model_type` (``"BPE"``, ``"WordPiece"``, ``"WordLevel"``)."""

_T = TypeVar("_T", bound=type[Tokenizer])


def register_model_type(kind: str) -> Callable[[_T], _T]:
    """Class decorator: ``load_tokenizer`` reads ``tokenizer.json`` files of model type ``kind``
    with the decorated class (the three tokenizer modules register theirs)."""

    def register(cls: _T) -> _T:
        _CLASSES[kind] = cls
        return cls

    return register


def tokenizer_class(data: Mapping[str, Any], path: str | Path) -> type[Tokenizer]:
    """The registered class for a parsed ``tokenizer.json``.

    Raises:
        TokenizerError: a model type we do not implement.
    """
    kind = model_type(data, path)
    if kind not in _CLASSES:
        raise unsupported(path, f"the model type {kind!r}")
    return _CLASSES[kind]


def read_tokenizer_json(path: str | Path) -> dict[str, Any]:
    """Parse a ``tokenizer.json`` file, raising :class:`TokenizerError` with advice on failure."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(
            f"tokenizer file {str(path)!r} does not exist: pass the path of a tokenizer.json "
            "(train one with `groundwork.tokenize.train_tokenizer` and `.save(path)`)"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(
            f"tokenizer file {str(path)!r} is not valid JSON ({exc}); it may be truncated: "
            "save or download it again"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(
            f"tokenizer file {str(path)!r} has no 'model' object: it is not a tokenizer.json "
            "in the Hugging Face `tokenizers` format"
        )
    return data


def model_type(data: Mapping[str, Any], path: str | Path) -> str:
    """The ``model.type`` of a parsed ``tokenizer.json`` (old files without it: guess)."""
    model = data["model"]
    kind = model.get("type")
    if kind is None:  # files written by old `tokenizers` versions omit the type
        if "merges" in model:
            kind = "BPE"
        elif "continuing_subword_prefix" in model:
            kind = "WordPiece"
        elif "vocab" in model and isinstance(model["vocab"], dict):
            kind = "WordLevel"
    if not isinstance(kind, str):
        raise TokenizerError(f"tokenizer file {str(path)!r}: cannot tell the model type")
    return kind


def unsupported(path: str | Path, what: str) -> TokenizerError:
    """The error for a ``tokenizer.json`` feature we do not implement."""
    return TokenizerError(
        f"tokenizer file {str(path)!r} uses {what}, which Groundwork does not support: "
        "use a byte-level BPE (GPT-2 style), BERT WordPiece or character-level tokenizer.json"
    )


def added_tokens_json(special_tokens: Mapping[str, int]) -> list[dict[str, Any]]:
    """The ``added_tokens`` list of ``tokenizer.json`` for our special tokens."""
    return [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
    ]


def special_tokens_from_json(data: Mapping[str, Any]) -> dict[str, int]:
    """The ``added_tokens`` of a ``tokenizer.json`` as ``{content: id}``."""
    return {t["content"]: int(t["id"]) for t in data.get("added_tokens") or []}


class SpecialSplitter:
    """Splits text around special tokens: ``"a<|endoftext|>b"`` -> ``["a", 50256, "b"]``.

    The longest special token wins where two could match at the same place.

    Example:
        >>> list(SpecialSplitter({"<s>": 1}).split("x<s>y"))
        ['x', 1, 'y']
    """

    def __init__(self, special_tokens: Mapping[str, int]) -> None:
        self.special_tokens = dict(special_tokens)
        names = sorted(self.special_tokens, key=len, reverse=True)
        self.pattern = regex.compile("|".join(regex.escape(s) for s in names)) if names else None

    def split(self, text: str) -> Iterator[str | int]:
        """Yield the plain-text chunks (non-empty ``str``) and special-token ids (``int``)."""
        if self.pattern is None:
            if text:
                yield text
            return
        start = 0
        for m in self.pattern.finditer(text):
            if m.start() > start:
                yield text[start : m.start()]
            yield self.special_tokens[m.group()]
            start = m.end()
        if start < len(text):
            yield text[start:]
