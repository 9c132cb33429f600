"""Encoder-decoder decoding: cached == uncached (greedy, sampling, beam), batching, stopping,
errors, and token-for-token parity with ``transformers``' ``generate`` on a tiny random T5.

The end-of-sequence id is picked from a first search without one (a token the model emits a few
steps in), so that outputs really finish, at different lengths.
"""

import doctest
import itertools
from typing import Any

import pytest
import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.generate import seq2seq
from groundwork.generate.config import GenerationConfig
from groundwork.generate.seq2seq import beam_search_seq2seq, generate_seq2seq
from groundwork.models.t5 import T5, T5Config

INPUTS = [[5, 17, 33, 2, 9], [9], [40, 41, 42, 43, 44, 45, 46, 47]]
MAX_NEW = 10
CONFIGS = {
    "v1_0": dict(feed_forward="relu", tie_embeddings=True),
    "v1_1": dict(feed_forward="gated-gelu", tie_embeddings=False),
}


def _config(variant: str) -> T5Config:
    return T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=48,
        n_layers=3,
        n_decoder_layers=2,  # more decoder than encoder blocks breaks transformers 5's cache
        n_heads=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        dropout=0.0,
        **CONFIGS[variant],
    )


def _model(variant: str = "v1_1") -> T5:
    torch.manual_seed(0)
    model = T5(_config(variant)).eval()
    if variant == "v1_0":  # tied at random, the output mostly repeats the last input token:
        with torch.no_grad():  # larger linear weights make it vary
            for name, p in model.named_parameters():
                if name.endswith("proj.weight"):
                    p.normal_(0.0, 0.5)
    return model


def _greedy(**kwargs: Any) -> GenerationConfig:
    return GenerationConfig(temperature=0, max_new_tokens=MAX_NEW, **kwargs)


def _eos_for(model: T5, inputs: list[list[int]]) -> int:
    """A token that some output emits for the first time at step 3 or later (so that the rows
    stop at different lengths once it ends them)."""
    for row in generate_seq2seq(model, inputs, _greedy(), eos_ids=()).sequences:
        fresh = [t for i, t in enumerate(row) if i >= 2 and t not in row[:i] and t != 0]
        if fresh:
            return fresh[0]
    raise AssertionError("every output repeats itself: pick other inputs")


def _check_stops(sequences: list[list[int]], eos: int) -> None:
    """Each row ends at its first end id (kept), or runs to MAX_NEW without one; some stop."""
    for row in sequences:
        assert (row[-1] == eos and eos not in row[:-1]) or (len(row) == MAX_NEW and eos not in row)
    assert any(len(row) < MAX_NEW for row in sequences)


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_greedy_cached_equals_uncached(variant: str) -> None:
    model = _model(variant)
    eos = (_eos_for(model, INPUTS),)
    cached = generate_seq2seq(model, INPUTS, _greedy(), eos_ids=eos, return_logits=True)
    uncached = generate_seq2seq(
        model, INPUTS, _greedy(), eos_ids=eos, return_logits=True, use_cache=False
    )
    assert cached.sequences == uncached.sequences
    _check_stops(cached.sequences, eos[0])
    assert cached.logits is not None and uncached.logits is not None
    torch.testing.assert_close(cached.logits, uncached.logits, rtol=1e-5, atol=1e-5)


def test_batched_equals_one_at_a_time() -> None:
    model = _model()
    config = _greedy()
    together = generate_seq2seq(model, INPUTS, config, eos_ids=()).sequences
    alone = [generate_seq2seq(model, [x], config, eos_ids=()).sequences[0] for x in INPUTS]
    assert together == alone


def test_greedy_logits_are_the_models() -> None:
    """Each step's logits are the teacher-forcing forward's on the output so far."""
    model = _model()
    out = generate_seq2seq(model, INPUTS[:1], _greedy(), eos_ids=(), return_logits=True)
    decoder_ids = torch.tensor([[0, *out.sequences[0][:-1]]])  # the start id, shifted right
    with torch.no_grad():
        expected = model(torch.tensor(INPUTS[:1]), decoder_input_ids=decoder_ids)
    assert out.logits is not None
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    assert out.sequences[0] == expected.argmax(-1)[0].tolist()


