"""WordPiece, the subword tokenizer of BERT.

Implements:

* :func:`bert_normalize` — BERT's normaliser: drop control characters, map every whitespace
  character to a space, put spaces around CJK ideographs, and (when lowercasing) strip accents;
* :func:`bert_pre_tokenize` — split on whitespace and isolate every punctuation character;
* :meth:`WordPiece.encode_word` — greedy longest-match-first segmentation: take the longest
  prefix of the word that is in the vocabulary, then the longest continuation (written with the
  ``##`` prefix), and so on; a word that cannot be segmented, or is longer than
  ``max_input_chars_per_word``, becomes ``[UNK]``;
* :meth:`WordPiece.train` — a trainer. Like ``tokenizers``' ``WordPieceTrainer`` it is BPE
  (:func:`~groundwork.tokenize.merges.learn_merges`) on characters where every non-initial
  character carries the ``##`` prefix; the learned tokens become the WordPiece vocabulary. (The
  original WordPiece picks the pair that most increases the likelihood of a unigram language
  model, ``count(ab) / (count(a) count(b))``; see the chapter.)

Encodings equal those of ``tokenizers`` with all-MiniLM-L6-v2's ``tokenizer.json`` (tested).

References:
    Schuster & Nakajima (2012), "Japanese and Korean Voice Search".
    Wu et al. (2016), "Google's Neural Machine Translation System" (§4.1, wordpieces).
    Devlin et al. (2019), "BERT".

Chapter: ``docs/chapters/02-tokenization.md``.
"""

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

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

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# Character classes as BERT defines them. "Control" is any Unicode category C* except tab,
# newline and carriage return; "whitespace" is those three, space, and category Zs; every ASCII
# non-alphanumeric (e.g. "$", "^", which are not category P) counts as punctuation.
_CONTROL = regex.compile(r"[\x00\ufffd]|[^\P{C}\t\n\r]")
_WHITESPACE = regex.compile(r"[\t\n\r\p{Zs}]")
_CHINESE = regex.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)
_ACCENT = regex.compile(r"\p{Mn}")
_PUNCTUATION = r"!-/:-@\[-`{-~\p{P}"
_WORD = regex.compile(rf"[^\s{_PUNCTUATION}]+|[{_PUNCTUATION}]")


# --8<-- [start:normalize]
def bert_normalize(text: str, *, lowercase: bool = True, strip_accents: bool | None = None) -> str:
    """BERT's text normaliser: clean, space out CJK ideographs, strip accents, lowercase.

    Example:
        >>> bert_normalize("Héllo\\tWörld 中文")
        'hello world  中  文 '
    """
    text = _CONTROL.sub("", text)  # drop control characters (and NUL, U+FFFD)
    text = _WHITESPACE.sub(" ", text)  # every whitespace character becomes a space
    text = _CHINESE.sub(r" \1 ", text)  # each CJK ideograph becomes a word of its own
    if strip_accents if strip_accents is not None else lowercase:
        # decompose "é" into "e" + U+0301 (a nonspacing mark, category Mn), drop the marks
        text = _ACCENT.sub("", unicodedata.normalize("NFD", text))
    if lowercase:
        text = text.lower()
    return text


def bert_pre_tokenize(text: str) -> list[str]:
    """Split on whitespace and make every punctuation character a word of its own.

    Example:
        >>> bert_pre_tokenize("don't stop!")
        ['don', "'", 't', 'stop', '!']
    """
    return _WORD.findall(text)


# --8<-- [end:normalize]


