"""Shared by the model-editing tests: every test runs on one thread (tiny models are faster so,
and do not fight other processes for the cores)."""

from collections.abc import Iterator

import pytest

from groundwork.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and do not fight other processes for cores."""
    with torch_threads(1):
        yield