def test_sampling_is_seeded_and_filters() -> None:
    model = _model()
    config = GenerationConfig(temperature=1.3, top_p=0.9, max_new_tokens=MAX_NEW, seed=7)
    first = generate_seq2seq(model, INPUTS, config, eos_ids=()).sequences
    assert generate_seq2seq(model, INPUTS, config, eos_ids=()).sequences == first
    uncached = generate_seq2seq(model, INPUTS, config, eos_ids=(), use_cache=False).sequences
    assert uncached == first
    top1 = GenerationConfig(temperature=1.0, top_k=1, max_new_tokens=MAX_NEW, seed=3)
    greedy = generate_seq2seq(model, INPUTS, _greedy(), eos_ids=()).sequences
    assert generate_seq2seq(model, INPUTS, top1, eos_ids=()).sequences == greedy
    other_seed = GenerationConfig(temperature=2.0, max_new_tokens=MAX_NEW, seed=8)
    assert generate_seq2seq(model, INPUTS, other_seed, eos_ids=()).sequences != greedy


def test_stop_ids_and_default_eos() -> None:
    model = _model()
    eos = _eos_for(model, INPUTS)
    out = generate_seq2seq(model, INPUTS, _greedy(stop_ids=(eos,)), eos_ids=()).sequences
    _check_stops(out, eos)
    model.config.eos_id = eos  # the default end id is the config's
    assert generate_seq2seq(model, INPUTS, _greedy()).sequences == out


@pytest.mark.parametrize("early_stopping", [True, False])
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_beam_cached_equals_uncached(variant: str, early_stopping: bool) -> None:
    model = _model(variant)
    eos = (_eos_for(model, INPUTS),)
    config = GenerationConfig(
        num_beams=3,
        num_return_sequences=3,
        length_penalty=0.8,
        early_stopping=early_stopping,
        max_new_tokens=MAX_NEW,
    )
    cached = beam_search_seq2seq(model, INPUTS, config, eos_ids=eos)
    uncached = beam_search_seq2seq(model, INPUTS, config, eos_ids=eos, use_cache=False)
    assert [[t for t, _ in r] for r in cached] == [[t for t, _ in r] for r in uncached]
    torch.testing.assert_close(
        torch.tensor([[s for _, s in r] for r in cached]),
        torch.tensor([[s for _, s in r] for r in uncached]),
    )
    assert any(len({len(t) for t, _ in r}) > 1 for r in cached)  # finished at various lengths


def test_beam_scores_and_batching() -> None:
    model = _model()
    eos = (_eos_for(model, INPUTS),)
    config = GenerationConfig(
        num_beams=4, num_return_sequences=4, length_penalty=0.6, max_new_tokens=MAX_NEW
    )
    together = beam_search_seq2seq(model, INPUTS, config, eos_ids=eos)
    for x, result in zip(INPUTS, together, strict=True):
        [alone] = beam_search_seq2seq(model, [x], config, eos_ids=eos)
        assert [t for t, _ in alone] == [t for t, _ in result]
        assert [s for _, s in alone] == pytest.approx([s for _, s in result], abs=1e-5)
        for tokens, score in result:  # score = sum of log-probs / length ** length_penalty
            decoder_ids = torch.tensor([[0, *tokens[:-1]]])
            with torch.no_grad():
                logits = model(torch.tensor([x]), decoder_input_ids=decoder_ids)[0]
            log_p = logits.log_softmax(-1).gather(1, torch.tensor(tokens)[:, None]).sum()
            assert score == pytest.approx(float(log_p) / len(tokens) ** 0.6, abs=1e-5)