@register_model_type("WordPiece")
class WordPiece(Tokenizer):
    """BERT's WordPiece tokenizer.

    Args:
        vocab: token -> id; continuation pieces carry the ``##`` prefix (``"##ing"``).
        unk_token: the token for words that cannot be segmented.
        lowercase: lowercase (and strip accents) in the normaliser, as uncased BERT.
        strip_accents: strip accents; ``None`` means "when lowercasing".
        max_input_chars_per_word: longer words become ``unk_token``.
        special_tokens: special token -> id; default: the BERT ones found in ``vocab``.

    Example:
        >>> wp = WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "!": 4})
        >>> wp.encode("Unaffable!"), wp.encode("xyz")
        ([1, 2, 3, 4], [0])
    """

    continuing_subword_prefix = "##"

    def __init__(
        self,
        vocab: Mapping[str, int],
        *,
        unk_token: str = "[UNK]",
        lowercase: bool = True,
        strip_accents: bool | None = None,
        max_input_chars_per_word: int = 100,
        special_tokens: Mapping[str, int] | None = None,
        handle_chinese_chars: bool = True,
        clean_text: bool = True,
    ) -> None:
        self.vocab = dict(vocab)
        if unk_token not in self.vocab:
            raise TokenizerError(f"the WordPiece vocabulary has no unknown token {unk_token!r}")
        self.unk_token = unk_token
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.max_input_chars_per_word = max_input_chars_per_word
        self.handle_chinese_chars = handle_chinese_chars
        self.clean_text = clean_text
        if special_tokens is None:
            special_tokens = {t: self.vocab[t] for t in BERT_SPECIAL_TOKENS if t in self.vocab}
        self.special_tokens = dict(special_tokens)
        n = max(self.vocab.values(), default=-1) + 1
        self._id_to_token: list[str | None] = [None] * n
        for t, i in self.vocab.items():
            self._id_to_token[i] = t
        self._splitter = SpecialSplitter(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        self.check_ids([token_id])
        return self._id_to_token[token_id] or ""

    def _id_to_bytes(self, token_id: int) -> bytes:
        token = self._id_to_token[token_id] or ""
        if token.startswith(self.continuing_subword_prefix):
            return token[len(self.continuing_subword_prefix) :].encode("utf-8")
        return token.encode("utf-8")

    def decode(self, ids: Sequence[int]) -> str:
        """Join the pieces: ``##`` pieces attach to the previous one, words get a space between.

        WordPiece loses information (case, accents, spacing around punctuation), so
        ``decode(encode(s))`` is only an approximation of ``s``.

        Example:
            >>> WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3}).decode([1, 2, 3, 1])
            'unaffable un'
        """
        self.check_ids(ids)
        out = ""
        for i in ids:
            token = self._id_to_token[i] or ""
            if token.startswith(self.continuing_subword_prefix):
                out += token[len(self.continuing_subword_prefix) :]
            else:
                out += (" " if out else "") + token
        return out

    @property
    def eot_id(self) -> int | None:
        """``[SEP]``, BERT's separator, if present."""
        return self.special_tokens.get("[SEP]")

    # --8<-- [start:encode_word]
    def encode_word(self, word: str) -> list[int]:
        """Greedy longest-match-first segmentation of one (normalised) word.

        Example: with ``un``, ``##aff``, ``##able`` in the vocabulary, ``"unaffable"`` is
        ``un`` (the longest prefix in the vocabulary), then ``##aff``, then ``##able``.
        """
        if len(word) > self.max_input_chars_per_word:
            return [self.vocab[self.unk_token]]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:  # shrink the candidate until it is in the vocabulary
                piece = word[start:end]
                if start > 0:
                    piece = self.continuing_subword_prefix + piece
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:  # no prefix of the rest is known: the whole word is unknown
                return [self.vocab[self.unk_token]]
            start = end
        return ids

    # --8<-- [end:encode_word]

    def normalize(self, text: str) -> str:
        """Apply the BERT normaliser with this tokenizer's settings."""
        if self.clean_text and self.handle_chinese_chars:
            return bert_normalize(text, lowercase=self.lowercase, strip_accents=self.strip_accents)
        raise TokenizerError("only clean_text=True and handle_chinese_chars=True are supported")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Encode text; with ``add_special_tokens`` wrap it as BERT does: ``[CLS] ... [SEP]``.

        Example:
            >>> wp = WordPiece({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hi": 3})
            >>> wp.encode("Hi"), wp.encode("Hi", add_special_tokens=True)
            ([3], [1, 3, 2])
        """
        ids: list[int] = []
        if add_special_tokens:
            ids.append(self.special_tokens["[CLS]"])
        for chunk in self._splitter.split(text):
            if isinstance(chunk, int):
                ids.append(chunk)
                continue
            for word in bert_pre_tokenize(self.normalize(chunk)):
                cached = self._cache.get(word)
                if cached is None:
                    cached = self._cache[word] = self.encode_word(word)
                ids.extend(cached)
        if add_special_tokens:
            ids.append(self.special_tokens["[SEP]"])
        return ids

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_vocab(cls, vocab_txt: str | Path, **kwargs: Any) -> "WordPiece":
        """Load a BERT ``vocab.txt`` (one token per line, the line number is the id)."""
        path = Path(vocab_txt)
        if not path.is_file():
            raise TokenizerError(
                f"WordPiece vocabulary {str(path)!r} does not exist: pass a BERT vocab.txt"
            )
        tokens = path.read_text("utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        return cls({t: i for i, t in enumerate(tokens)}, **kwargs)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
        min_frequency: int = 0,
        lowercase: bool = True,
        show_progress: bool = False,
    ) -> "WordPiece":
        """Train a WordPiece vocabulary (BPE with ``##`` continuation symbols).

        The vocabulary is: the special tokens, every character seen at the start of a word, every
        character seen inside a word (as ``##c``), then the merged tokens in the order learned.

        Raises:
            ConfigError: ``vocab_size`` cannot hold the specials and the character alphabet.
            EmptyCorpusError: ``texts`` holds no words.
        """
        specials = list(dict.fromkeys(special_tokens))
        if "[UNK]" not in specials:
            specials.append("[UNK]")
        splitter = SpecialSplitter({s: i for i, s in enumerate(specials)})
        word_counts: Counter[str] = Counter()
        for text in texts:
            for chunk in splitter.split(text):
                if isinstance(chunk, str):
                    normalized = bert_normalize(chunk, lowercase=lowercase)
                    word_counts.update(bert_pre_tokenize(normalized))
        if not word_counts:
            raise EmptyCorpusError(
                "cannot train a WordPiece tokenizer on an empty corpus: pass non-empty texts"
            )
        prefix = cls.continuing_subword_prefix
        initial = sorted({w[0] for w in word_counts})
        inner = sorted({prefix + c for w in word_counts for c in w[1:]})
        id_to_token = list(dict.fromkeys([*specials, *initial, *inner]))
        if vocab_size < len(id_to_token):
            raise ConfigError(
                f"vocab_size={vocab_size} is smaller than the alphabet: the specials and the "
                f"characters of the corpus already take {len(id_to_token)} entries"
            )
        token_id = {t: i for i, t in enumerate(id_to_token)}
        words = [[token_id[w[0]], *(token_id[prefix + c] for c in w[1:])] for w in word_counts]
        learn_merges(
            words,
            list(word_counts.values()),
            id_to_token,
            vocab_size,
            min_frequency=min_frequency,
            continuing_subword_prefix=prefix,
            show_progress=show_progress,
        )
        # learn_merges joins "##i" + "##ng" into "##ing" and "play" + "##ing" into "playing"
        vocab = {t: i for i, t in enumerate(id_to_token)}
        return cls(
            vocab,
            lowercase=lowercase,
            special_tokens={s: vocab[s] for s in specials},
        )

    # --- tokenizer.json ---------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        cls_id, sep_id = self.special_tokens.get("[CLS]"), self.special_tokens.get("[SEP]")
        post = None
        if cls_id is not None and sep_id is not None:
            cls_t = {"SpecialToken": {"id": "[CLS]", "type_id": 0}}
            sep_t = {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            post = {
                "type": "TemplateProcessing",
                "single": [cls_t, {"Sequence": {"id": "A", "type_id": 0}}, sep_t],
                "pair": [
                    cls_t,
                    {"Sequence": {"id": "A", "type_id": 0}},
                    sep_t,
                    {"Sequence": {"id": "B", "type_id": 1}},
                    {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
                ],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [cls_id], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [sep_id], "tokens": ["[SEP]"]},
                },
            }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens_json(self.special_tokens),
            "normalizer": {
                "type": "BertNormalizer",
                "clean_text": self.clean_text,
                "handle_chinese_chars": self.handle_chinese_chars,
                "strip_accents": self.strip_accents,
                "lowercase": self.lowercase,
            },
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": post,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {
                "type": "WordPiece",
                "unk_token": self.unk_token,
                "continuing_subword_prefix": self.continuing_subword_prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word,
                "vocab": {t: i for t, i in sorted(self.vocab.items(), key=lambda kv: kv[1])},
            },
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | Path = "<dict>") -> "WordPiece":
        kind = model_type(data, path)
        if kind != "WordPiece":
            raise unsupported(path, f"a {kind!r} model where a WordPiece model was expected")
        model = data["model"]
        if model.get("continuing_subword_prefix", "##") != "##":
            raise unsupported(path, "a continuing_subword_prefix other than '##'")
        norm = data.get("normalizer") or {}
        if norm.get("type") != "BertNormalizer":
            raise unsupported(path, f"the normalizer {norm.get('type')!r} with WordPiece")
        pre = data.get("pre_tokenizer") or {}
        if pre.get("type") != "BertPreTokenizer":
            raise unsupported(path, f"the pre-tokenizer {pre.get('type')!r} with WordPiece")
        return cls(
            model["vocab"],
            unk_token=model.get("unk_token", "[UNK]"),
            lowercase=bool(norm.get("lowercase", True)),
            strip_accents=norm.get("strip_accents"),
            max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
            special_tokens=special_tokens_from_json(data),
            handle_chinese_chars=bool(norm.get("handle_chinese_chars", True)),
            clean_text=bool(norm.get("clean_text", True)),
        )
