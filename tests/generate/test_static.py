"""Static-cache decoding: the same tokens and logits as the dynamic ``generate`` (greedy and
sampled, single and batched left-padded prompts, GPT and Llama), a decode step that compiles as
one graph (``torch._dynamo.explain``: zero graph breaks), the compiled step equal to the eager
one, and clear errors for what it cannot do.

The tiny models get large random weights (std 0.3) so that greedy decoding does not collapse into
repeating one token, which would make the parity checks weak.
"""

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from groundwork import cli
from groundwork.errors import ConfigError
from groundwork.generate import GenerationConfig, StaticDecoder, generate, generate_static
from groundwork.generate.static import decode_step
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig
from groundwork.nn import KVCache
from groundwork.nn.kv_cache import StaticKVCache
from groundwork.runs import write_run
from groundwork.tokenize import train_tokenizer

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)
PROMPTS = [[5, 17, 3, 99, 42, 7, 250], [11, 12], [300, 1, 2, 3, 4]]


def tiny(kind: str, seed: int = 0) -> GPT | Llama:
    """A small random model in eval mode, with weights large enough to decode varied text."""
    torch.manual_seed(seed)
    model: GPT | Llama
    if kind == "gpt":
        model = GPT(GPTConfig.from_name("tiny", max_seq_len=64, d_model=32))
    else:  # grouped-query attention and rotary positions
        model = Llama(LlamaConfig.from_name("tiny", max_seq_len=64, d_model=32, d_ff=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request: pytest.FixtureRequest) -> GPT | Llama:
    return tiny(request.param)


# --8<-- [start:test_static]
@pytest.mark.parametrize("prompts", [PROMPTS, [PROMPTS[0]]], ids=["batched", "single"])
@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=12, temperature=0),
        GenerationConfig(max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.95, seed=3),
        GenerationConfig(max_new_tokens=10, temperature=0, repetition_penalty=1.3),
    ],
    ids=["greedy", "sampled", "penalty"],
)
def test_static_equals_dynamic(
    model: GPT | Llama, prompts: list[list[int]], config: GenerationConfig
) -> None:
    static = generate_static(model, prompts, config, return_logits=True)
    dynamic = generate(model, prompts, config, return_logits=True)
    assert static.sequences == dynamic.sequences
    assert static.logits is not None and dynamic.logits is not None
    torch.testing.assert_close(static.logits, dynamic.logits, **TOL)


# --8<-- [end:test_static]


def test_stop_ids_and_a_reused_decoder(model: GPT | Llama) -> None:
    """Rows stop at a stop id as in ``generate``; one decoder serves several calls."""
    first = generate(model, PROMPTS, GenerationConfig(max_new_tokens=12, temperature=0))
    stop = first.sequences[1][3]
    config = GenerationConfig(max_new_tokens=12, temperature=0, stop_ids=(stop,))
    decoder = StaticDecoder(model, batch_size=3, max_seq_len=24)
    for _ in range(2):
        assert (
            decoder.generate(PROMPTS, config).sequences
            == generate(model, PROMPTS, config).sequences
        )


