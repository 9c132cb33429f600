"""Beam search: token-for-token parity with ``transformers``' ``generate(num_beams=...)``.

The models are tiny random GPT-2 and Llama configs with a small vocabulary and weights scaled up
(std 0.3), so next-token distributions are peaked and beams diverge. The end-of-sequence id is
picked from a first search without one (a token the second-best beam emits at step 4), so that
hypotheses really finish, at different lengths.
"""

import itertools
from typing import Any

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.generate.beam import beam_search, reorder_kv_cache
from groundwork.generate.config import GenerationConfig
from groundwork.generate.simple import sample
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from groundwork.nn.kv_cache import KVCache

PROMPTS = [[5, 17, 33, 2], [9]]
MAX_NEW = 12


def _peaked(model: GPT | Llama) -> GPT | Llama:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def _model(kind: str) -> GPT | Llama:
    torch.manual_seed(0)
    if kind == "gpt2":
        gpt = GPT(GPTConfig(vocab_size=128, max_seq_len=64, d_model=32, n_layers=2, n_heads=4))
        return _peaked(gpt)
    llama = Llama(
        LlamaConfig(
            vocab_size=128, max_seq_len=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64
        )
    )
    return _peaked(llama)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def models(request: pytest.FixtureRequest) -> tuple[GPT | Llama, Any]:
    """Ours and its ``transformers`` twin."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    from groundwork.interop.hf import to_hf

    ours = _model(request.param)
    return ours, to_hf(ours).eval()


def _eos_for(model: GPT | Llama, prompt: list[int]) -> int:
    """A token the second-best beam of a search without end-of-sequence emits at step 4."""
    config = GenerationConfig(num_beams=4, num_return_sequences=4, max_new_tokens=MAX_NEW)
    return beam_search(model, prompt, config)[1][0][3]


def _hf_beams(hf: Any, prompt: list[int], config: GenerationConfig, eos: list[int]) -> Any:
    """``transformers``' beam search; rows cut after their first end-of-sequence id."""
    out = hf.generate(
        torch.tensor([prompt]),
        num_beams=config.num_beams,
        length_penalty=config.length_penalty,
        early_stopping=config.early_stopping,
        num_return_sequences=config.num_return_sequences,
        do_sample=False,
        max_new_tokens=config.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
    )
    rows = []
    for row in out.sequences[:, len(prompt) :].tolist():  # shorter rows are padded after eos
        ends = [i for i, t in enumerate(row) if t in eos]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows, out.sequences_scores


@pytest.mark.parity
@pytest.mark.parametrize(
    "length_penalty, early_stopping, num_return_sequences",
    [(lp, es, 4) for lp, es in itertools.product([1.0, 0.6], [True, False])] + [(0.6, False, 2)],
)
@pytest.mark.parametrize("prompt", PROMPTS, ids=["prompt4", "prompt1"])
def test_matches_transformers(
    models: tuple[GPT | Llama, Any],
    prompt: list[int],
    length_penalty: float,
    early_stopping: bool,
    num_return_sequences: int,
) -> None:
    ours, hf = models
    eos = _eos_for(ours, prompt)
    config = GenerationConfig(
        num_beams=4,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=num_return_sequences,
        max_new_tokens=MAX_NEW,
    )
    got = beam_search(ours, prompt, config, eos_ids=(eos,))
    expected, expected_scores = _hf_beams(hf, prompt, config, [eos])
    assert [tokens for tokens, _ in got] == expected
    torch.testing.assert_close(
        torch.tensor([score for _, score in got]), expected_scores, rtol=1e-5, atol=1e-4
    )


@pytest.mark.parity
@pytest.mark.parametrize("length_penalty", [-0.5, 2.0])
@pytest.mark.parametrize("early_stopping", [True, False])
def test_matches_transformers_two_eos_ids(
    models: tuple[GPT | Llama, Any], length_penalty: float, early_stopping: bool
) -> None:
    """Two end-of-sequence ids: 3 * num_beams candidates kept per step; extreme penalties."""
    ours, hf = models
    prompt = PROMPTS[0]
    config = GenerationConfig(
        num_beams=4,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=3,
        max_new_tokens=MAX_NEW,
    )
    no_eos = beam_search(ours, prompt, GenerationConfig(num_beams=4, max_new_tokens=MAX_NEW))
    eos = [_eos_for(ours, prompt), no_eos[0][0][6]]
    got = beam_search(ours, prompt, config, eos_ids=eos)
    expected, _ = _hf_beams(hf, prompt, config, eos)
    assert [tokens for tokens, _ in got] == expected


