"""Parameter-efficient fine-tuning (chapter 13): model transforms ``apply_x(model, cfg) -> model``
that freeze a pretrained model and add a few trainable weights.

* :mod:`groundwork.peft.lora`: LoRA (Hu et al. 2021), with rsLoRA scaling, merge and unmerge;
* :mod:`groundwork.peft.lora_io`: LoRA adapters saved and loaded in ``peft``'s format.
"""

from groundwork.peft.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from groundwork.peft.lora_io import load_lora, save_lora

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "load_lora",
    "lora_state_dict",
    "merge_lora",
    "save_lora",
    "trainable_parameters",
    "unmerge_lora",
]
