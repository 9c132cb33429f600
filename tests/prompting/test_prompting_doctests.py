"""Run the worked examples in the prompting modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["agents", "calculator", "calibration", "cot", "fewshot", "tools"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"groundwork.prompting.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
