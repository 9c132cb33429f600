"""Fixtures shared by the recipe tests."""

from pathlib import Path

import pytest

import helpers
from groundwork.corpus.conll import conll_sample


@pytest.fixture(scope="module")
def conll_bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT run whose WordPiece tokenizer was trained on the CoNLL sample."""
    texts = [" ".join(s.words) for s in conll_sample()]
    return helpers.tiny_bert_run(tmp_path_factory.mktemp("bert"), texts, vocab_size=300)
