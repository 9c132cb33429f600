"""Rebuild a byte-level BPE tokenizer from the metadata of a GGUF file.

A GGUF file carries its tokenizer as metadata rather than as a ``tokenizer.json``:

===============================  ==========================================================
``tokenizer.ggml.model``         the algorithm: ``"gpt2"`` means byte-level BPE
``tokenizer.ggml.pre``           which pre-tokenizer (text-splitting regex) the model uses
``tokenizer.ggml.tokens``        the vocabulary, id = position, spelled in GPT-2's byte alphabet
``tokenizer.ggml.merges``        the BPE merges, best first, as ``"Ġ t"`` strings
``tokenizer.ggml.token_type``    per token: 1 normal, 2 unknown, 3 control, 4 user-defined,
                                 5 unused, 6 byte
``tokenizer.ggml.*_token_id``    ``bos``, ``eos``, ``padding``, ``unknown``
``tokenizer.ggml.add_bos_token`` whether encoding prepends BOS (likewise ``add_eos_token``)
``tokenizer.chat_template``      the Jinja chat template
===============================  ==========================================================

:func:`tokenizer_from_gguf` turns these into a :class:`tokenizers.Tokenizer`: a BPE model over the
vocabulary and merges, control tokens (``<|im_start|>``, ...) matched whole as special tokens, and
the pre-tokenizer named by ``tokenizer.ggml.pre`` (llama.cpp's ``llama-vocab.cpp`` lists the
regexes per name). SmolLM2 says ``"smollm"``: each digit is split off on its own, then GPT-2's
regex applies, exactly like the ``Digits`` + ``ByteLevel`` pre-tokenizer of its original
``tokenizer.json``.

References:
    - GGUF specification, "tokenizer" keys: ggml ``docs/gguf.md``.
    - Docs: chapter 6, "Pretrained model families: loading real weights"; byte-level BPE itself is
      built from scratch in ``groundwork.tokenize.bpe``.
"""

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from groundwork.errors import TokenizerError
from groundwork.tokenize.bpe import bytes_to_unicode

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# Llama 3's split regex (numbers in runs of up to 3 digits, one leading non-letter on words).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), _gpt2()]  # "\p{N}" split off first
    )


def _llama3() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# tokenizer.ggml.pre -> the pre-tokenizer llama.cpp applies for it.
PRE_TOKENIZERS = {
    "default": _gpt2,
    "gpt2": _gpt2,
    "gpt-2": _gpt2,
    "mpt": _gpt2,
    "olmo": _gpt2,
    "smollm": _digits_then_gpt2,
    "starcoder": _digits_then_gpt2,
    "refact": _digits_then_gpt2,
    "codeshell": _digits_then_gpt2,
    "llama-bpe": _llama3,
    "llama3": _llama3,
    "llama-v3": _llama3,
    "smaug-bpe": _llama3,
    "dbrx": _llama3,
    "falcon3": _llama3,
}


def _require(metadata: Mapping[str, Any], key: str) -> Any:
    if key not in metadata:
        raise TokenizerError(f"GGUF metadata has no {key!r}, needed to build the tokenizer")
    return metadata[key]


def tokenizer_from_gguf(metadata: Mapping[str, Any]) -> Tokenizer:
    """Build the byte-level BPE tokenizer a GGUF file describes.

    Args:
        metadata: :attr:`groundwork.interop.gguf.GGUFFile.metadata`.

    Returns:
        A ``tokenizers.Tokenizer`` whose ids equal those of the model's own tokenizer. For
        SmolLM2, ``encode("<|im_start|>user\\nHi 42<|im_end|>").ids`` is
        ``[1, 4093, 198, 26843, 216, 36, 34, 2]``: special tokens whole, ``"\\n"`` (198),
        ``" "`` (216) before the digits, one token per digit.

    Raises:
        TokenizerError: If the file's tokenizer is not byte-level BPE (``tokenizer.ggml.model``
            other than ``"gpt2"``), names an unknown pre-tokenizer, or lacks tokens or merges.
    """
    kind = _require(metadata, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(
            f"GGUF tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported"
        )
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(
            f"GGUF tokenizer.ggml.pre {pre!r} is not supported; supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    tokens: list[str] = _require(metadata, "tokenizer.ggml.tokens")
    merges: list[str] = _require(metadata, "tokenizer.ggml.merges")
    token_types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    # Tokens are spelled in GPT-2's byte alphabet ("Ġthe"); respell any that are not.
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())

    def spelled(token: str) -> str:
        if set(token) <= alphabet:
            return token
        return "".join(spelling[b] for b in token.encode("utf-8"))

    vocab = {spelled(token): i for i, token in enumerate(tokens)}
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]  # "Ġ t" -> ("Ġ", "t")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs))  # type: ignore[arg-type]
    tokenizer.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()

    # Control tokens (<|im_start|>, ...) are matched whole before BPE and dropped by
    # decode(skip_special_tokens=True); user-defined ones are matched whole but kept.
    kept = [(t, k) for t, k in zip(tokens, token_types, strict=True) if t == spelled(t)]
    tokenizer.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, k in kept if k == TOKEN_TYPE_CONTROL]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, normalized=False, special=False)
            for t, k in kept
            if k == TOKEN_TYPE_USER_DEFINED
        ]
    )

    # add_bos_token / add_eos_token: wrap every encoding as "<bos> $A <eos>".
    ends = {
        end: int(metadata[f"tokenizer.ggml.{end}_token_id"])
        for end in ("bos", "eos")
        if metadata.get(f"tokenizer.ggml.add_{end}_token")
        and f"tokenizer.ggml.{end}_token_id" in metadata
    }
    if ends:
        pieces = [tokens[ends["bos"]]] if "bos" in ends else []
        pieces += ["$A"] + ([tokens[ends["eos"]]] if "eos" in ends else [])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join(pieces), special_tokens=[(tokens[i], i) for i in ends.values()]
        )
    return tokenizer


def chat_template_from_gguf(metadata: Mapping[str, Any]) -> str | None:
    """The Jinja chat template (``tokenizer.chat_template``), or ``None`` if the file has none."""
    template = metadata.get("tokenizer.chat_template")
    return str(template) if template is not None else None


def special_tokens_from_gguf(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The named special tokens: ``{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", ...}``.

    Keys are ``bos_token``, ``eos_token``, ``pad_token`` and ``unk_token``, for those the file sets.
    """
    tokens = metadata.get("tokenizer.ggml.tokens", [])
    found = {}
    for name, key in [("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")]:
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            found[f"{name}_token"] = tokens[token_id]
    return found
