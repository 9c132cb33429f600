"""SFT examples: labels exactly on the assistant's tokens (checked token by token against the
template), ids equal to the whole text's, bad conversations and templates refused."""

import itertools

import pytest

from groundwork import tokenize
from groundwork.align import IGNORE_INDEX, PLAIN_TEMPLATE, tokenize_conversation
from groundwork.errors import ConfigError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris"},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, the city."},
]


@pytest.fixture(scope="module")
def tokenizer() -> tokenize.Tokenizer:
    texts = ["What is the capital of France? Paris. And of Italy? Rome, the city. Answer briefly."]
    specials = ["<|im_start|>", "<|im_end|>", "<eos>"]
    return tokenize.train_tokenizer("bpe", texts, 320, special_tokens=specials)


def _trained_runs(tokenizer: tokenize.Tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The text of each run of consecutive labelled tokens."""
    runs = []
    for trained, group in itertools.groupby(zip(ids, labels, strict=True), lambda p: p[1] >= 0):
        if trained:
            runs.append(tokenizer.decode([i for i, _ in group]))
    return runs


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (CHATML, ["Paris<|im_end|>\n", "Rome, the city.<|im_end|>\n"]),
        (PLAIN_TEMPLATE, [" Paris<eos>\n", " Rome, the city.<eos>\n"]),
    ],
)
def test_labels_are_the_assistant_turns_and_their_end_markers(
    tokenizer: tokenize.Tokenizer, template: str, expected: list[str]
) -> None:
    example = tokenize_conversation(tokenizer, template, CONVERSATION, eos_token="<eos>")
    assert len(example.input_ids) == len(example.labels)
    for token, label in zip(example.input_ids, example.labels, strict=True):
        assert label in (token, IGNORE_INDEX)  # a label is the token itself, or no loss
    assert _trained_runs(tokenizer, example.input_ids, example.labels) == expected
    assert example.trained_tokens == sum(len(tokenizer.encode(t)) for t in expected)
    # the prompt part is exactly what the model reads at inference before answering
    assert tokenizer.decode(example.input_ids).startswith(
        "<|im_start|>system" if template == CHATML else "System:"
    )


def test_max_tokens_cuts_ids_and_labels_alike(tokenizer: tokenize.Tokenizer) -> None:
    full = tokenize_conversation(tokenizer, CHATML, CONVERSATION)
    cut = tokenize_conversation(tokenizer, CHATML, CONVERSATION, max_tokens=10)
    assert cut.input_ids == full.input_ids[:10] and cut.labels == full.labels[:10]


def test_bad_conversations_and_templates(tokenizer: tokenize.Tokenizer) -> None:
    with pytest.raises(ConfigError, match="no assistant turn"):
        tokenize_conversation(tokenizer, CHATML, CONVERSATION[:2])
    with pytest.raises(ConfigError, match="message 1 has role 'robot'; roles are system"):
        tokenize_conversation(
            tokenizer, CHATML, [CONVERSATION[0], {"role": "robot", "content": "x"}]
        )
    with pytest.raises(ConfigError, match="is not a"):
        tokenize_conversation(tokenizer, CHATML, [{"role": "user"}])
    no_system = (
        "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n"
        "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ConfigError, match=r"renders nothing for message 0 \(role 'system'\)"):
        tokenize_conversation(tokenizer, no_system, CONVERSATION)
    with pytest.raises(ConfigError, match="max_tokens must be >= 1"):
        tokenize_conversation(tokenizer, CHATML, CONVERSATION, max_tokens=0)
