"""Chat: template rendering (parity with transformers), session commands, the terminal loop."""

import io
import os
import select
import subprocess
import sys
import time
from typing import Any

import pytest

import groundwork
from groundwork.errors import ConfigError
from groundwork.generate.chat import (
    ChatSession,
    parse_params,
    render_chat,
    run_chat,
)
from groundwork.generate.config import GenerationConfig
from groundwork.pretrained import Pretrained

GREEDY = GenerationConfig(max_new_tokens=12, temperature=0)

CONVERSATIONS = {
    "system+user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
    ],
    "multi-turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": 'Name a colour.\nJust one, "quoted" — ünïcode ok'},
    ],
    "no system": [{"role": "user", "content": "What is the capital of France?"}],
}

# Exercises what the environment must provide: whitespace control (trim_blocks, lstrip_blocks),
# tojson without HTML escaping, namespace, loop controls, bos_token and raise_exception.
HARD_TEMPLATE = """\
{{ bos_token }}
{% set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}
        {{ raise_exception('no tools here') }}
    {% endif %}
    {% if message['content'] == 'skip' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
[{{ ns.n }}] {{ message['role'] | upper }}: {{ message['content'] | tojson }}
{% endfor %}
{% if add_generation_prompt %}
[{{ ns.n + 1 }}] ASSISTANT:
{% endif %}"""


