"""Run the worked examples in the retrieval modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["base", "bm25", "chunking", "datasets", "dense", "fusion", "knnlm", "metrics", "rag"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"groundwork.retrieval.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
