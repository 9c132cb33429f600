"""The entry points most callers need: :func:`load_tokenizer`, :func:`train_tokenizer`, and
:func:`gpt2_tokenizer`.

Chapter: ``docs/chapters/02-tokenization.md``.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from groundwork.errors import ConfigError
from groundwork.tokenize.base import Tokenizer
from groundwork.tokenize.bpe import ByteLevelBPE
from groundwork.tokenize.char import CharTokenizer
from groundwork.tokenize.wordpiece import BERT_SPECIAL_TOKENS, WordPiece

TokenizerKind = Literal["bpe", "wordpiece", "char"]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load any ``tokenizer.json`` we support, choosing the class from its model type.

    ``path`` may also be a directory holding ``tokenizer.json`` (a run directory).

    Raises:
        TokenizerError: the file is missing, truncated, or of a model type we do not implement.
    """
    return Tokenizer.load(path)


def gpt2_tokenizer() -> ByteLevelBPE:
    """GPT-2's own byte-level BPE, read from the ``gpt2-bpe`` data source (fetched if missing)."""
    from groundwork import corpus  # corpus sits above tokenize: imported only when needed

    files = corpus.fetch("gpt2-bpe")
    return ByteLevelBPE.from_gpt2_files(files / "encoder.json", files / "vocab.bpe")


def train_tokenizer(
    kind: TokenizerKind,
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] | None = None,
    min_frequency: int = 0,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a tokenizer of the given kind.

    Args:
        kind: ``"bpe"`` (byte-level, GPT-2 style), ``"wordpiece"`` (BERT style) or ``"char"``.
        texts: training documents.
        vocab_size: the final vocabulary size (for ``"char"``, the most it may hold).
        special_tokens: defaults to ``["<|endoftext|>"]`` for bpe and char, and to
            ``[PAD] [UNK] [CLS] [SEP] [MASK]`` for wordpiece.
        min_frequency: the least count a pair needs to be merged (bpe, wordpiece).
        show_progress: show progress bars.

    Raises:
        ConfigError: unknown ``kind`` or a ``vocab_size`` too small for the alphabet.
        EmptyCorpusError: ``texts`` holds no text.

    Example:
        >>> tok = train_tokenizer("bpe", ["to be or not to be"], vocab_size=260)
        >>> tok.decode(tok.encode("to be"))
        'to be'
    """
    if kind == "bpe":
        return ByteLevelBPE.train(
            texts,
            vocab_size,
            special_tokens=("<|endoftext|>",) if special_tokens is None else special_tokens,
            min_frequency=min_frequency,
            show_progress=show_progress,
        )
    if kind == "wordpiece":
        return WordPiece.train(
            texts,
            vocab_size,
            special_tokens=BERT_SPECIAL_TOKENS if special_tokens is None else special_tokens,
            min_frequency=min_frequency,
            show_progress=show_progress,
        )
    if kind == "char":
        return CharTokenizer.train(
            texts,
            vocab_size,
            special_tokens=("<|endoftext|>",) if special_tokens is None else special_tokens,
        )
    raise ConfigError(f"unknown tokenizer kind {kind!r}: choose one of 'bpe', 'wordpiece', 'char'")
