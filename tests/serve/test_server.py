"""The server through the official ``openai`` client, and raw HTTP for what the client hides."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from groundwork.cli import main
from groundwork.generate import GenerationConfig
from groundwork.generate.stream import generate_text

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")  # the HTTP library the openai client is built on


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(server) -> None:
    url, engine = server
    [card] = _client(url).models.list().data
    assert card.id == "tiny" and card.model_extra["max_model_len"] == engine.max_len
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_greedy_completion_equals_groundwork_generate(server, tiny_run: Path, capsys) -> None:
    url, _ = server
    prompt = "the cat sat"
    out = _client(url).completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    assert main(["generate", str(tiny_run), "--prompt", prompt, "--strategy", "greedy",
                 "--max-new-tokens", "12"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == prompt + out.choices[0].text
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 12


def test_streamed_completion_equals_the_plain_one(server, tiny_model) -> None:
    url, _ = server
    client = _client(url)
    plain = client.completions.create(model="tiny", prompt="rain fell", max_tokens=15, seed=4)
    pieces, finish = [], None
    for chunk in client.completions.create(
        model="tiny", prompt="rain fell", max_tokens=15, seed=4, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == plain.choices[0].text and finish == "length"


def test_echo_logprobs_are_what_lm_eval_reads(server, tiny_model) -> None:
    import torch

    url, _ = server
    model, tok = tiny_model
    ids = tok.encode("a dog ran far")
    out = _client(url).completions.create(
        model="tiny", prompt=ids, max_tokens=1, temperature=0, logprobs=1, echo=True
    )
    lp = out.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)
    expected = [float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert lp.token_logprobs[1:-1] == pytest.approx(expected, abs=1e-5)
    assert out.choices[0].text.startswith(tok.decode(ids))


def test_chat_plain_streamed_and_n_choices(server, tiny_model) -> None:
    url, _ = server
    client = _client(url)
    messages = [{"role": "user", "content": "hello there"}]
    plain = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, seed=1, logprobs=True, top_logprobs=3
    )
    choice = plain.choices[0]
    assert choice.message.role == "assistant"
    assert len(choice.logprobs.content) == plain.usage.completion_tokens == 10
    assert all(len(t.top_logprobs) == 3 for t in choice.logprobs.content)
    streamed = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, seed=1, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 10
    many = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, n=3, logprobs=True
    )
    assert [c.index for c in many.choices] == [0, 1, 2]
    # a sample may end at a stop id, even its first token (which is not part of the answer)
    lengths = [len(c.logprobs.content) for c in many.choices]
    assert many.usage.completion_tokens == sum(lengths)
    for c, n in zip(many.choices, lengths, strict=True):
        assert 0 <= n <= 6
        assert n == 6 if c.finish_reason == "length" else c.finish_reason == "stop"


def test_sixteen_concurrent_clients_all_get_their_own_complete_answer(server, tiny_model) -> None:
    url, engine = server
    model, tok = tiny_model
    prompts = [
        f"{w} {v}" for w in ("the", "a", "rain", "home") for v in ("cat", "dog", "fell", "ran")
    ]
    lengths = [6 + (i % 5) * 3 for i in range(16)]

    def ask(i: int) -> Any:
        return _client(url).completions.create(
            model="tiny", prompt=prompts[i], max_tokens=lengths[i], temperature=0
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    for prompt, n, answer in zip(prompts, lengths, answers, strict=True):
        alone = generate_text(model, tok, prompt, GenerationConfig(max_new_tokens=n, temperature=0))
        assert answer.choices[0].text == alone
        assert answer.usage.completion_tokens == n
    assert max(r["decode_batch"] for r in engine.timeline) == engine.cache.slots


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server) -> None:
    url, engine = server
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": 120, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "text_completion"
        assert len(engine.running) == 1
    deadline = time.monotonic() + 10  # the connection is closed: the row is freed
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.running and not engine.waiting
    assert engine.timeline[-1]["decode_batch"] <= 1


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "gpt-4", "prompt": "x"}, 404, "does not exist"),
        ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "temperature": 2.5}, 400, "temperature"),
        ({"model": "tiny", "prompt": "x", "top_p": 0}, 400, "top_p"),
        ({"model": "tiny", "prompt": "cat " * 300}, 400, "maximum context length"),
        ({"model": "tiny", "prompt": [10**6]}, 400, "vocabulary"),
        ({"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
        ({"model": "tiny", "prompt": "x", "logit_bias": {"1": 5}}, 400, "logit_bias"),
        ({"prompt": "x"}, 400, "model"),
    ],
)
def test_bad_completion_requests_get_openai_errors(server, body, status, needle) -> None:
    url, _ = server
    response = httpx.post(f"{url}/v1/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text


def test_malformed_json_unknown_routes_and_bad_chats(server) -> None:
    url, _ = server
    broken = httpx.post(
        f"{url}/v1/chat/completions",
        content=b'{"model": "tiny", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    missing = httpx.get(f"{url}/v1/engines")
    assert missing.status_code == 404 and "no such route" in missing.json()["error"]["message"]
    role = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]},
    )
    assert role.status_code == 400 and role.json()["error"]["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        _client(url).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], top_logprobs=2
        )


def test_a_full_queue_answers_429(tiny_model) -> None:
    from groundwork.serve import Engine, background_server, create_app

    model, tok = tiny_model
    engine = Engine(model, tok, slots=1, max_waiting=0)
    gate = threading.Event()
    step = engine.step
    engine.step = lambda: (gate.wait(10), step())  # type: ignore[method-assign]
    app = create_app(engine, model_name="tiny")
    with background_server(app) as url:
        body = {"model": "tiny", "prompt": "x", "max_tokens": 2}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=30)
            deadline = time.monotonic() + 10
            while not engine.waiting and time.monotonic() < deadline:
                time.sleep(0.01)
            second = httpx.post(f"{url}/v1/completions", json=body)
            gate.set()
            assert first.result().status_code == 200
        assert second.status_code == 429 and second.json()["error"]["code"] == "queue_full"
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 400 and "no chat template" in chat.json()["error"]["message"]


def test_the_tokenizer_endpoints_lm_eval_uses(server, tiny_model) -> None:
    url, _ = server
    _, tok = tiny_model
    info = httpx.get(f"{url}/tokenizer_info").json()
    assert info["eos_token"] == tok.decode([tok.eot_id])
    ids = httpx.post(f"{url}/tokenize", json={"prompt": "the cat"}).json()["tokens"]
    assert ids == tok.encode("the cat")
    assert httpx.post(f"{url}/detokenize", json={"tokens": ids}).json()["prompt"] == "the cat"


def test_the_serve_command_serves_a_run_until_interrupted(
    tiny_run: Path, tmp_path: Path, chat_template: str
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from groundwork.serve import free_port

    template = tmp_path / "chat.jinja"
    template.write_text(chat_template)
    port = free_port()
    command = [sys.executable, "-m", "groundwork", "serve", str(tiny_run), "--port", str(port),
               "--chat-template", str(template), "--slots", "2", "--threads", "1"]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
        [card] = _client(url).models.list().data
        assert card.id == str(tiny_run)
        reply = _client(url).chat.completions.create(
            model=str(tiny_run), messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.role == "assistant"
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    assert f"serving {str(tiny_run)!r}" in server.stderr.read()
    assert os.path.exists(tiny_run)


def test_the_serve_command_refuses_what_it_cannot_serve(capsys) -> None:
    assert main(["serve", "no-such-model"]) == 2
    assert "neither a run directory nor a named model" in capsys.readouterr().err
    assert main(["serve", "smollm2-135m-instruct", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