@pytest.mark.parity
def test_hypotheses_finish_at_different_lengths(models: tuple[GPT | Llama, Any]) -> None:
    """The parity cases above really exercise end-of-sequence handling."""
    ours, _ = models
    prompt = PROMPTS[0]
    config = GenerationConfig(
        num_beams=4, num_return_sequences=4, length_penalty=0.6, max_new_tokens=MAX_NEW
    )
    got = beam_search(ours, prompt, config, eos_ids=(_eos_for(ours, prompt),))
    assert len({len(tokens) for tokens, _ in got}) > 1


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("early_stopping", [True, False])
def test_cached_equals_uncached(kind: str, early_stopping: bool) -> None:
    model = _model(kind)
    for prompt in PROMPTS:
        config = GenerationConfig(
            num_beams=3,
            num_return_sequences=3,
            early_stopping=early_stopping,
            length_penalty=0.8,
            max_new_tokens=MAX_NEW,
        )
        eos = (_eos_for(model, prompt),)
        cached = beam_search(model, prompt, config, eos_ids=eos)
        uncached = beam_search(model, prompt, config, eos_ids=eos, use_cache=False)
        assert [t for t, _ in cached] == [t for t, _ in uncached]
        torch.testing.assert_close(
            torch.tensor([s for _, s in cached]), torch.tensor([s for _, s in uncached])
        )


def test_score_is_length_normalised_log_prob() -> None:
    """score = sum of the new tokens' log-probs / (number of new tokens) ** length_penalty."""
    model = _model("llama")
    prompt = PROMPTS[0]
    config = GenerationConfig(
        num_beams=4, num_return_sequences=4, length_penalty=0.6, max_new_tokens=MAX_NEW
    )
    for tokens, score in beam_search(model, prompt, config, eos_ids=(_eos_for(model, prompt),)):
        ids = torch.tensor([prompt + tokens])  # (1, T)
        with torch.no_grad():
            log_probs = model(ids)[0, :-1].log_softmax(-1)  # (T - 1, V): predicts ids[1:]
        new = log_probs[len(prompt) - 1 :].gather(1, torch.tensor(tokens)[:, None])  # (L, 1)
        assert score == pytest.approx(float(new.sum()) / len(tokens) ** 0.6, abs=1e-5)


def test_one_beam_is_greedy() -> None:
    model = _model("gpt2")
    config = GenerationConfig(num_beams=1, max_new_tokens=MAX_NEW)
    [(tokens, _)] = beam_search(model, PROMPTS[0], config)
    assert tokens == sample(model, PROMPTS[0], max_new_tokens=MAX_NEW, temperature=0)


def test_reorder_kv_cache_follows_parents() -> None:
    cache = KVCache(batch=2, n_layers=2, n_kv_heads=1, max_seq_len=3, d_head=2)
    cache.k[:, 0], cache.k[:, 1] = 1.0, 2.0
    cache.v[:, 0], cache.v[:, 1] = -1.0, -2.0
    reorder_kv_cache(cache, torch.tensor([1, 1, 0]))  # beam 1 had two children, beam 0 one
    assert cache.k.shape == (2, 3, 1, 3, 2)
    assert cache.k[0, :, 0, 0, 0].tolist() == [2.0, 2.0, 1.0]
    assert cache.v[1, :, 0, 2, 1].tolist() == [-2.0, -2.0, -1.0]


def test_more_beams_than_vocabulary_is_an_error() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, max_seq_len=16, d_model=16, n_layers=1, n_heads=2))
    with pytest.raises(ConfigError, match="vocabulary"):
        beam_search(model, [1, 2], GenerationConfig(num_beams=9, max_new_tokens=2))


def test_empty_prompt_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        beam_search(_model("gpt2"), [], GenerationConfig(num_beams=2, max_new_tokens=2))
