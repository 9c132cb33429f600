"""One entry point for saved adapters: :func:`load_adapter` reads ``adapter_config.json``'s
``peft_type`` and hands the directory to that method's reader, so an adapter ``peft`` saved (LoRA
and DoRA, IA3, prefix or prompt tuning) or one of ours (those, BitFit, bottleneck adapters) loads
with one call. Chapter 13.
"""

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.peft.naming import ADAPTER_CONFIG

__all__ = ["READERS", "load_adapter"]


def _readers() -> dict[str, Callable[[nn.Module, Path], nn.Module]]:
    from groundwork.peft.adapters import PEFT_TYPE, load_adapters
    from groundwork.peft.bitfit import load_bitfit
    from groundwork.peft.ia3 import load_ia3
    from groundwork.peft.lora_io import load_lora
    from groundwork.peft.prefix_tuning import load_prefix_tuning
    from groundwork.peft.prompt_tuning import load_prompt_tuning

    return {
        "LORA": load_lora,
        "IA3": load_ia3,
        "PREFIX_TUNING": load_prefix_tuning,
        "PROMPT_TUNING": load_prompt_tuning,
        "BITFIT": load_bitfit,
        PEFT_TYPE: load_adapters,
    }


READERS = ("LORA", "IA3", "PREFIX_TUNING", "PROMPT_TUNING", "BITFIT", "BOTTLENECK_ADAPTER")
"""The ``peft_type`` values :func:`load_adapter` reads."""


def load_adapter(model: nn.Module, directory: Path | str) -> nn.Module:
    """Put the adapter saved in ``directory`` on ``model``; returns the adapted model (the same
    object, or a wrapper for prefix and prompt tuning).

    Raises:
        CheckpointError: no ``adapter_config.json``, or an unreadable one.
        ConfigError: a ``peft_type`` we do not implement (named, with those we do).
    """
    path = Path(directory)
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no {ADAPTER_CONFIG}: not a peft adapter directory")
    try:
        peft_type = json.loads(config_file.read_text()).get("peft_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{config_file} is not a JSON object: {e}") from e
    readers = _readers()
    if peft_type not in readers:
        raise ConfigError(
            f"{path} holds a {peft_type!r} adapter; groundwork reads {', '.join(READERS)}"
        )
    return readers[peft_type](model, path)
