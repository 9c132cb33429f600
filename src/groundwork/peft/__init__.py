"""Parameter-efficient fine-tuning (chapter 13): model transforms ``apply_x(model, cfg) -> model``
that freeze a pretrained model and add a few trainable weights.

* :mod:`groundwork.peft.lora`: LoRA (Hu et al. 2021), with rsLoRA scaling, DoRA, several named
  adapters, merge and unmerge; :mod:`groundwork.peft.lora_io`: in ``peft``'s format;
* :mod:`groundwork.peft.qlora`: QLoRA (Dettmers et al. 2023), LoRA over an NF4 base
  (:mod:`groundwork.nn.nf4`);
* :mod:`groundwork.peft.adapters`: bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al.);
* :mod:`groundwork.peft.prefix_tuning` (Li & Liang 2021) and
  :mod:`groundwork.peft.prompt_tuning` (Lester et al. 2021), over
  :mod:`groundwork.peft.virtual_tokens`;
* :mod:`groundwork.peft.ia3` (Liu et al. 2022) and :mod:`groundwork.peft.bitfit` (Ben Zaken et
  al. 2022);
* :mod:`groundwork.peft.methods`: the methods by name (``groundwork finetune --method``);
  :mod:`groundwork.peft.io`: :func:`load_adapter`, whatever the method;
  :mod:`groundwork.peft.naming`: ``peft``'s module names and adapter files.
"""

from groundwork.peft.adapters import AdapterConfig, apply_adapters, load_adapters, save_adapters
from groundwork.peft.bitfit import BitFitConfig, apply_bitfit, load_bitfit, save_bitfit
from groundwork.peft.ia3 import IA3Config, apply_ia3, load_ia3, merge_ia3, save_ia3, unmerge_ia3
from groundwork.peft.io import load_adapter
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
from groundwork.peft.methods import METHODS, apply_method
from groundwork.peft.prefix_tuning import (
    PrefixTuned,
    PrefixTuningConfig,
    apply_prefix_tuning,
    load_prefix_tuning,
    save_prefix_tuning,
)
from groundwork.peft.prompt_tuning import (
    PromptTuned,
    PromptTuningConfig,
    apply_prompt_tuning,
    load_prompt_tuning,
    save_prompt_tuning,
)
from groundwork.peft.qlora import apply_qlora, dequantize_model, quantize_model

__all__ = [
    "DEFAULT_ADAPTER",
    "METHODS",
    "AdapterConfig",
    "BitFitConfig",
    "IA3Config",
    "LoRAConfig",
    "LoRALinear",
    "PrefixTuned",
    "PrefixTuningConfig",
    "PromptTuned",
    "PromptTuningConfig",
    "active_adapters",
    "apply_adapters",
    "apply_bitfit",
    "apply_ia3",
    "apply_lora",
    "apply_method",
    "apply_prefix_tuning",
    "apply_prompt_tuning",
    "apply_qlora",
    "delete_adapter",
    "dequantize_model",
    "load_adapter",
    "load_adapters",
    "load_bitfit",
    "load_ia3",
    "load_lora",
    "load_prefix_tuning",
    "load_prompt_tuning",
    "lora_state_dict",
    "merge_ia3",
    "merge_lora",
    "quantize_model",
    "save_adapters",
    "save_bitfit",
    "save_ia3",
    "save_lora",
    "save_prefix_tuning",
    "save_prompt_tuning",
    "set_adapter",
    "trainable_parameters",
    "unmerge_ia3",
    "unmerge_lora",
]
