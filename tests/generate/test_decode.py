"""Batched cached decoding: equal to the uncached loop, to Hugging Face ``generate``, and strict.

The tiny models get large random weights (std 0.3) so that greedy decoding does not collapse into
repeating one token, which would make the parity checks weak.
"""

from typing import Any

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import generate, generate_uncached
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)
PROMPTS = [[5, 17, 3, 99, 42, 7, 250], [11, 12], [300, 1, 2, 3, 4]]


def tiny(kind: str, seed: int = 0) -> GPT | Llama:
    """A small random model in eval mode, with weights large enough to decode varied text."""
    torch.manual_seed(seed)
    model: GPT | Llama
    if kind == "gpt":
        model = GPT(GPTConfig.from_name("tiny", max_seq_len=64, d_model=32))
    else:
        model = Llama(LlamaConfig.from_name("tiny", max_seq_len=64, d_model=32, d_ff=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request: pytest.FixtureRequest) -> GPT | Llama:
    return tiny(request.param)


# --8<-- [start:test_cached]
@pytest.mark.parametrize("prompts", [PROMPTS, [PROMPTS[0]]], ids=["batched", "single"])
def test_cached_equals_uncached(model: GPT | Llama, prompts: list[list[int]]) -> None:
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    cached = generate(model, prompts, config, return_logits=True)
    uncached = generate_uncached(model, prompts, config, return_logits=True)
    assert cached.sequences == uncached.sequences
    assert cached.logits is not None and uncached.logits is not None
    assert cached.logits.shape == (len(prompts), 12, model.config.vocab_size)
    torch.testing.assert_close(cached.logits, uncached.logits, **TOL)


# --8<-- [end:test_cached]


def test_batched_equals_one_by_one(model: GPT | Llama) -> None:
    """Left padding, the mask and the position ids make each row decode as if it were alone."""
    config = GenerationConfig(max_new_tokens=8, temperature=0)
    batched = generate(model, PROMPTS, config, return_logits=True)
    assert batched.logits is not None
    for b, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], config, return_logits=True)
        assert alone.sequences[0] == batched.sequences[b]
        assert alone.logits is not None
        torch.testing.assert_close(alone.logits[0], batched.logits[b], **TOL)


def test_sampling_cached_equals_uncached_with_seed(model: GPT | Llama) -> None:
    config = GenerationConfig(
        max_new_tokens=10, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.3, seed=3
    )
    cached = generate(model, PROMPTS, config)
    assert cached.sequences == generate_uncached(model, PROMPTS, config).sequences
    assert cached.sequences == generate(model, PROMPTS, config).sequences  # seeded: repeatable


def test_stop_ids_end_each_row(model: GPT | Llama) -> None:
    free = generate(model, PROMPTS, GenerationConfig(max_new_tokens=10, temperature=0))
    stop_id = free.sequences[0][3]  # row 0 emits it at step 3 (or earlier)
    first = free.sequences[0].index(stop_id)
    config = GenerationConfig(max_new_tokens=10, temperature=0, stop_ids=(stop_id,))
    out = generate(model, PROMPTS, config)
    assert out.sequences[0] == free.sequences[0][: first + 1]
    for got, full in zip(out.sequences, free.sequences, strict=True):
        cut = full.index(stop_id) + 1 if stop_id in full else len(full)
        assert got == full[:cut]
    eos = generate(
        model, PROMPTS, GenerationConfig(max_new_tokens=10, temperature=0), eos_ids=[stop_id]
    )
    assert eos.sequences == out.sequences


def test_stop_strings_with_decode(model: GPT | Llama) -> None:
    free = generate(model, [PROMPTS[0]], GenerationConfig(max_new_tokens=10, temperature=0))

    def decode(ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)

    target = f"<{free.sequences[0][2]}><{free.sequences[0][3]}"  # spans two tokens
    config = GenerationConfig(max_new_tokens=10, temperature=0, stop_strings=(target,))
    out = generate(model, [PROMPTS[0]], config, decode=decode)
    assert target in decode(out.sequences[0])
    assert target not in decode(out.sequences[0][:-1])
    with pytest.raises(ConfigError, match="decode"):
        generate(model, [PROMPTS[0]], config)


# ------------------------------------------------------------------------------------------
# Bad input


def test_empty_prompt_is_an_error(model: GPT | Llama) -> None:
    config = GenerationConfig(max_new_tokens=2)
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        generate(model, [[1, 2], []], config)
    with pytest.raises(ConfigError, match="no prompts"):
        generate(model, [], config)


def test_a_prompt_longer_than_the_context_is_an_error(model: GPT | Llama) -> None:
    with pytest.raises(ConfigError, match="prompt 1 has 65 tokens, more than the model's context"):
        generate(model, [[1], [1] * 65], GenerationConfig(max_new_tokens=1))
    with pytest.raises(ConfigError, match="the prompt has 65 tokens"):
        generate(model, [[1] * 65], GenerationConfig(max_new_tokens=1))
    out = generate(model, [[1] * 64], GenerationConfig(max_new_tokens=5, temperature=0))
    assert len(out.sequences[0]) == 5  # the prompt fills the context; then the window slides


