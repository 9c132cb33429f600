r"""BitFit: fine-tune the bias terms alone (Ben Zaken, Ravfogel and Goldberg 2022, "BitFit: Simple
Parameter-efficient Fine-tuning for Transformer-based Masked Language-models").

Every weight matrix stays frozen; only the additive terms train: :math:`b` in :math:`Wx + b` of the
linear layers and :math:`\beta` of the LayerNorms. On GPT-2 that is about 0.1 % of the
parameters (:math:`d` for every bias vector of a linear layer's output, two LayerNorms a block and
the final one), and the model starts as the pretrained one, since nothing but the training set
changes.

**Llama has no biases at all** (SmolLM2's linear layers and RMSNorms are bias-free), so on it
:func:`apply_bitfit` *adds* a bias vector, initialised to zero, to every targeted linear layer (by
default every linear layer but the output head): :math:`Wx + b` with :math:`b = 0` is the base
model's :math:`Wx`, so the adapted model still starts exactly as the base. The added biases are
ordinary ``nn.Linear`` biases; there is nothing to merge. A Llama with biases is no longer a plain
Llama, though (its state dict has ``...q_proj.bias`` keys the architecture lacks, and its
``transformers`` twin has no place for them): keep the biases apart with
:func:`bitfit_state_dict` / :func:`save_bitfit`, and put them on a fresh base with
:func:`load_bitfit`.

``peft`` has no BitFit (its LoRA option ``bias="all"`` trains the existing biases beside LoRA), so
the saved format is our own: an ``adapter_config.json`` with ``"peft_type": "BITFIT"`` and an
``adapter_model.safetensors`` of the biases under our parameter names, which ``peft`` cannot read.
Chapter 13.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.peft.naming import (
    peft_matches,
    read_adapter,
    require_peft_type,
    select_targets,
    write_adapter,
)

__all__ = [
    "BitFitConfig",
    "apply_bitfit",
    "bitfit_parameter_names",
    "bitfit_state_dict",
    "load_bitfit",
    "save_bitfit",
]

Targets = tuple[str, ...] | str

OUTPUT_HEAD = "lm_head"
"""The linear layer the default targets leave out: the output head (tied to the embeddings in
GPT-2 and SmolLM2, and with no bias in either)."""


@dataclass(frozen=True)
class BitFitConfig:
    """Which biases train."""

    target_modules: Targets | None = None
    """Linear layers whose bias trains: a tuple of names, each matching a module whose dotted name
    is that name or ends in ``.name``, or one regular expression the whole dotted name must match
    (``peft``'s rule). ``None``: every linear layer but the output head (``lm_head``)."""
    add_biases: bool = True
    """Give a targeted linear layer that has no bias (all of Llama's) a zero one; ``False`` leaves
    such layers out."""
    norm_biases: bool = True
    """Train the biases of the other modules too: GPT-2's LayerNorms (RMSNorm has none)."""

    def __post_init__(self) -> None:
        if self.target_modules is not None and not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
            if not self.target_modules:
                raise ConfigError("BitFitConfig.target_modules is empty: None means every layer")

    def matches(self, name: str) -> bool:
        """Whether the linear layer called ``name`` (dotted) is a target."""
        if self.target_modules is None:
            return name.rsplit(".", 1)[-1] != OUTPUT_HEAD
        return peft_matches(name, self.target_modules)


def _plan(model: nn.Module, config: BitFitConfig) -> dict[str, tuple[int, ...]]:
    """The biases BitFit trains in ``model`` (parameter name -> shape), those it would add
    included, without touching the model.

    Raises:
        ConfigError: the targets match no linear layer (listed), or there is no bias to train.
    """
    linear = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    targets = select_targets(
        model, list(linear), config.matches, f"target_modules {config.target_modules!r}"
    )
    plan: dict[str, tuple[int, ...]] = {}
    for name in targets:
        layer = linear[name]
        if layer.bias is not None or config.add_biases:
            plan[f"{name}.bias" if name else "bias"] = (layer.out_features,)
    if config.norm_biases:
        for name, m in model.named_modules():
            bias = getattr(m, "bias", None)
            if not isinstance(m, nn.Linear) and isinstance(bias, nn.Parameter):
                plan[f"{name}.bias" if name else "bias"] = tuple(bias.shape)
    if not plan:
        raise ConfigError(
            f"the {type(model).__name__}'s targeted linear layers have no biases and "
            "add_biases=False: there is nothing to train"
        )
    return plan


def bitfit_parameter_names(model: nn.Module, config: BitFitConfig) -> list[str]:
    """The names of the biases BitFit trains in ``model`` (those :func:`apply_bitfit` adds
    included).

    Raises:
        ConfigError: as :func:`apply_bitfit`.
    """
    return list(_plan(model, config))


def apply_bitfit(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freeze ``model`` but its biases (in place; the model is returned): those of the targeted
    linear layers (a zero one added to each that has none, unless ``add_biases=False``) and, with
    ``norm_biases``, the LayerNorms'.

    Raises:
        ConfigError: no linear layer matches ``target_modules`` (the message lists the linear
            layers' names), or there is no bias to train.
    """
    plan = _plan(model, config)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in plan:
        module_name = name.removesuffix("bias").removesuffix(".")
        module = model.get_submodule(module_name)
        if isinstance(module, nn.Linear) and module.bias is None:
            w = module.weight
            module.bias = nn.Parameter(
                torch.zeros(module.out_features, device=w.device, dtype=w.dtype)
            )
        bias = module.bias
        assert isinstance(bias, nn.Parameter)
        bias.requires_grad_(True)
    return model


def bitfit_state_dict(model: nn.Module, config: BitFitConfig) -> dict[str, torch.Tensor]:
    """The biases BitFit trains, by parameter name (``blocks.0.attn.qkv_proj.bias``, ...).

    Raises:
        ConfigError: a Llama the biases were not added to (apply :func:`apply_bitfit` first).
    """
    params = dict(model.named_parameters())
    missing = [name for name in _plan(model, config) if name not in params]
    if missing:
        raise ConfigError(
            f"the {type(model).__name__} has no {missing[0]} (and {len(missing) - 1} more "
            "missing biases): apply_bitfit first"
        )
    return {name: params[name].detach() for name in _plan(model, config)}


def save_bitfit(model: nn.Module, directory: Path | str, config: BitFitConfig) -> Path:
    """Write the trained biases and ``config`` to ``directory`` (our format, see the module
    docstring); returns the directory."""
    written: dict[str, Any] = {
        "peft_type": "BITFIT",
        "format": "groundwork",  # not peft's: peft has no BitFit
        "model_class": type(model).__name__,
        "target_modules": (
            config.target_modules
            if config.target_modules is None or isinstance(config.target_modules, str)
            else list(config.target_modules)
        ),
        "add_biases": config.add_biases,
        "norm_biases": config.norm_biases,
    }
    return write_adapter(directory, written, bitfit_state_dict(model, config), prefix="")


def load_bitfit(model: nn.Module, directory: Path | str) -> nn.Module:
    """Apply the BitFit config saved in ``directory`` (by :func:`save_bitfit`) to ``model`` and
    load its biases (in place; returned). The model is checked before it is changed.

    Raises:
        CheckpointError: missing files, or a bias whose name or shape does not fit the model
            (named).
        ConfigError: a config of another method, or targets that match nothing in ``model``.
    """
    saved, weights = read_adapter(directory)
    require_peft_type(saved, "BITFIT", "load_bitfit")
    targets = saved.get("target_modules")
    config = BitFitConfig(
        target_modules=targets if targets is None or isinstance(targets, str) else tuple(targets),
        add_biases=bool(saved.get("add_biases", True)),
        norm_biases=bool(saved.get("norm_biases", True)),
    )
    plan = _plan(model, config)
    for key, value in weights.items():
        if key not in plan:
            raise CheckpointError(
                f"saved bias {key} fits no bias BitFit trains in the {type(model).__name__}: "
                "it was saved for another model"
            )
        if tuple(value.shape) != plan[key]:
            raise CheckpointError(
                f"saved bias {key} has shape {tuple(value.shape)}, the model's {plan[key]}: the "
                "biases were trained on another model"
            )
    missing = sorted(set(plan) - set(weights))
    if missing:
        raise CheckpointError(
            f"{directory} has no {missing[0]} (and {len(missing) - 1} more biases the model has)"
        )
    apply_bitfit(model, config)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in weights.items():
            params[key].copy_(value)
    return model
