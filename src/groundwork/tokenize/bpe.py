"""Byte-level byte-pair encoding (BPE), as in GPT-2.

Implements:

* :func:`bytes_to_unicode` — GPT-2's reversible map from the 256 byte values to 256 printable
  unicode characters, so every byte string is a string of "visible" characters;
* :data:`GPT2_PATTERN` — GPT-2's pre-tokenization regex (contractions, letters, numbers,
  punctuation runs, whitespace), which stops merges from crossing word boundaries;
* training with :func:`~groundwork.tokenize.merges.learn_merges` on bytes (shared with
  WordPiece), giving the same merges as the ``tokenizers`` library's ``BpeTrainer`` (tested);
* :class:`ByteLevelBPE` — encoding by merge ranks with a per-word cache, special tokens,
  decoding back to bytes, GPT-2's real files (:meth:`ByteLevelBPE.from_gpt2_files`) and
  ``tokenizer.json`` input/output.

References:
    Sennrich, Haddow, Birch (2016), "Neural Machine Translation of Rare Words with Subword Units".
    Radford et al. (2019), "Language Models are Unsupervised Multitask Learners" (GPT-2, §2.2).

Chapter: ``docs/chapters/02-tokenization.md``.
"""

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex
from tqdm import tqdm

from groundwork.errors import ConfigError, EmptyCorpusError, TokenizerError
from groundwork.tokenize.base import (
    SpecialSplitter,
    Tokenizer,
    added_tokens_json,
    model_type,
    register_model_type,
    special_tokens_from_json,
    unsupported,
)
from groundwork.tokenize.merges import learn_merges

# --8<-- [start:regex]
#: GPT-2's pre-tokenization pattern: English contractions, an optional space followed by letters,
#: numbers, or other symbols, and whitespace (a whitespace run keeps its last space for the word
#: that follows: "a   b" -> ["a", "  ", " b"]).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# --8<-- [end:regex]

_GPT2_RE = regex.compile(GPT2_PATTERN)


# --8<-- [start:bytes_to_unicode]
@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value to a printable unicode character.

    Bytes that are already printable, non-space Latin-1 characters (``!`` to ``~``, ``¡`` to
    ``¬``, ``®`` to ``ÿ``: 188 of them) map to themselves; the other 68 (control characters,
    space, ...) map to ``chr(256)``, ``chr(257)``, ... in order. So the space byte 32 becomes
    ``"Ġ"`` (``chr(288)``) and a newline ``"Ċ"``.

    Example:
        >>> m = bytes_to_unicode()
        >>> m[ord("a")], m[ord(" ")], m[ord("\\n")], len(set(m.values()))
        ('a', 'Ġ', 'Ċ', 256)
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


# --8<-- [end:bytes_to_unicode]


def byte_alphabet() -> list[str]:
    """The 256 byte-level characters sorted by code point (the order ``tokenizers`` gives ids)."""
    return sorted(bytes_to_unicode().values())


