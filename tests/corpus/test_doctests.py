"""Run the worked examples in the corpus modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["clean", "dedup", "splits", "parsers", "shards", "fetch", "documents"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"groundwork.corpus.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
