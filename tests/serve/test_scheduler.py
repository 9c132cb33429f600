"""The continuous-batching engine: requests joining and leaving a running batch get exactly what
each would get alone."""

from typing import Any

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.generate import GenerationConfig
from groundwork.generate.stream import generate_text
from groundwork.serve import Engine, Event, QueueFullError, SamplingParams, Sequence

PROMPTS = ["the cat", "a dog ran", "rain fell on the", "home", "far away", "the", "then came"]


def _run(engine: Engine, prompts: list[list[int]], params: list[SamplingParams]) -> list[Any]:
    events: list[list[Event]] = [[] for _ in prompts]
    seqs = [
        Sequence(p, s, emit=events[i].append)
        for i, (p, s) in enumerate(zip(prompts, params, strict=True))
    ]
    engine.submit(seqs)
    engine.run_until_idle()
    return [(seq, evs) for seq, evs in zip(seqs, events, strict=True)]


def _text(events: list[Event]) -> str:
    return "".join(e.text for e in events if e.kind == "token")


def test_greedy_with_joins_and_leaves_equals_generate_alone(tiny_model) -> None:
    model, tok = tiny_model
    engine = Engine(model, tok, slots=3)  # 7 requests through 3 rows: rows are reused
    lengths = [5 + 4 * i for i in range(len(PROMPTS))]  # they finish at different steps
    params = [SamplingParams(max_tokens=n, temperature=0) for n in lengths]
    results = _run(engine, [tok.encode(p) for p in PROMPTS], params)
    for prompt, n, (seq, events) in zip(PROMPTS, lengths, results, strict=True):
        alone = generate_text(model, tok, prompt, GenerationConfig(max_new_tokens=n, temperature=0))
        assert _text(events) == alone
        assert seq.finish_reason == "length" and len(seq.output) == n
    assert max(r["decode_batch"] for r in engine.timeline) == 3
    assert not engine.running and not engine.waiting


def test_a_seeded_sample_does_not_depend_on_its_batch_companions(tiny_model) -> None:
    model, tok = tiny_model
    ids = tok.encode("the cat")
    seeded = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    alone = _run(Engine(model, tok, slots=4), [ids], [seeded])[0][0].output
    others = [SamplingParams(max_tokens=3 + i, temperature=1.0) for i in range(3)]
    crowd = _run(
        Engine(model, tok, slots=4),
        [tok.encode("rain"), ids, tok.encode("a dog"), tok.encode("home")],
        [others[0], seeded, others[1], others[2]],
    )
    assert crowd[1][0].output == alone
    different = _run(Engine(model, tok, slots=4), [ids], [SamplingParams(12, 1.0, 0.9, seed=8)])
    assert different[0][0].output != alone


def test_stop_strings_cut_the_text_and_stop_ids_end_it(tiny_model) -> None:
    model, tok = tiny_model
    ids = tok.encode("the cat")
    free = _run(Engine(model, tok), [ids], [SamplingParams(max_tokens=20, seed=3)])
    text = _text(free[0][1])
    stop = text[3:6]
    assert stop and stop in text
    cut = _run(Engine(model, tok), [ids], [SamplingParams(20, seed=3, stop=(stop,))])
    assert _text(cut[0][1]) == text[: text.index(stop)]
    assert cut[0][0].finish_reason == "stop"
    out = free[0][0].output
    k = next(i for i in range(1, len(out)) if out[i] not in out[:i])  # a token new at step k
    ended = _run(
        Engine(model, tok), [ids], [SamplingParams(20, seed=3, stop_ids=frozenset({out[k]}))]
    )
    assert ended[0][0].output == out[:k] and ended[0][0].finish_reason == "stop"


def test_prompt_logprobs_are_the_models_log_softmax(tiny_model) -> None:
    model, tok = tiny_model
    ids = tok.encode("a dog ran far away")
    params = SamplingParams(max_tokens=0, temperature=0, logprobs=2, prompt_logprobs=True)
    [(seq, events)] = _run(Engine(model, tok), [ids], [params])
    [prompt] = [e.prompt for e in events if e.kind == "prompt"]
    assert prompt is not None and prompt[0] is None and len(prompt) == len(ids)
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
    for i, entry in enumerate(prompt[1:]):
        assert entry.token_id == ids[i + 1]
        assert entry.logprob == pytest.approx(float(logp[i, ids[i + 1]]), abs=1e-5)
        assert [t for t, _ in entry.top] == logp[i].topk(2).indices.tolist()
    assert seq.finish_reason == "length" and seq.output == []


def test_cancelled_sequences_free_their_rows_and_the_others_continue(tiny_model) -> None:
    model, tok = tiny_model
    engine = Engine(model, tok, slots=2)
    a = Sequence(tok.encode("the cat"), SamplingParams(max_tokens=30, temperature=0))
    b = Sequence(tok.encode("a dog"), SamplingParams(max_tokens=30, temperature=0))
    engine.submit([a, b])
    with torch.inference_mode():
        engine.step()
        engine.step()
        engine.cancel(a)
        engine.step()
    assert a.finish_reason == "cancelled" and engine.running == [b]
    engine.run_until_idle()
    alone = generate_text(model, tok, "a dog", GenerationConfig(max_new_tokens=30, temperature=0))
    assert b.text == alone


def test_bad_requests_and_a_full_queue_are_refused(tiny_model) -> None:
    model, tok = tiny_model
    engine = Engine(model, tok, slots=1, max_waiting=2)
    with pytest.raises(ConfigError, match="maximum context length is 128"):
        engine.submit([Sequence([1] * 120, SamplingParams(max_tokens=9))])
    with pytest.raises(ConfigError, match="empty"):
        engine.submit([Sequence([], SamplingParams(max_tokens=1))])
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        engine.submit([Sequence([10**6], SamplingParams(max_tokens=1))])
    engine.submit([Sequence([1], SamplingParams(max_tokens=1)) for _ in range(3)])  # 1 row + 2
    with pytest.raises(QueueFullError, match="retry later"):
        engine.submit([Sequence([1], SamplingParams(max_tokens=1))])


def test_a_recurrent_model_is_refused(tiny_model) -> None:
    from groundwork.models.rnn import LSTMLM, LSTMConfig

    _, tok = tiny_model
    lstm = LSTMLM(LSTMConfig.from_name("tiny", vocab_size=tok.vocab_size))
    with pytest.raises(ConfigError, match="recurrent"):
        Engine(lstm, tok)
