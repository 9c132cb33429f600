"""Batched text generation: each prompt's text equals its own unbatched generation, cut at the
stop strings; the end of a text or of a chat turn ends a row."""

import pytest

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.stream import end_of_turn_ids, generate_text, generate_texts
from groundwork.tokenize.char import CharTokenizer
from helpers import tiny_llama

TEXT = "the cat sat on the mat. a dog ran far away!\n"


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train([TEXT], vocab_size=60)


def test_batched_greedy_equals_one_at_a_time(tok: CharTokenizer) -> None:
    model = tiny_llama(vocab_size=tok.vocab_size)
    config = GenerationConfig(max_new_tokens=12, temperature=0.0, stop_strings=("a",))
    prompts = ["the cat", "a dog ran", "t", "on the mat. "]
    batched = generate_texts(model, tok, prompts, config, batch_size=3)
    single = [generate_text(model, tok, p, config) for p in prompts]
    assert batched == single
    assert all("a" not in text for text in batched)


def test_sampling_is_seeded_per_batch(tok: CharTokenizer) -> None:
    model = tiny_llama(vocab_size=tok.vocab_size)
    config = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=3)
    a = generate_texts(model, tok, ["the", "the", "dog"], config, batch_size=2)
    b = generate_texts(model, tok, ["the", "the", "dog"], config, batch_size=2)
    assert a == b


def test_end_of_turn_ids(tok: CharTokenizer) -> None:
    assert end_of_turn_ids(tok) == ({tok.eot_id} if tok.eot_id is not None else set())


def test_bad_batch_size(tok: CharTokenizer) -> None:
    model = tiny_llama(vocab_size=tok.vocab_size)
    with pytest.raises(ConfigError, match="batch_size"):
        generate_texts(model, tok, ["the"], GenerationConfig(max_new_tokens=2), batch_size=0)