def test_the_decode_step_has_fixed_shapes(model: GPT | Llama) -> None:
    """After the prompt every step returns the whole cache: the same shapes at every step."""
    decoder = StaticDecoder(model, batch_size=2, max_seq_len=16)
    cache = decoder.cache
    ids = torch.tensor([[1, 2, 3], [0, 4, 5]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    model(
        ids, attention_mask=mask, position_ids=torch.tensor([[0, 1, 2], [0, 0, 1]]), kv_cache=cache
    )
    cache.start_decoding(mask)
    assert cache.filled[:, :4].tolist() == [[True] * 3 + [False], [False, True, True, False]]
    for t in range(3):
        logits = decode_step(model, cache, torch.tensor([[7], [8]]), torch.tensor([[3], [2]]) + t)
        assert logits.shape == (2, model.config.vocab_size)
        assert int(cache.index) == 4 + t and cache.seq_len == 15
    assert cache.filled.sum(-1).tolist() == [6, 5]


def test_the_decode_step_compiles_without_graph_breaks(model: GPT | Llama) -> None:
    decoder = StaticDecoder(model, batch_size=3, max_seq_len=24)
    cache = decoder.cache
    ids = torch.tensor([[1, 2], [3, 4], [5, 6]])
    model(ids, kv_cache=cache)
    cache.start_decoding()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(decode_step)(
        model, cache, torch.tensor([[7], [8], [9]]), torch.tensor([[2], [2], [2]])
    )
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.slow
def test_compiled_decoding_equals_eager() -> None:
    """Inductor compiles the step on a CPU (about a minute on 2 cores); same tokens."""
    model = tiny("llama")
    config = GenerationConfig(max_new_tokens=8, temperature=0)
    eager = generate_static(model, PROMPTS, config, return_logits=True)
    compiled = generate_static(model, PROMPTS, config, return_logits=True, compile=True)
    assert compiled.sequences == eager.sequences
    assert compiled.logits is not None and eager.logits is not None
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decoding_equals_dynamic() -> None:
    model = tiny("gpt").cuda()
    config = GenerationConfig(max_new_tokens=16, temperature=0)
    decoder = StaticDecoder(model, batch_size=3, max_seq_len=32, compile=True)
    for _ in range(2):  # the second call replays the recorded graph
        assert (
            decoder.generate(PROMPTS, config).sequences
            == generate(model, PROMPTS, config).sequences
        )


def test_errors(model: GPT | Llama) -> None:
    config = GenerationConfig(max_new_tokens=60, temperature=0)
    with pytest.raises(ConfigError, match="exceeds the model's context of 64"):
        generate_static(model, PROMPTS, config)
    decoder = StaticDecoder(model, batch_size=2, max_seq_len=20)
    with pytest.raises(ConfigError, match="holds 2 rows, got 3 prompts"):
        decoder.generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    with pytest.raises(ConfigError, match="more than the static cache's 20"):
        decoder.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=14))
    with pytest.raises(ConfigError, match="num_beams"):
        decoder.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=4, num_beams=2))


def test_a_static_cache_is_a_kv_cache_before_decoding() -> None:
    """Before :meth:`start_decoding` it behaves as :class:`KVCache` (the prompt's prefill)."""
    static, plain = StaticKVCache(2, 1, 2, 8, 4), KVCache(2, 1, 2, 8, 4)
    k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    for got, want in zip(static.update(0, k, v, 0), plain.update(0, k, v, 0), strict=True):
        assert torch.equal(got, want) and got.shape == (2, 2, 3, 4)
    mask = torch.ones(1, 1, 3, 3)
    assert static.key_mask(mask) is mask


def test_generate_command_with_compile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`groundwork generate --compile true` prints what the streaming path prints (dynamo's
    eager backend here: inductor's compile time is the slow test's); past the context it says
    to drop --compile."""
    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "eager"})
    )
    text = "To be, or not to be, that is the question.\n" * 20
    tok = train_tokenizer("char", [text], vocab_size=64, special_tokens=[])
    tok_file = tok.save(tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    net = GPT(GPTConfig.from_name("tiny", vocab_size=tok.vocab_size, max_seq_len=32))
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3)
    run = write_run(net, tmp_path / "run", tokenizer=tok_file)
    argv = ["generate", str(run), "--prompt", "To be", "--strategy", "greedy"]
    outs = []
    for extra in ([], ["--compile", "true"]):
        assert cli.main([*argv, "--max-new-tokens", "12", *extra]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0]) > len("To be") + 6
    assert cli.main([*argv, "--max-new-tokens", "40", "--compile", "true"]) == 2
    assert "exceeds the model's context of 32" in capsys.readouterr().err
