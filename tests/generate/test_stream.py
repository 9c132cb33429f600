"""Streaming: GPT-2's real byte-level tokenizer and a scripted model that emits chosen ids."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.stream import find_stop, generate_text, partial_stop_len, stream
from groundwork.nn import KVCache
from groundwork.tokenize import ByteLevelBPE

MULTIBYTE = "Café naïve — 日本語 🙂 ok"


class Scripted(nn.Module):
    """A fake decoder whose logits force ``script``: after ``k`` new tokens it emits ``script[k]``.

    It reads where it is from ``position_ids`` (the last column's position is
    ``prompt_len - 1 + k``), so it behaves the same with or without a KV cache.
    """

    def __init__(self, script: list[int], prompt_len: int, vocab_size: int) -> None:
        super().__init__()
        self.script, self.prompt_len, self.vocab_size = script, prompt_len, vocab_size
        self.config = SimpleNamespace(vocab_size=vocab_size, max_seq_len=1024)  # CausalLM's
        self.dummy = nn.Parameter(torch.zeros(1))  # so the decoder can find a device

    def new_kv_cache(self, batch: int, max_seq_len: int | None = None) -> KVCache:
        return KVCache(batch, 1, 1, max_seq_len or 1, 1)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T = idx.shape
        assert position_ids is not None
        logits = torch.zeros(B, T, self.vocab_size)
        for b in range(B):
            k = int(position_ids[b, -1]) - self.prompt_len + 1
            logits[b, -1, self.script[min(k, len(self.script) - 1)]] = 10.0
        if kv_cache is not None:
            kv_cache.seq_len += T
        return logits


@pytest.fixture(scope="module")
def gpt2_tokenizer(gpt2_bpe_dir: Path) -> ByteLevelBPE:
    return ByteLevelBPE.from_gpt2_files(gpt2_bpe_dir / "encoder.json", gpt2_bpe_dir / "vocab.bpe")


def run(tok: ByteLevelBPE, text: str, config: GenerationConfig, **kwargs: bool) -> list[str]:
    """Stream a scripted model that emits ``tokenizer.encode(text)`` after a 2-token prompt."""
    script = tok.encode(text)
    model = Scripted(script, prompt_len=2, vocab_size=tok.vocab_size)
    return list(stream(model, tok, [11, 12], config, **kwargs))


# --8<-- [start:test_multibyte]
def test_split_characters_are_never_emitted_half(gpt2_tokenizer: ByteLevelBPE) -> None:
    tok = gpt2_tokenizer
    ids = tok.encode(MULTIBYTE)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some characters span several tokens
    pieces = run(tok, MULTIBYTE, GenerationConfig(max_new_tokens=len(ids), temperature=0))
    assert "".join(pieces) == MULTIBYTE
    assert not any("\ufffd" in piece for piece in pieces)
    assert all(pieces) and len(pieces) > 5  # streamed in many pieces, none empty


# --8<-- [end:test_multibyte]


def test_stop_string_spanning_two_tokens(gpt2_tokenizer: ByteLevelBPE) -> None:
    tok = gpt2_tokenizer
    text = "Hello world.\nUser: bye"
    assert not any("User:" in tok.decode([i]) for i in tok.encode(text))  # spans tokens
    config = GenerationConfig(max_new_tokens=20, temperature=0, stop_strings=("User:",))
    pieces = run(tok, text, config)
    assert "".join(pieces) == "Hello world.\n"


def test_a_false_start_of_a_stop_string_is_released(gpt2_tokenizer: ByteLevelBPE) -> None:
    text = "Useful. Use it. User: no"
    config = GenerationConfig(max_new_tokens=20, temperature=0, stop_strings=("User:", "zzz"))
    assert "".join(run(gpt2_tokenizer, text, config)) == "Useful. Use it. "


def test_held_back_prefix_is_flushed_at_the_end(gpt2_tokenizer: ByteLevelBPE) -> None:
    text = "it ends with Us"
    n = len(gpt2_tokenizer.encode(text))
    config = GenerationConfig(max_new_tokens=n, temperature=0, stop_strings=("User:",))
    assert "".join(run(gpt2_tokenizer, text, config)) == text


def test_stop_ids_and_end_of_text(gpt2_tokenizer: ByteLevelBPE) -> None:
    tok = gpt2_tokenizer
    eot = tok.eot_id
    assert eot is not None
    script = [*tok.encode("one two"), eot, *tok.encode(" three")]
    model = Scripted(script, prompt_len=1, vocab_size=tok.vocab_size)
    config = GenerationConfig(max_new_tokens=10, temperature=0)
    assert "".join(stream(model, tok, [5], config)) == "one two"
    everything = "".join(stream(model, tok, [5], config, stop_at_eot=False))
    assert everything.startswith("one two<|endoftext|> three")
    two = tok.encode(" two")[0]
    config = GenerationConfig(max_new_tokens=10, temperature=0, stop_ids=(two,))
    assert "".join(stream(model, tok, [5], config)) == "one"


def test_generate_text(gpt2_tokenizer: ByteLevelBPE) -> None:
    tok = gpt2_tokenizer
    prompt = "Q: say hi\nA:"
    script = tok.encode(" hi there\nQ: more")
    model = Scripted(script, prompt_len=len(tok.encode(prompt)), vocab_size=tok.vocab_size)
    config = GenerationConfig(max_new_tokens=10, temperature=0, stop_strings=("\nQ:",))
    assert generate_text(model, tok, prompt, config) == " hi there"


def test_empty_prompt_is_an_error(gpt2_tokenizer: ByteLevelBPE) -> None:
    model = Scripted([1], prompt_len=1, vocab_size=gpt2_tokenizer.vocab_size)
    with pytest.raises(ConfigError, match="empty"):
        list(stream(model, gpt2_tokenizer, [], GenerationConfig(max_new_tokens=2)))


def test_helpers() -> None:
    assert find_stop("abc User: x", ["User:", "x"]) == 4
    assert find_stop("abc", ["d"]) is None
    assert find_stop("User: User:", ["User:"], start=1) == 6
    assert partial_stop_len("abc\nUs", ["\nUser:"]) == 3
    assert partial_stop_len("abc", ["\nUser:"]) == 0
    assert partial_stop_len("ab", ["b", "abc"]) == 2  # a complete short one is find_stop's job


# ------------------------------------------------------------------------------------------
# Property: for any text, the pieces are the text (cut before the stop string), none split

SMALL_ALPHABET = "ab \né日🙂"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet=SMALL_ALPHABET, min_size=1, max_size=24),
    stop=st.text(alphabet=SMALL_ALPHABET, min_size=1, max_size=3),
)
def test_streamed_pieces_are_the_text(gpt2_tokenizer: ByteLevelBPE, text: str, stop: str) -> None:
    n = len(gpt2_tokenizer.encode(text))
    config = GenerationConfig(max_new_tokens=n, temperature=0, stop_strings=(stop,))
    pieces = run(gpt2_tokenizer, text, config, stop_at_eot=False)
    cut = text.find(stop)
    assert "".join(pieces) == (text if cut < 0 else text[:cut])
    assert all(pieces) and not any("\ufffd" in piece for piece in pieces)


def test_a_stop_string_the_tokenizer_cannot_produce() -> None:
    from groundwork.tokenize import CharTokenizer

    tok = CharTokenizer.train(["abcabc"], 10)
    model = Scripted([tok.encode("a")[0]], prompt_len=1, vocab_size=tok.vocab_size)
    config = GenerationConfig(max_new_tokens=3, temperature=0, stop_strings=("zz",))
    with pytest.raises(ConfigError, match="'zz' can never be generated"):
        list(stream(model, tok, tok.encode("a"), config))
