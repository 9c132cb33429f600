"""Named pretrained models, loaded in one call: ``groundwork.load("smollm2-135m-instruct")``,
``groundwork.load("all-minilm-l6-v2")``.

The weights come from a data source (see ``groundwork data list``) in one of two forms:

* a quantized GGUF file (SmolLM2). The first load reads it with our own GGUF reader
  (:mod:`groundwork.interop.gguf`), dequantizes every tensor, builds our
  :class:`~groundwork.models.llama.Llama`, and caches the result in Hugging Face layout
  (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``chat_template.jinja``) under
  ``$GROUNDWORK_HOME/models/<name>/``; later loads read the safetensors and take a second or two.
* a Hugging Face checkpoint directory (all-MiniLM-L6-v2: ``config.json``, ``model.safetensors``,
  ``tokenizer.json``), read in place by :func:`groundwork.interop.hf.import_hf`.

The tokenizer is the source's ``tokenizer.json``, read by :func:`groundwork.tokenize.
load_tokenizer` when it is of a kind we implement (MiniLM's WordPiece), else wrapped
(:class:`~groundwork.tokenize.HFTokenizer`). Chapter 6 (Pretrained model families: loading
real weights).
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import UnknownNameError, did_you_mean
from groundwork.models import registry
from groundwork.tokenize.base import Tokenizer, model_type, read_tokenizer_json
from groundwork.tokenize.wordpiece import WordPiece
from groundwork.tokenize.wrapped import HFTokenizer


@dataclass(frozen=True, kw_only=True)
class PretrainedSource:
    """Where a named model's weights come from."""

    data_source: str
    """The data source (``groundwork data list``) that holds the files."""
    gguf_file: str | None = None
    """The GGUF file inside it; ``None``: the data source is itself a Hugging Face checkpoint
    directory (``config.json``, ``model.safetensors``, ``tokenizer.json``)."""
    description: str
    """One line for ``groundwork model list``."""
    arch: str
    """Its architecture in the registry (:mod:`groundwork.models.registry`)."""
    preset: str
    """The registry preset with its shape, so ``groundwork model info`` can describe the model
    without loading (or downloading) the weights."""

    def config(self) -> Any:
        """The model's config, from the registry preset (no weights are read)."""
        return registry.find_preset(self.preset, self.arch)


PRETRAINED: dict[str, PretrainedSource] = {
    "smollm2-135m-instruct": PretrainedSource(
        data_source="smollm2-135m-instruct",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Hugging Face, 2024): a 134.5M-parameter Llama-style "
        "chat model, 4-bit (Q4_1) GGUF, Apache-2.0",
        arch="llama",
        preset="smollm2-135m",
    ),
    "all-minilm-l6-v2": PretrainedSource(
        data_source="minilm",
        description="all-MiniLM-L6-v2 (sentence-transformers, 2021): a 22.7M-parameter "
        "6-layer BERT (MiniLM) sentence encoder, mean-pooled embeddings of 384 numbers, "
        "Apache-2.0",
        arch="bert",
        preset="minilm-l6",
    ),
}


@dataclass
class Pretrained:
    """A loaded model with what is needed to talk to it."""

    model: nn.Module
    tokenizer: Tokenizer
    chat_template: str | None
    path: Path
    """The directory read (Hugging Face layout: ``from_pretrained(path)`` loads it too)."""


def load(name: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Pretrained:
    """Load a named pretrained model and its tokenizer (model in eval mode).

    Args:
        name: One of :data:`PRETRAINED` (``"smollm2-135m-instruct"``, ``"all-minilm-l6-v2"``).
        dtype: Parameter dtype.
        device: Where to put the model.

    Raises:
        UnknownNameError: the name is not a known model.
    """
    from groundwork import corpus
    from groundwork.interop.hf import import_hf

    if name not in PRETRAINED:
        raise UnknownNameError(
            f"unknown pretrained model {name!r}: {did_you_mean(name, PRETRAINED)}"
        )
    source = PRETRAINED[name]
    if source.gguf_file is None:  # already a Hugging Face checkpoint
        cache = corpus.fetch(source.data_source)
    else:
        cache = corpus.home() / "models" / name
        if not (cache / "model.safetensors").exists():
            _convert(source, cache)
    model = import_hf(cache, dtype=dtype).to(device).eval()
    tokenizer = _tokenizer(cache / "tokenizer.json")
    template_file = cache / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.exists() else None
    return Pretrained(model=model, tokenizer=tokenizer, chat_template=template, path=cache)


def _tokenizer(path: Path) -> Tokenizer:
    """Our own WordPiece for a WordPiece ``tokenizer.json`` (it encodes MiniLM's exactly as
    ``tokenizers`` does); the ``tokenizers`` library behind our interface for any other."""
    data = read_tokenizer_json(path)
    if model_type(data, path) == "WordPiece":
        return WordPiece.from_json_dict(data, path)
    return HFTokenizer.from_json_dict(data, path)


def _convert(source: PretrainedSource, cache: Path) -> None:
    """Dequantize the GGUF into a Hugging Face-layout directory, written whole or not at all."""
    from groundwork import corpus
    from groundwork.interop.gguf import GGUFFile, llama_from_gguf
    from groundwork.interop.gguf_tokenizer import chat_template_from_gguf, tokenizer_from_gguf
    from groundwork.interop.hf import export_hf

    assert source.gguf_file is not None
    gguf_path = corpus.fetch(source.data_source) / source.gguf_file
    metadata = GGUFFile(gguf_path).metadata
    eos = metadata.get("tokenizer.ggml.eos_token_id")
    bos = metadata.get("tokenizer.ggml.bos_token_id", eos)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        export_hf(llama_from_gguf(gguf_path), tmp, eos_token_id=eos, bos_token_id=bos)
        tokenizer_from_gguf(metadata).save(str(tmp / "tokenizer.json"))
        template = chat_template_from_gguf(metadata)
        if template is not None:
            (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
