"""Character-level tokenization: one id per unicode character.

The simplest tokenizer that can represent text: the vocabulary is the set of characters seen in
training (plus special tokens and an unknown token for characters never seen). Sequences are as
long as the text, which is why language models moved to subwords (see the chapter).

In ``tokenizer.json`` it is a ``WordLevel`` model whose pre-tokenizer isolates every character
(a ``Split`` on the regex ``[\\s\\S]``) and whose decoder concatenates (``Fuse``), so the
``tokenizers`` library loads our file and encodes identically (tested).

Chapter: ``docs/chapters/02-tokenization.md``.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from groundwork.errors import ConfigError, EmptyCorpusError
from groundwork.tokenize.base import (
    SpecialSplitter,
    Tokenizer,
    added_tokens_json,
    model_type,
    register_model_type,
    special_tokens_from_json,
    unsupported,
)

UNK_TOKEN = "<unk>"
_CHAR_SPLIT = {
    "type": "Split",
    "pattern": {"Regex": r"[\s\S]"},
    "behavior": "Isolated",
    "invert": False,
}


@register_model_type("WordLevel")
class CharTokenizer(Tokenizer):
    """One token per character.

    Args:
        vocab: token -> id: single characters, the unknown token and the special tokens.
        special_tokens: special token -> id.
        unk_token: the token for characters outside the vocabulary.

    Example:
        >>> tok = CharTokenizer.train(["hello"], vocab_size=100)
        >>> tok.encode("hello"), tok.decode(tok.encode("hello"))
        ([3, 2, 4, 4, 5], 'hello')
        >>> tok.encode("help")  # "p" was never seen: unknown
        [3, 2, 4, 1]
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        special_tokens: Mapping[str, int] | None = None,
        *,
        unk_token: str = UNK_TOKEN,
    ) -> None:
        self.vocab = dict(vocab)
        self.special_tokens = dict(special_tokens or {})
        self.unk_token = unk_token
        self.vocab.setdefault(unk_token, len(self.vocab))
        self.unk_id = self.vocab[unk_token]
        n = max(self.vocab.values()) + 1
        self._id_to_token: list[str] = [""] * n
        for t, i in self.vocab.items():
            self._id_to_token[i] = t
        self._splitter = SpecialSplitter(self.special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        self.check_ids([token_id])
        return self._id_to_token[token_id]

    def _id_to_bytes(self, token_id: int) -> bytes:
        return self._id_to_token[token_id].encode("utf-8")

    def encode(self, text: str) -> list[int]:
        """One id per character (special tokens as one id each)."""
        ids: list[int] = []
        get, unk = self.vocab.get, self.unk_id
        for chunk in self._splitter.split(text):
            if isinstance(chunk, int):
                ids.append(chunk)
            else:
                ids.extend(get(c, unk) for c in chunk)
        return ids

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
    ) -> "CharTokenizer":
        """Build the vocabulary from the characters of ``texts``.

        Ids: the special tokens, the unknown token, then the characters sorted by code point. If
        there are more characters than fit in ``vocab_size``, the most frequent are kept.

        Raises:
            ConfigError: ``vocab_size`` cannot hold the specials, the unknown token and a char.
            EmptyCorpusError: ``texts`` holds no characters.
        """
        specials = list(dict.fromkeys(special_tokens))
        splitter = SpecialSplitter({s: i for i, s in enumerate(specials)})
        counts: Counter[str] = Counter()
        for text in texts:
            for chunk in splitter.split(text):
                if isinstance(chunk, str):
                    counts.update(chunk)
        if not counts:
            raise EmptyCorpusError(
                "cannot train a character tokenizer on an empty corpus: pass non-empty texts"
            )
        room = vocab_size - len(specials) - 1
        if room < 1:
            raise ConfigError(
                f"vocab_size={vocab_size} is too small: the {len(specials)} special tokens and "
                "the unknown token leave no room for characters"
            )
        chars = sorted(c for c, _ in counts.most_common(room))
        tokens = [*specials, UNK_TOKEN, *(c for c in chars if c not in specials)]
        vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
        return cls(vocab, {s: vocab[s] for s in specials})

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens_json(self.special_tokens),
            "normalizer": None,
            "pre_tokenizer": dict(_CHAR_SPLIT),
            "post_processor": None,
            "decoder": {"type": "Fuse"},
            "model": {
                "type": "WordLevel",
                "vocab": {t: i for t, i in sorted(self.vocab.items(), key=lambda kv: kv[1])},
                "unk_token": self.unk_token,
            },
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | Path = "<dict>") -> "CharTokenizer":
        kind = model_type(data, path)
        if kind != "WordLevel":
            raise unsupported(path, f"a {kind!r} model where a character-level model was expected")
        pre = data.get("pre_tokenizer") or {}
        if pre.get("type") != "Split" or pre.get("pattern") != _CHAR_SPLIT["pattern"]:
            raise unsupported(path, "a WordLevel model that is not character-level")
        model = data["model"]
        return cls(
            model["vocab"],
            special_tokens_from_json(data),
            unk_token=model.get("unk_token", UNK_TOKEN),
        )
