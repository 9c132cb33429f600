"""LoRA adapters in ``peft``'s format: ``adapter_config.json`` and ``adapter_model.safetensors``.

:func:`save_lora` writes what ``peft.PeftModel.from_pretrained(base, directory)`` reads on the
``transformers`` twin of the base model; :func:`load_lora` reads an adapter ``peft`` saved (or
ours) onto our model. A saved key is the module's name under ``peft``'s ``base_model.model.``
prefix, without the adapter's name (``...q_proj.lora_A.weight``). Our Llama modules carry
``transformers``' names, so the keys need no other translation; models whose names differ (GPT-2's
fused ``c_attn`` ``Conv1D``) are refused. Only plain LoRA is read: a ``peft`` config asking for
another method or option (DoRA, per-layer ranks, bias training, ...) is refused by name.
Chapter 13.
"""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.peft.lora import LoRAConfig, apply_lora, lora_state_dict

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "load_lora", "save_lora"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _check_family(model: nn.Module) -> None:
    from groundwork.models.llama import Llama

    if not isinstance(model, Llama):
        raise ConfigError(
            f"peft-format adapters are written for Llama-family models (whose module names are "
            f"transformers'), not a {type(model).__name__}"
        )


def save_lora(
    model: nn.Module, directory: Path | str, config: LoRAConfig, *, base_model: str | None = None
) -> Path:
    """Write ``model``'s LoRA weights and ``config`` as ``peft`` does; returns the directory."""
    from safetensors.torch import save_file

    _check_family(model)
    state = {PREFIX + k: v.detach().contiguous() for k, v in lora_state_dict(model).items()}
    if not state:
        raise ConfigError("the model has no LoRA layers: apply_lora first")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    targets = config.target_modules
    peft_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "use_rslora": config.use_rslora,
        "use_dora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n")
    save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out


UNSUPPORTED: dict[str, Any] = {
    "use_dora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layers_to_transform": None,
}
"""``peft`` LoRA options and the only value of each that :func:`load_lora` reads."""


def lora_config_from_peft(d: dict[str, Any]) -> LoRAConfig:
    """Our :class:`LoRAConfig` from a ``peft`` ``adapter_config.json`` dict.

    Raises:
        ConfigError: not a LoRA config, or an option we do not implement.
    """
    if d.get("peft_type") != "LORA":
        raise ConfigError(
            f"adapter is a {d.get('peft_type')!r} adapter; load_lora reads LoRA (peft_type LORA)"
        )
    for key, value in UNSUPPORTED.items():
        given = d.get(key)
        if given is not None and given != value and given not in ([], {}):
            raise ConfigError(f"the adapter sets {key}={given!r}, which load_lora does not read")
    targets = d.get("target_modules")
    if not targets:
        raise ConfigError("the adapter config names no target_modules")
    return LoRAConfig(
        r=int(d["r"]),
        alpha=float(d.get("lora_alpha", 8)),
        dropout=float(d.get("lora_dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else tuple(targets),
        use_rslora=bool(d.get("use_rslora", False)),
    )


def load_lora(model: nn.Module, directory: Path | str) -> nn.Module:
    """Put the LoRA adapter saved in ``directory`` (by ``peft`` or :func:`save_lora`) on
    ``model`` (in place; returned).

    Raises:
        CheckpointError: missing files, or a weight whose name or shape does not fit the model
            (named).
        ConfigError: a config of another method, or an option we do not implement.
    """
    from safetensors.torch import load_file

    _check_family(model)
    path = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}: not a peft adapter directory")
    config = lora_config_from_peft(json.loads((path / ADAPTER_CONFIG).read_text()))
    apply_lora(model, config)
    ours = lora_state_dict(model)
    saved = load_file(str(path / ADAPTER_WEIGHTS))
    state: dict[str, torch.Tensor] = {}
    for key, value in saved.items():
        name = key.removeprefix(PREFIX).replace(".lora_A.default.", ".lora_A.")
        name = name.replace(".lora_B.default.", ".lora_B.")
        if name not in ours:
            raise CheckpointError(f"adapter weight {key} fits no LoRA layer of the model")
        if ours[name].shape != value.shape:
            raise CheckpointError(
                f"adapter weight {key} has shape {tuple(value.shape)}, the model's "
                f"{tuple(ours[name].shape)}: the adapter was trained on another model"
            )
        state[name] = value
    missing = sorted(set(ours) - set(state))
    if missing:
        raise CheckpointError(
            f"the adapter has no weight for {missing[0]} (and {len(missing) - 1} more)"
        )
    model.load_state_dict(state, strict=False)
    return model
