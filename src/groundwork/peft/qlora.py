r"""QLoRA: LoRA adapters on a 4-bit quantised, frozen model (Dettmers et al. 2023, "QLoRA:
Efficient Finetuning of Quantized LLMs").

Fine-tuning with LoRA freezes the pretrained weights, so they need not stay in 16 or 32 bits: QLoRA
stores them in 4-bit NormalFloat with double-quantised constants (:mod:`groundwork.nn.nf4`,
about 4.127 bits a weight instead of 16), dequantises each one on the fly when a layer runs, and
trains LoRA adapters (:mod:`groundwork.peft.lora`) in the compute dtype:

.. math:: Y = X \, \mathrm{dequant}(c_2, c_1, W^\text{NF4})^\top + s \, X A^\top B^\top

Gradients reach only :math:`A` and :math:`B` (and, with DoRA, the magnitudes); the gradient with
respect to :math:`X` still passes through the dequantised weight, for the adapters of the layers
below. As in the paper, the embeddings and the output head stay in full precision (a head tied
to the embeddings stays tied), and the adapters should go on every linear layer of the blocks
to match full fine-tuning (paper §4; ``LoRAConfig(target_modules=r".*_proj")`` for our models).
The paper's third ingredient, paged optimizers (optimizer states paged to CPU memory under
memory spikes), is a CUDA memory-management matter left out here.

An adapter cannot be merged into a 4-bit weight (it would be rounded away): :func:`dequantize_model`
turns the NF4 layers back into ``nn.Linear`` layers holding the dequantised weights, after which
:func:`~groundwork.peft.lora.merge_lora` works. Chapter 13.
"""

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.nn.nf4 import NF4Linear
from groundwork.peft.lora import (
    DEFAULT_ADAPTER,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    is_linear_like,
)
from groundwork.peft.naming import select_targets

__all__ = [
    "DEFAULT_SKIP",
    "apply_qlora",
    "dequantize_model",
    "quantize_model",
]

DEFAULT_SKIP = ("lm_head",)
"""Linear layers :func:`quantize_model` leaves in full precision: the output head, as QLoRA."""


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _skipped(name: str, skip: Sequence[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in skip)


# --8<-- [start:quantize_model]
def quantize_model(
    model: nn.Module,
    *,
    blocksize: int = 64,
    double_quant: bool = True,
    skip: Sequence[str] = DEFAULT_SKIP,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by an :class:`~groundwork.nn.nf4.NF4Linear`
    holding its weight in NF4 (in place; the model is returned). Left as they are: layers named
    in ``skip`` (a module whose dotted name is that name or ends in ``.name``), layers whose
    weight is shared with another module (a head tied to the embeddings: quantising it would
    untie them), and everything that is not ``nn.Linear`` (embeddings, norms).

    Raises:
        ConfigError: the model is quantised already, carries LoRA adapters (quantise first:
            :func:`apply_qlora` does both), has no linear layer to quantise, or
            :func:`~groundwork.nn.nf4.quantize_nf4` refuses a weight or the block size.
    """
    if isinstance(skip, str):
        skip = (skip,)
    if any(isinstance(m, NF4Linear) for m in model.modules()):
        raise ConfigError(f"the {type(model).__name__} is quantised already (it has NF4 layers)")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ConfigError(
            "quantise the model before adding LoRA adapters (apply_qlora does both in that order)"
        )
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not _skipped(name, skip) and uses[id(m.weight)] == 1
    ]
    if not targets:
        raise ConfigError(
            f"the {type(model).__name__} has no linear layer to quantise (skip={tuple(skip)!r}; "
            "layers sharing their weight are kept too)"
        )
    # Quantise everything first: a refused weight leaves the model untouched.
    quantized = [
        (name, NF4Linear.from_linear(m, blocksize=blocksize, double_quant=double_quant))
        for name, m in targets
    ]
    for name, layer in quantized:
        _replace(model, name, layer)
    return model


# --8<-- [end:quantize_model]


def apply_qlora(
    model: nn.Module,
    config: LoRAConfig,
    adapter_name: str = DEFAULT_ADAPTER,
    *,
    blocksize: int = 64,
    double_quant: bool = True,
    skip: Sequence[str] = DEFAULT_SKIP,
) -> nn.Module:
    """QLoRA: :func:`quantize_model` (NF4, double quantisation, embeddings and head kept), then
    :func:`~groundwork.peft.lora.apply_lora` with ``config`` on the NF4 layers (in place; the
    model is returned, frozen but for the new adapter).

    Raises:
        ConfigError: ``config.target_modules`` match no linear layer (checked before anything
            changes), or :func:`quantize_model` or :func:`~groundwork.peft.lora.apply_lora`
            refuses.
    """
    linear = [n for n, m in model.named_modules() if is_linear_like(m)]
    if linear:
        select_targets(model, linear, config.matches, f"target_modules {config.target_modules!r}")
    quantize_model(model, blocksize=blocksize, double_quant=double_quant, skip=skip)
    return apply_lora(model, config, adapter_name)


def dequantize_model(model: nn.Module) -> nn.Module:
    """Turn every :class:`~groundwork.nn.nf4.NF4Linear` of ``model`` (LoRA base layers included)
    back into a frozen ``nn.Linear`` holding the dequantised weight, in the layer's compute dtype
    (in place; the model is returned). The model computes the same; adapters can then be merged.

    Raises:
        ConfigError: the model has no NF4 layer.
    """
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]
    if not found:
        raise ConfigError(f"the {type(model).__name__} has no NF4 layer to dequantise")
    for name, q in found:
        weight = q.dequantize()  # (out, in)
        linear = nn.utils.skip_init(
            nn.Linear,
            q.in_features,
            q.out_features,
            bias=q.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(weight)
            if q.bias is not None:
                linear.bias.copy_(q.bias)
        linear.requires_grad_(False)
        _replace(model, name, linear)
    return model
