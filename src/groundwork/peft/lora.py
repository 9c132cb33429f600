r"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models").

A pretrained weight :math:`W_0 \in \mathbb{R}^{d_\text{out} \times d_\text{in}}` stays frozen;
the update is learnt as a product of two thin matrices, :math:`\Delta W = s \, B A` with
:math:`A \in \mathbb{R}^{r \times d_\text{in}}`, :math:`B \in \mathbb{R}^{d_\text{out} \times r}`
and :math:`r \ll \min(d_\text{in}, d_\text{out})`, so a layer computes

.. math:: h = W_0 x + s \, B A \, \mathrm{dropout}(x), \qquad s = \alpha / r

(rsLoRA, Kalajdzievski 2023: :math:`s = \alpha / \sqrt{r}`, which keeps the update's scale as
:math:`r` grows). :math:`A` starts random (Kaiming-uniform, as ``nn.Linear``) and :math:`B` at
zero, so the adapted model starts exactly as the pretrained one. Training touches
:math:`r (d_\text{in} + d_\text{out})` numbers per layer instead of
:math:`d_\text{in} d_\text{out}`. **Merging** adds :math:`s B A` into :math:`W_0` (no extra cost
at inference); **unmerging** subtracts it again.

Module names and the ``lora_A``/``lora_B`` layout follow the ``peft`` library (whose LoRA layers
hold ``lora_A.<adapter>``, ``lora_B.<adapter>`` beside the ``base_layer``); tested equal to
``peft``'s LoRA on the same weights. ``apply_lora`` is a model transform: it freezes every
parameter of the model and wraps the ``nn.Linear`` layers whose names match
``target_modules``. Chapter 13.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from groundwork.errors import ConfigError

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "lora_state_dict",
    "merge_lora",
    "trainable_parameters",
    "unmerge_lora",
]


@dataclass(frozen=True)
class LoRAConfig:
    """Which layers get an adapter, and its rank, scale and dropout."""

    r: int = 8
    """Rank of the update :math:`BA`."""
    alpha: float = 16.0
    """Scale numerator: the update is multiplied by ``alpha / r`` (rsLoRA: ``alpha / sqrt(r)``)."""
    dropout: float = 0.0
    """Dropout on the adapter's input (not on the frozen path)."""
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")
    """Names of the linear layers to adapt: a tuple of names, each matching a module whose
    dotted name is that name or ends in ``.name`` (as ``peft``); or one string, a regular
    expression the whole dotted name must match."""
    use_rslora: bool = False
    """Scale by ``alpha / sqrt(r)`` (Kalajdzievski 2023) instead of ``alpha / r``."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        """The factor :math:`s` of the update :math:`s B A`."""
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` (dotted) is a target."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)


# --8<-- [start:lora_linear]
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus a trainable low-rank update."""

    def __init__(self, base_layer: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        d_in, d_out = base_layer.in_features, base_layer.out_features
        if config.r > min(d_in, d_out):
            raise ConfigError(
                f"LoRA rank {config.r} is larger than the layer ({d_out} x {d_in}): a rank above "
                f"{min(d_in, d_out)} is no longer low rank"
            )
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.r, self.scaling = config.r, config.scaling
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        weight = base_layer.weight
        self.lora_A = nn.Linear(
            d_in, config.r, bias=False, device=weight.device, dtype=weight.dtype
        )
        self.lora_B = nn.Linear(
            config.r, d_out, bias=False, device=weight.device, dtype=weight.dtype
        )
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear and peft
        nn.init.zeros_(self.lora_B.weight)  # the adapted model starts as the base model
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """:math:`s B A`, ``(d_out, d_in)``: what merging adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (a no-op if it is there already)."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (a no-op if it is not in)."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False


# --8<-- [end:lora_linear]


def _lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Freeze ``model`` and put a LoRA adapter on every ``nn.Linear`` that ``config`` targets
    (in place; the model is returned).

    Raises:
        ConfigError: no linear layer matches ``target_modules`` (the message lists the linear
            layers' names), the model already has LoRA layers, or the rank is too large.
    """
    if any(True for _ in _lora_layers(model)):
        raise ConfigError("the model already has LoRA layers: apply_lora once per model")
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets = [name for name in linear if config.matches(name)]
    if not targets:
        suffixes = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ConfigError(
            f"target_modules {config.target_modules!r} match no linear layer of the "
            f"{type(model).__name__}; its linear layers are named {', '.join(suffixes) or '(none)'}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), config))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of ``model`` into its base weight."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged LoRA update out of its base weight again."""
    for layer in _lora_layers(model):
        layer.unmerge()
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone (``...lora_A.weight``, ``...lora_B.weight``)."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
