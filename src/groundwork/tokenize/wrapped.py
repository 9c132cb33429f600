"""A Hugging Face ``tokenizers.Tokenizer`` behind Groundwork's :class:`Tokenizer` interface.

Our own tokenizers (char, byte-level BPE, WordPiece) cover what the book teaches; pretrained models
bring tokenizers with pipelines we do not re-implement (SmolLM2 splits digits before its byte-level
BPE, for instance). This thin wrapper lets the rest of Groundwork (generation, evaluation, the CLI)
use such a tokenizer exactly like ours. Chapter 2 (Tokenization), chapter 6 (loading real models).
"""

import json
from pathlib import Path
from typing import Any

from groundwork.tokenize.base import Tokenizer


class HFTokenizer(Tokenizer):
    """Wraps a ``tokenizers.Tokenizer``; ``encode`` adds no special tokens (BOS/EOS) itself."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = {
            t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        }

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Any) -> str:
        ids = list(ids)
        self.check_ids(ids)
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def _id_to_bytes(self, token_id: int) -> bytes:
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False)).encode("utf-8")

    def token_to_id(self, token: str) -> int | None:
        found = self.tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def id_to_token(self, token_id: int) -> str:
        self.check_ids([token_id])
        return str(self.tokenizer.id_to_token(token_id))

    @property
    def eot_id(self) -> int | None:
        for name in ("<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "[SEP]"):
            if name in self.special_tokens:
                return self.special_tokens[name]
        return None

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.tokenizer.to_str())
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | Path = "<dict>") -> "HFTokenizer":
        from tokenizers import Tokenizer as RawTokenizer

        return cls(RawTokenizer.from_str(json.dumps(data)))

    @classmethod
    def from_file(cls, path: str | Path) -> "HFTokenizer":
        """Load any ``tokenizer.json`` with the ``tokenizers`` library."""
        from groundwork.tokenize.base import read_tokenizer_json

        return cls.from_json_dict(read_tokenizer_json(path), path)