@pytest.fixture(scope="module")
def smol() -> Pretrained:
    return groundwork.load("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def hf_tokenizer(smol: Pretrained) -> Any:
    """A transformers tokenizer built offline from the cached tokenizer.json, with the template."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    raw = tokenizers.Tokenizer.from_file(str(smol.path / "tokenizer.json"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=raw)


@pytest.mark.parity
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("which", ["smollm2", "hard"])
def test_render_matches_transformers(
    smol: Pretrained, hf_tokenizer: Any, which: str, name: str, add_generation_prompt: bool
) -> None:
    assert smol.chat_template is not None
    template = smol.chat_template if which == "smollm2" else HARD_TEMPLATE
    messages = CONVERSATIONS[name]
    if which == "hard":
        messages = [*messages, {"role": "user", "content": "skip"}]
    hf_tokenizer.chat_template = template
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, bos_token="<s>"
    )
    ours = render_chat(
        template, messages, add_generation_prompt=add_generation_prompt, bos_token="<s>"
    )
    assert ours == expected


def test_render_smollm2_by_hand(smol: Pretrained) -> None:
    assert smol.chat_template is not None
    text = render_chat(smol.chat_template, [{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no tools here"):
        render_chat(HARD_TEMPLATE, [{"role": "tool", "content": "x"}])
    with pytest.raises(ConfigError, match="chat template error"):
        render_chat("{% for m in messages %}", [])


def test_template_is_sandboxed() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(Exception, match=r"unsafe|not safely|access"):
        render_chat(evil, [])


# ---- commands ------------------------------------------------------------------------------


@pytest.fixture
def session() -> ChatSession:
    nothing: Any = None  # commands need neither a model nor a tokenizer
    return ChatSession(nothing, nothing, "", config=GenerationConfig(max_new_tokens=32))


def test_reset_and_system(session: ChatSession) -> None:
    session.history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert session.handle_command("/reset") == "(conversation cleared)"
    assert session.history == []
    session.history = [{"role": "user", "content": "a"}]
    assert "system prompt set" in (session.handle_command("/system Be brief.") or "")
    assert session.system == "Be brief." and session.history == []
    assert session.messages() == [{"role": "system", "content": "Be brief."}]
    session.handle_command("/system")
    assert session.system is None


def test_params_good(session: ChatSession) -> None:
    reply = session.handle_command("/params temperature=0.7 top_p=0.9 max_new_tokens=64")
    assert reply is not None and "temperature=0.7" in reply
    c = session.config
    assert (c.temperature, c.top_p, c.max_new_tokens) == (0.7, 0.9, 64)
    session.handle_command("/params top_p=none stop_strings=User:,###")
    assert session.config.top_p is None and session.config.stop_strings == ("User:", "###")
    assert "max_new_tokens=64" in (session.handle_command("/params") or "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("temperature=-1", "temperature must be >= 0"),
        ("top_p=1.5", "top_p must be in"),
        ("max_new_tokens=many", "max_new_tokens must be int"),
        ("temprature=0.5", "did you mean 'temperature'"),
        ("num_beams=4", "cannot set 'num_beams'"),
        ("temperature", "expected key=value"),
    ],
)
def test_params_bad(session: ChatSession, args: str, message: str) -> None:
    before = session.config
    reply = session.handle_command(f"/params {args}")
    assert reply is not None and reply.startswith("error: ") and message in reply
    assert session.config is before  # unchanged


def test_parse_params_validates() -> None:
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        parse_params(GenerationConfig(), "top_k=0")


def test_help_quit_unknown_and_plain_text(session: ChatSession) -> None:
    help_text = session.handle_command("/help") or ""
    for command in ("/reset", "/system", "/params", "/help", "/quit"):
        assert command in help_text
    assert "did you mean '/reset'" in (session.handle_command("/rest") or "")
    assert session.handle_command("hello /there") is None
    assert not session.done
    assert session.handle_command("/quit") == "bye" and session.done


def test_context_guard_drops_oldest_turns_once(smol: Pretrained) -> None:
    assert smol.chat_template is not None
    told: list[str] = []
    config = GenerationConfig(max_new_tokens=10)
    session = ChatSession(
        smol.model,
        smol.tokenizer,
        smol.chat_template,
        config=config,
        system="Hi",
        notify=told.append,
    )
    session.history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 20}
        for i in range(6)
    ] + [{"role": "user", "content": "last"}]
    full = len(session.prompt_ids())
    session.max_seq_len = full + config.max_new_tokens - 1  # one token too many
    ids = session.prompt_ids()
    assert len(ids) + config.max_new_tokens <= session.max_seq_len
    assert session.history[0]["content"].startswith("turn 2")  # turns 0 and 1 went together
    assert session.messages()[0] == {"role": "system", "content": "Hi"}
    session.max_seq_len = len(ids) + config.max_new_tokens - 1
    session.prompt_ids()
    assert len(told) == 1 and "dropping the oldest turns" in told[0]
    session.max_seq_len = 20
    with pytest.raises(ConfigError, match="shorten it or lower max_new_tokens"):
        list(session.send("a message that cannot fit " * 5))
    assert session.history[-1]["content"] == "last"  # the rejected message was not kept


# ---- sessions against SmolLM2 ----------------------------------------------------------------


def test_send_streams_and_remembers(smol: Pretrained) -> None:
    assert smol.chat_template is not None
    session = ChatSession(smol.model, smol.tokenizer, smol.chat_template, config=GREEDY)
    pieces = list(session.send("What is the capital of France?"))
    reply = "".join(pieces)
    assert len(pieces) > 1 and "Paris" in reply
    assert "<|im_end|>" not in reply
    assert session.history == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": reply},
    ]


def test_scripted_run_chat(smol: Pretrained) -> None:
    assert smol.chat_template is not None
    script = iter(["What is the capital of France?", "/params max_new_tokens=0", "/quit", "never"])
    prompts: list[str] = []

    def input_fn(prompt: str) -> str:
        prompts.append(prompt)
        return next(script)

    out = io.StringIO()
    run_chat(
        smol.model, smol.tokenizer, smol.chat_template, config=GREEDY, input_fn=input_fn, output=out
    )
    text = out.getvalue()
    assert prompts == ["you> "] * 3
    answer = text.split("assistant> ")[1].splitlines()[0]
    assert "Paris" in answer
    assert "error: max_new_tokens must be a positive integer" in text
    assert text.rstrip().endswith("bye")


class _InterruptOnce(io.StringIO):
    """An output that raises KeyboardInterrupt (as Ctrl-C would) on the first piece of a reply."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def write(self, s: str) -> int:
        if self.armed and self.getvalue().endswith("assistant> "):
            self.armed = False
            raise KeyboardInterrupt
        return super().write(s)


def test_ctrl_c_stops_the_answer_not_the_chat(smol: Pretrained) -> None:
    assert smol.chat_template is not None
    script = iter(["Tell me a long story.", "What is the capital of France?"])

    def input_fn(prompt: str) -> str:
        try:
            return next(script)
        except StopIteration:
            raise EOFError from None

    out = _InterruptOnce()
    run_chat(
        smol.model, smol.tokenizer, smol.chat_template, config=GREEDY, input_fn=input_fn, output=out
    )
    first, second = out.getvalue().split("assistant> ")[1:]
    assert "[stopped]" in first
    assert "Paris" in second


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_terminal_session_in_a_pty(smol: Pretrained) -> None:
    pty = pytest.importorskip("pty")
    try:
        leader, follower = pty.openpty()
    except OSError:
        pytest.skip("no pseudo-terminal available")
    code = "from groundwork.generate.chat import main_for_test; main_for_test(12)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    seen = b""

    def read_until(marker: bytes, count: int, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while seen.count(marker) < count:
            if time.monotonic() > deadline or (proc.poll() is not None and not _ready(leader)):
                raise AssertionError(f"timed out waiting for {marker!r}; got {seen!r}")
            if _ready(leader):
                try:
                    seen += os.read(leader, 4096)
                except OSError:  # Linux: EIO once the child has closed the terminal
                    raise AssertionError(f"the chat exited early; got {seen!r}") from None

    try:
        read_until(b"you> ", 1)
        os.write(leader, b"What is the capital of France?\n")
        read_until(b"you> ", 2)
        os.write(leader, b"/quit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    text = seen.decode("utf-8", errors="replace")
    assert "assistant> " in text and "Paris" in text.split("assistant> ")[1]


def _ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0.1)[0])
