"""Tokenizers: character-level, byte-level BPE (GPT-2) and WordPiece (BERT).

All share :class:`Tokenizer` and read/write the ``tokenizers`` library's ``tokenizer.json``.
Chapter: ``docs/chapters/02-tokenization.md``.
"""

from groundwork.tokenize.api import gpt2_tokenizer, load_tokenizer, train_tokenizer
from groundwork.tokenize.base import Tokenizer
from groundwork.tokenize.bpe import GPT2_PATTERN, ByteLevelBPE, bytes_to_unicode
from groundwork.tokenize.char import CharTokenizer
from groundwork.tokenize.merges import learn_merges
from groundwork.tokenize.wordpiece import WordPiece, bert_normalize, bert_pre_tokenize
from groundwork.tokenize.wrapped import HFTokenizer

__all__ = [
    "GPT2_PATTERN",
    "ByteLevelBPE",
    "CharTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "WordPiece",
    "bert_normalize",
    "bert_pre_tokenize",
    "bytes_to_unicode",
    "gpt2_tokenizer",
    "learn_merges",
    "load_tokenizer",
    "train_tokenizer",
]
