"""A tiny trained-tokenizer Llama run, its model, and a server on a free local port."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import tiny_llama_run

TEXTS = [
    "the cat sat on the mat and looked at the dog. " * 12,
    "a dog ran far away from home, then came back for dinner. " * 12,
    "rain fell on the quiet town all night long. " * 12,
]
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""A small chat template for the tiny model (it has none of its own)."""

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="session")
def chat_template() -> str:
    return TEMPLATE


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_run(tmp_path_factory.mktemp("serve"), TEXTS, vocab_size=300, max_seq_len=128)


@pytest.fixture(scope="session")
def tiny_model(tiny_run: Path) -> tuple[Any, Any]:
    from groundwork.runs import load_run

    model, tokenizer, _ = load_run(tiny_run)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def server(tiny_model: tuple[Any, Any]) -> Iterator[tuple[str, Any]]:
    """``(base_url, engine)`` of a server for the tiny model, named ``tiny``, 4 slots."""
    from groundwork.serve import Engine, background_server, create_app

    model, tokenizer = tiny_model
    engine = Engine(model, tokenizer, slots=4, max_waiting=64)
    app = create_app(engine, model_name="tiny", chat_template=TEMPLATE)
    with background_server(app) as url:
        yield url, engine
