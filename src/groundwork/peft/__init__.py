"""Parameter-efficient fine-tuning (chapter 13): model transforms ``apply_x(model, cfg) -> model``
that freeze a pretrained model and add a few trainable weights.

* :mod:`groundwork.peft.lora`: LoRA (Hu et al. 2021), with rsLoRA scaling, DoRA, several named
  adapters, merge and unmerge;
* :mod:`groundwork.peft.lora_io`: LoRA adapters saved and loaded in ``peft``'s format;
* :mod:`groundwork.peft.naming`: ``peft``'s module names and adapter files, shared by every method.
"""

from groundwork.peft.lora import (
    DEFAULT_ADAPTER,
    LoRAConfig,
    LoRALinear,
    active_adapters,
    apply_lora,
    delete_adapter,
    lora_state_dict,
    merge_lora,
    set_adapter,
    trainable_parameters,
    unmerge_lora,
)
from groundwork.peft.lora_io import load_lora, save_lora

__all__ = [
    "DEFAULT_ADAPTER",
    "LoRAConfig",
    "LoRALinear",
    "active_adapters",
    "apply_lora",
    "delete_adapter",
    "load_lora",
    "lora_state_dict",
    "merge_lora",
    "save_lora",
    "set_adapter",
    "trainable_parameters",
    "unmerge_lora",
]