def test_past_the_context_the_window_slides(model: GPT | Llama) -> None:
    """80 new tokens with a context of 64: every step reads the last 64 tokens, cached (the
    cache prefilled again once the window moves) or not, batched or alone, exactly like the
    plain nanoGPT-style sampler that crops its input."""
    from groundwork.generate import sample

    config = GenerationConfig(max_new_tokens=80, temperature=0)
    cached = generate(model, PROMPTS, config, return_logits=True)
    uncached = generate_uncached(model, PROMPTS, config, return_logits=True)
    assert cached.sequences == uncached.sequences
    assert cached.logits is not None and uncached.logits is not None
    # 80 steps of rounding with large random weights: a looser tolerance than TOL
    torch.testing.assert_close(cached.logits, uncached.logits, rtol=1e-4, atol=1e-4)
    for prompt, row in zip(PROMPTS, cached.sequences, strict=True):
        assert len(row) == 80
        assert sample(model, prompt, max_new_tokens=80, temperature=0, max_seq_len=64) == row


def test_beam_search_slides_too(model: GPT | Llama) -> None:
    from groundwork.generate import beam_search

    config = GenerationConfig(max_new_tokens=70, num_beams=3, num_return_sequences=3)
    cached = beam_search(model, PROMPTS[0], config)
    assert [len(tokens) for tokens, _ in cached] == [70, 70, 70]
    uncached = beam_search(model, PROMPTS[0], config, use_cache=False)
    assert [t for t, _ in cached] == [t for t, _ in uncached]
    for (_, a), (_, b) in zip(cached, uncached, strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_recurrent_models_have_no_window() -> None:
    from groundwork.generate.decode import context_window
    from groundwork.models import LSTMLM, LSTMConfig

    torch.manual_seed(0)
    lstm = LSTMLM(LSTMConfig.from_name("tiny", max_seq_len=8)).eval()
    assert context_window(lstm) is None
    config = GenerationConfig(max_new_tokens=20, temperature=0)
    long_prompt = list(range(10, 30))  # longer than max_seq_len: fine, nothing is cut
    cached = generate(lstm, [long_prompt], config)
    assert cached.sequences == generate_uncached(lstm, [long_prompt], config).sequences


def test_ids_outside_the_vocabulary_are_an_error(model: GPT | Llama) -> None:
    with pytest.raises(ConfigError, match="token id 512"):
        generate(model, [[1, 512]], GenerationConfig(max_new_tokens=2))
    with pytest.raises(ConfigError, match="token id -1"):
        generate(model, [[-1]], GenerationConfig(max_new_tokens=2))


def test_beam_search_is_refused(model: GPT | Llama) -> None:
    with pytest.raises(ConfigError, match="beam"):
        generate(model, [[1]], GenerationConfig(num_beams=2, max_new_tokens=2))


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1.0),
        dict(top_k=0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=2.0),
        dict(repetition_penalty=0.0),
        dict(max_new_tokens=0),
        dict(max_new_tokens=-5),
        dict(temperature=float("nan")),
        dict(temperature=float("inf")),
        dict(top_p=float("nan")),
        dict(repetition_penalty=float("nan")),
        dict(length_penalty=float("inf")),
    ],
)
def test_invalid_sampling_values(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        GenerationConfig(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Parity with Hugging Face generate (greedy)


def hf_greedy(
    ours: GPT | Llama, prompts: list[list[int]], new: int, pad_id: int, **kwargs: Any
) -> list[list[int]]:
    """``to_hf(ours).generate`` on the same left-padded batch; returns the new tokens."""
    from groundwork.interop.hf import to_hf

    hf: Any = to_hf(ours).eval()
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (L - len(p)) + p for p in prompts])  # (B, L)
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])  # (B, L)
    out = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=pad_id,
        eos_token_id=None,
        **kwargs,
    )
    return out[:, L:].tolist()


@pytest.mark.parity
@pytest.mark.parametrize("prompts", [PROMPTS, [PROMPTS[1]]], ids=["left_padded", "single"])
def test_greedy_matches_transformers(model: GPT | Llama, prompts: list[list[int]]) -> None:
    pytest.importorskip("transformers")
    new = 10
    ours = generate(model, prompts, GenerationConfig(max_new_tokens=new, temperature=0))
    assert ours.sequences == hf_greedy(model, prompts, new, pad_id=0)


@pytest.mark.parity
def test_repetition_penalty_matches_transformers(model: GPT | Llama) -> None:
    """Greedy with CTRL's penalty; one unpadded prompt (``transformers`` would also penalise the
    pad id of a padded batch, which we leave out)."""
    pytest.importorskip("transformers")
    config = GenerationConfig(max_new_tokens=10, temperature=0, repetition_penalty=1.5)
    ours = generate(model, [PROMPTS[0]], config)
    expected = hf_greedy(model, [PROMPTS[0]], 10, pad_id=0, repetition_penalty=1.5)
    assert ours.sequences == expected


@pytest.mark.parity
def test_greedy_matches_transformers_smollm2() -> None:
    pytest.importorskip("transformers")
    import groundwork

    pre = groundwork.load("smollm2-135m-instruct")
    assert isinstance(pre.model, Llama)
    tok = pre.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("def fibonacci(n):")]
    pad_id = tok.eot_id if tok.eot_id is not None else 0
    config = GenerationConfig(max_new_tokens=10, temperature=0)
    ours = generate(pre.model, prompts, config, pad_id=pad_id)
    assert ours.sequences == hf_greedy(pre.model, prompts, 10, pad_id=pad_id)