@register_model_type("BPE")
class ByteLevelBPE(Tokenizer):
    """GPT-2 style byte-level BPE tokenizer.

    Text is split around special tokens, each remaining chunk is split by :data:`GPT2_PATTERN`
    into "words", each word's UTF-8 bytes are written with :func:`bytes_to_unicode`, and the
    merges are applied to each word in rank order. Words are cached, so encoding a large corpus
    costs one regex pass plus the BPE of each *distinct* word.

    Args:
        vocab: token (in byte-level characters, e.g. ``"Ġthe"``) -> id, including special tokens.
        merges: the merges as pairs of tokens, in rank order.
        special_tokens: special token string -> id (e.g. ``{"<|endoftext|>": 50256}``).
        add_prefix_space: put a space before text that does not start with one (RoBERTa style).

    Example:
        >>> bpe = ByteLevelBPE.train(["low lower lowest"] * 3, vocab_size=256 + 1 + 3)
        >>> bpe.merges
        [('l', 'o'), ('lo', 'w'), ('Ġ', 'low')]
        >>> bpe.decode(bpe.encode("lowly"))
        'lowly'
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: Mapping[str, int] | None = None,
        *,
        add_prefix_space: bool = False,
    ) -> None:
        self.vocab = dict(vocab)
        self.merges = [(a, b) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        for s, i in self.special_tokens.items():
            self.vocab.setdefault(s, i)
        self.add_prefix_space = add_prefix_space
        n = max(self.vocab.values(), default=-1) + 1
        self._id_to_token: list[str | None] = [None] * n
        for t, i in self.vocab.items():
            self._id_to_token[i] = t
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._byte_encoder = bytes_to_unicode()
        self._byte_decoder = {c: b for b, c in self._byte_encoder.items()}
        self._splitter = SpecialSplitter(self.special_tokens)
        self._cache: dict[str, list[int]] = {}
        self._bytes = [self._token_bytes(t) for t in self._id_to_token]

    # --- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        self.check_ids([token_id])
        token = self._id_to_token[token_id]
        if token is None:
            raise TokenizerError(f"id {token_id} has no token in this vocabulary")
        return token

    def _id_to_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def _token_bytes(self, token: str | None) -> bytes:
        if token is None:
            return b""
        if token in self.special_tokens:
            return token.encode("utf-8")
        return bytes(self._byte_decoder[c] for c in token)

    # --- encoding ---------------------------------------------------------------------------

    # --8<-- [start:bpe_word]
    def _bpe(self, word: str) -> list[str]:
        """Apply the merges to one word (in byte-level characters), lowest rank first.

        Example: with merges ``[("l", "o"), ("lo", "w")]``, ``"lower"`` goes
        ``l o w e r`` -> ``lo w e r`` -> ``low e r``.
        """
        parts = list(word)
        while len(parts) > 1:
            # the adjacent pair that was learned earliest (lowest rank)
            best_rank, best = None, None
            for pair in itertools.pairwise(parts):
                r = self.ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best = r, pair
            if best is None:
                break
            a, b = best
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every occurrence, left to right
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    # --8<-- [end:bpe_word]

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            chars = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
            ids = [self.vocab[p] for p in self._bpe(chars)]
            if len(self._cache) < 1_000_000:
                self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Encode text to ids: specials first, then GPT-2 pre-tokenization, then BPE per word.

        Example:
            >>> ByteLevelBPE.train(["aaab"], vocab_size=258).encode("aaab")  # one merge: (a, a)
            [257, 65, 66]
        """
        ids: list[int] = []
        for chunk in self._splitter.split(text):
            if isinstance(chunk, int):
                ids.append(chunk)
                continue
            if self.add_prefix_space and not chunk.startswith(" "):
                chunk = " " + chunk
            for word in _GPT2_RE.findall(chunk):
                ids.extend(self._encode_word(word))
        return ids

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> "ByteLevelBPE":
        """Load GPT-2's own ``encoder.json`` (token -> id) and ``vocab.bpe`` (merges).

        ``<|endoftext|>`` (id 50256) becomes a special token.

        Raises:
            TokenizerError: a file is missing or malformed.
        """
        encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        for p in (encoder_json, vocab_bpe):
            if not p.is_file():
                raise TokenizerError(
                    f"GPT-2 tokenizer file {str(p)!r} does not exist: fetch it with "
                    "`groundwork data fetch gpt2-bpe`"
                )
        try:
            vocab = json.loads(encoder_json.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise TokenizerError(
                f"{str(encoder_json)!r} is not valid JSON ({exc}): fetch it again"
            ) from exc
        merges = []
        for line in vocab_bpe.read_text("utf-8").splitlines():
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise TokenizerError(f"{str(vocab_bpe)!r}: bad merge line {line!r}")
            merges.append((parts[0], parts[1]))
        specials = {"<|endoftext|>": vocab["<|endoftext|>"]} if "<|endoftext|>" in vocab else {}
        return cls(vocab, merges, specials)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        min_frequency: int = 0,
        show_progress: bool = False,
    ) -> "ByteLevelBPE":
        """Train a byte-level BPE on ``texts``.

        Ids: the special tokens first (0, 1, ...), then the 256 byte-level characters sorted by
        code point, then one id per merge, the same layout as ``tokenizers``' ``BpeTrainer``
        with ``initial_alphabet=ByteLevel.alphabet()``. One difference: we split the special
        tokens out of the training text, while ``tokenizers`` pre-tokenizes them like any text
        (so a corpus that contains ``<|endoftext|>`` trains slightly differently there).

        Args:
            texts: training documents.
            vocab_size: the final vocabulary size, specials and the 256 bytes included.
            special_tokens: special tokens (split out of the training text, never merged).
            min_frequency: a pair must occur at least this often to be merged.
            show_progress: show progress bars.

        Raises:
            ConfigError: ``vocab_size`` is smaller than ``256 + len(special_tokens)``.
            EmptyCorpusError: ``texts`` holds no text.
        """
        specials = list(dict.fromkeys(special_tokens))
        if vocab_size < 256 + len(specials):
            raise ConfigError(
                f"vocab_size={vocab_size} is smaller than the byte-level alphabet: it must be at "
                f"least 256 + {len(specials)} special tokens = {256 + len(specials)}"
            )
        splitter = SpecialSplitter({s: i for i, s in enumerate(specials)})
        word_counts: Counter[str] = Counter()
        for text in tqdm(texts, desc="pre-tokenize", unit="doc", disable=not show_progress):
            for chunk in splitter.split(text):
                if isinstance(chunk, str):
                    word_counts.update(_GPT2_RE.findall(chunk))
        if not word_counts:
            raise EmptyCorpusError(
                "cannot train a BPE tokenizer on an empty corpus: pass at least one non-empty text"
            )
        id_to_token = [*specials, *byte_alphabet()]
        char_id = {c: i for i, c in enumerate(id_to_token) if i >= len(specials)}
        byte_id = [char_id[bytes_to_unicode()[b]] for b in range(256)]
        words = [[byte_id[b] for b in w.encode("utf-8")] for w in word_counts]
        counts = list(word_counts.values())
        merges = learn_merges(
            words,
            counts,
            id_to_token,
            vocab_size,
            min_frequency=min_frequency,
            show_progress=show_progress,
        )
        vocab = {t: i for i, t in enumerate(id_to_token)}
        return cls(
            vocab,
            [(id_to_token[a], id_to_token[b]) for a, b in merges],
            {s: i for i, s in enumerate(specials)},
        )

    # --- tokenizer.json ---------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        byte_level = {
            "type": "ByteLevel",
            "add_prefix_space": self.add_prefix_space,
            "trim_offsets": True,
            "use_regex": True,
        }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens_json(self.special_tokens),
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": {**byte_level, "trim_offsets": False},
            "decoder": byte_level,
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {t: i for t, i in sorted(self.vocab.items(), key=lambda kv: kv[1])},
                "merges": [[a, b] for a, b in self.merges],
            },
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | Path = "<dict>") -> "ByteLevelBPE":
        kind = model_type(data, path)
        if kind != "BPE":
            raise unsupported(path, f"a {kind!r} model where a BPE model was expected")
        pre = data.get("pre_tokenizer") or {}
        if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
            raise unsupported(path, f"the pre-tokenizer {pre.get('type')!r} with a BPE model")
        model = data["model"]
        for option in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            if model.get(option):
                raise unsupported(path, f"the BPE option {option}={model[option]!r}")
        if data.get("normalizer"):
            raise unsupported(path, f"the normalizer {data['normalizer'].get('type')!r}")
        merges = []
        for m in model.get("merges", []):
            parts = m.split(" ") if isinstance(m, str) else m
            if len(parts) != 2:
                raise TokenizerError(f"tokenizer file {str(path)!r}: bad merge {m!r}")
            merges.append((parts[0], parts[1]))
        return cls(
            model["vocab"],
            merges,
            special_tokens_from_json(data),
            add_prefix_space=bool(pre.get("add_prefix_space", False)),
        )
