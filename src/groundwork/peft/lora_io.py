"""LoRA adapters in ``peft``'s format: ``adapter_config.json`` and ``adapter_model.safetensors``.

:func:`save_lora` writes what ``peft.PeftModel.from_pretrained(base, directory)`` reads on the
``transformers`` twin of the base model; :func:`load_lora` reads an adapter ``peft`` saved (or
ours) onto our model. A saved key is the module's ``transformers`` name under ``peft``'s
``base_model.model.`` prefix, without the adapter's name (``...q_proj.lora_A.weight``); names
are translated by :mod:`groundwork.peft.naming` (our Llama's are ``transformers``' already; our
GPT's ``blocks.0.attn.qkv_proj`` is GPT-2's ``transformer.h.0.attn.c_attn``, a ``Conv1D``, which
``peft`` adapts with ``fan_in_fan_out`` but whose ``lora_A``/``lora_B`` have the same shapes as
ours). LoRA, rsLoRA and DoRA are read; a ``peft`` config asking for another method or option
(per-layer ranks, bias training, ...) is refused by name. Chapter 13.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.peft.lora import (
    DEFAULT_ADAPTER,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    is_linear_like,
    lora_state_dict,
)
from groundwork.peft.naming import (
    check_family,
    hf_module_name,
    hf_targets,
    peft_matches,
    read_adapter,
    require_peft_type,
    write_adapter,
)

__all__ = ["load_lora", "lora_config_from_peft", "save_lora"]


def save_lora(
    model: nn.Module,
    directory: Path | str,
    config: LoRAConfig,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    base_model: str | None = None,
) -> Path:
    """Write adapter ``adapter_name`` of ``model`` and its ``config`` as ``peft`` does; returns
    the directory."""
    family = check_family(model)
    ours = lora_state_dict(model, adapter_name)
    if not ours:
        raise ConfigError(f"the model has no LoRA adapter {adapter_name!r}: apply_lora first")
    adapted = sorted({k.rsplit(".lora_", 1)[0] for k in ours})
    state = {}
    for key, value in ours.items():
        module, _, tail = key.partition(".lora_")
        state[f"{hf_module_name(model, module)}.lora_{tail}"] = value
    peft_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": hf_targets(model, adapted),
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "bias": "none",
        "fan_in_fan_out": family == "gpt",  # GPT-2's Conv1D layers store weights (in, out)
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
    }
    return write_adapter(directory, peft_config, state)


UNSUPPORTED: dict[str, Any] = {
    "bias": "none",
    "modules_to_save": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layers_to_transform": None,
    "lora_bias": False,
    "layer_replication": None,
    "trainable_token_indices": None,
    "target_parameters": None,
}
"""``peft`` LoRA options and the only value of each that :func:`load_lora` reads."""


def lora_config_from_peft(d: dict[str, Any]) -> LoRAConfig:
    """Our :class:`LoRAConfig` from a ``peft`` ``adapter_config.json`` dict (targets as
    ``peft`` wrote them, in ``transformers``' names).

    Raises:
        ConfigError: not a LoRA config, or an option we do not implement.
    """
    require_peft_type(d, "LORA", "load_lora")
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
        use_dora=bool(d.get("use_dora", False)),
    )


def load_lora(
    model: nn.Module, directory: Path | str, *, adapter_name: str = DEFAULT_ADAPTER
) -> nn.Module:
    """Put the LoRA adapter saved in ``directory`` (by ``peft`` or :func:`save_lora`) on
    ``model`` as adapter ``adapter_name`` (in place; returned).

    Raises:
        CheckpointError: missing files, or a weight whose name or shape does not fit the model
            (named).
        ConfigError: a config of another method, or an option we do not implement.
    """
    check_family(model)
    peft_config, saved = read_adapter(directory)
    hf_config = lora_config_from_peft(peft_config)
    # peft matched its targets against transformers' names: match ours by their twins' names
    ours_targets = tuple(
        name
        for name, m in model.named_modules()
        if (is_linear_like(m) or isinstance(m, LoRALinear))
        and ".lora_" not in name
        and not name.endswith(".base_layer")
        and _has_twin(model, name)
        and peft_matches(hf_module_name(model, name), hf_config.target_modules)
    )
    if not ours_targets:
        raise CheckpointError(
            f"the adapter's target_modules {hf_config.target_modules!r} match no layer of the "
            f"{type(model).__name__}: it was saved for another model"
        )
    config = LoRAConfig(
        r=hf_config.r,
        alpha=hf_config.alpha,
        dropout=hf_config.dropout,
        target_modules=ours_targets,
        use_rslora=hf_config.use_rslora,
        use_dora=hf_config.use_dora,
    )
    apply_lora(model, config, adapter_name)
    ours = lora_state_dict(model, adapter_name)
    by_hf = {}
    for key in ours:
        module, _, tail = key.partition(".lora_")
        by_hf[f"{hf_module_name(model, module)}.lora_{tail}"] = key
    with torch.no_grad():
        for key, value in saved.items():
            name = key.replace(f".{DEFAULT_ADAPTER}.", ".") if key not in by_hf else key
            if name not in by_hf:
                raise CheckpointError(f"adapter weight {key} fits no LoRA layer of the model")
            target = ours[by_hf[name]]
            if target.shape != value.shape:
                raise CheckpointError(
                    f"adapter weight {key} has shape {tuple(value.shape)}, the model's "
                    f"{tuple(target.shape)}: the adapter was trained on another model"
                )
            target.copy_(value)
            by_hf.pop(name)
    if by_hf:
        missing = sorted(by_hf)
        raise CheckpointError(
            f"the adapter has no weight for {missing[0]} (and {len(missing) - 1} more)"
        )
    return model


def _has_twin(model: nn.Module, name: str) -> bool:
    try:
        hf_module_name(model, name)
    except CheckpointError:
        return False
    return True
