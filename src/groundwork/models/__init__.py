"""Model architectures, one readable file each, with their configs and named presets.

* :mod:`groundwork.models.gpt`: GPT-2 (``GPT``, ``GPTConfig``).
* :mod:`groundwork.models.llama`: Llama (``Llama``, ``LlamaConfig``).
* :mod:`groundwork.models.info`: parameter counts, FLOPs and memory of a config.
"""

from groundwork.errors import ConfigError
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.info import format_info, info
from groundwork.models.llama import Llama, LlamaConfig

ModelConfig = GPTConfig | LlamaConfig


def build_model(config: ModelConfig) -> GPT | Llama:
    """The model a config describes: ``GPT`` for ``GPTConfig``, ``Llama`` for ``LlamaConfig``."""
    if isinstance(config, GPTConfig):
        return GPT(config)
    if isinstance(config, LlamaConfig):
        return Llama(config)
    raise ConfigError(f"no model for config of type {type(config).__name__}")


__all__ = [
    "GPT",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
    "ModelConfig",
    "build_model",
    "format_info",
    "info",
]