def test_one_beam_is_greedy() -> None:
    model = _model()
    config = GenerationConfig(num_beams=1, max_new_tokens=MAX_NEW)
    beams = beam_search_seq2seq(model, INPUTS, config, eos_ids=())
    greedy = generate_seq2seq(model, INPUTS, _greedy(), eos_ids=()).sequences
    assert [r[0][0] for r in beams] == greedy


def test_bad_requests_raise_config_errors() -> None:
    model = _model()
    with pytest.raises(ConfigError, match="no prompts"):
        generate_seq2seq(model, [], _greedy())
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        generate_seq2seq(model, [[3], []], _greedy())
    with pytest.raises(ConfigError, match="token id 64"):
        beam_search_seq2seq(model, [[3, 64]], GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match="beam_search_seq2seq"):
        generate_seq2seq(model, [[3]], GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match="stop_strings"):
        generate_seq2seq(model, [[3]], _greedy(stop_strings=("x",)))
    with pytest.raises(ConfigError, match="vocabulary"):
        beam_search_seq2seq(model, [[3]], GenerationConfig(num_beams=65, num_return_sequences=1))


def test_docstring_examples() -> None:
    assert doctest.testmod(seq2seq).failed == 0


# ----------------------------------------------------------------------------------------------
# Parity with transformers' generate


@pytest.fixture(scope="module", params=list(CONFIGS))
def models(request: pytest.FixtureRequest) -> tuple[T5, Any]:
    """Ours and its ``transformers`` twin, with the same weights."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    from groundwork.models.t5_hf import t5_key_map, to_hf_config

    ours = _model(request.param)
    hf_config = transformers.T5Config(**to_hf_config(ours.config), attn_implementation="eager")
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    if not ours.config.tie_embeddings:  # transformers 5 ties T5's head even for v1.1
        hf.lm_head.weight = nn.Parameter(torch.empty_like(hf.shared.weight))
    state = {hf_key: ours.state_dict()[k] for k, hf_key in t5_key_map(ours.config).items()}
    hf.load_state_dict(state, strict=False)
    return ours, hf


def _hf_generate(hf: Any, eos: list[int], **kwargs: Any) -> Any:
    """``transformers``' output rows without the decoder start id, cut after the first end id."""
    ids, mask = seq2seq.pad_inputs(INPUTS, pad_id=0)
    out = hf.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=MAX_NEW,
        eos_token_id=eos,
        pad_token_id=0,
        decoder_start_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
        **kwargs,
    )
    rows = []
    for row in out.sequences[:, 1:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows, getattr(out, "sequences_scores", None)


@pytest.mark.parity
def test_greedy_matches_transformers(models: tuple[T5, Any]) -> None:
    ours, hf = models
    eos = _eos_for(ours, INPUTS)
    got = generate_seq2seq(ours, INPUTS, _greedy(), eos_ids=(eos,)).sequences
    expected, _ = _hf_generate(hf, [eos])
    assert got == expected
    _check_stops(got, eos)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("length_penalty", "early_stopping"), list(itertools.product([1.0, 0.6], [True, False]))
)
def test_beam_search_matches_transformers(
    models: tuple[T5, Any], length_penalty: float, early_stopping: bool
) -> None:
    ours, hf = models
    no_eos = GenerationConfig(num_beams=3, num_return_sequences=3, max_new_tokens=MAX_NEW)
    eos = beam_search_seq2seq(ours, INPUTS[:1], no_eos, eos_ids=())[0][1][0][3]
    config = GenerationConfig(
        num_beams=3,
        num_return_sequences=3,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        max_new_tokens=MAX_NEW,
    )
    got = beam_search_seq2seq(ours, INPUTS, config, eos_ids=(eos,))
    expected, expected_scores = _hf_generate(
        hf,
        [eos],
        num_beams=3,
        num_return_sequences=3,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    assert [tokens for result in got for tokens, _ in result] == expected
    scores = torch.tensor([score for result in got for _, score in result])
    torch.testing.assert_close(scores, expected_scores, rtol=1e-5, atol=1e-4)
