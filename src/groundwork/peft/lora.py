r"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models"), with DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed
Low-Rank Adaptation") as an option and several named adapters per model.

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

**DoRA** splits each output row of the weight into a length and a direction and learns the
length separately: with a trainable magnitude :math:`m \in \mathbb{R}^{d_\text{out}}` (initialised
to the row norms of :math:`W_0`), :math:`W' = m \odot (W_0 + sBA) / \lVert W_0 + sBA
\rVert_\text{row}`. As in the paper (§4.3) and ``peft``, the norm is treated as a constant in
the backward pass.

**Named adapters**: a model may carry several (``apply_lora(model, cfg, adapter_name="b")``);
:func:`set_adapter` chooses which are active (their updates add up) and trainable.

Module names and the ``lora_A.<adapter>``/``lora_B.<adapter>`` layout follow the ``peft``
library; tested equal to ``peft``'s LoRA and DoRA on the same weights. ``apply_lora`` is a model
transform: it freezes every parameter of the model and wraps the layers whose names match
``target_modules`` (``nn.Linear``, or a quantised linear layer with ``dequantize()``, for QLoRA).
Chapter 13.
"""

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.peft.naming import select_targets

__all__ = [
    "DEFAULT_ADAPTER",
    "LoRAConfig",
    "LoRALinear",
    "active_adapters",
    "apply_lora",
    "delete_adapter",
    "lora_state_dict",
    "merge_lora",
    "set_adapter",
    "trainable_parameters",
    "unmerge_lora",
]

DEFAULT_ADAPTER = "default"
"""The adapter name ``peft`` and we use when none is given."""


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
    use_dora: bool = False
    """Learn a magnitude per output row as well (DoRA, Liu et al. 2024)."""

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


def is_linear_like(module: nn.Module) -> bool:
    """``nn.Linear``, or a quantised stand-in for one (``in_features``, ``out_features`` and
    ``dequantize()`` giving the ``(out, in)`` weight)."""
    if isinstance(module, nn.Linear):
        return True
    return all(hasattr(module, a) for a in ("in_features", "out_features", "dequantize"))


def base_weight(layer: nn.Module) -> torch.Tensor:
    """The ``(out, in)`` weight of a linear-like layer (dequantised if it is quantised)."""
    if isinstance(layer, nn.Linear):
        return layer.weight
    return cast(torch.Tensor, layer.dequantize())  # type: ignore[operator]


# --8<-- [start:lora_linear]
class LoRALinear(nn.Module):
    """A frozen linear layer (``base_layer``) plus trainable low-rank updates, one per named
    adapter (``lora_A[name]``, ``lora_B[name]``; DoRA adds ``lora_magnitude_vector[name]``)."""

    def __init__(
        self, base_layer: nn.Module, config: LoRAConfig, adapter_name: str = DEFAULT_ADAPTER
    ) -> None:
        super().__init__()
        if not is_linear_like(base_layer):
            raise ConfigError(f"LoRA adapts linear layers, not a {type(base_layer).__name__}")
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.in_features: int = base_layer.in_features  # type: ignore[assignment]
        self.out_features: int = base_layer.out_features  # type: ignore[assignment]
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.active: list[str] = []
        self.merged: list[str] = []
        self._merged_norms: dict[str, torch.Tensor] = {}  # DoRA: the row norms used to merge
        self.add_adapter(adapter_name, config)
        self.active = [adapter_name]

    def add_adapter(self, name: str, config: LoRAConfig) -> None:
        """A new update ``name`` (``B = 0``: it changes nothing until trained)."""
        d_in, d_out = self.in_features, self.out_features
        if config.r > min(d_in, d_out):
            raise ConfigError(
                f"LoRA rank {config.r} is larger than the layer ({d_out} x {d_in}): a rank above "
                f"{min(d_in, d_out)} is no longer low rank"
            )
        if name in self.lora_A:
            raise ConfigError(f"the layer already has an adapter named {name!r}")
        weight = base_weight(self.base_layer)
        a = nn.Linear(d_in, config.r, bias=False, device=weight.device, dtype=weight.dtype)
        b = nn.Linear(config.r, d_out, bias=False, device=weight.device, dtype=weight.dtype)
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))  # as nn.Linear and peft
        nn.init.zeros_(b.weight)  # the adapted model starts as the base model
        self.lora_A[name], self.lora_B[name] = a, b
        self.lora_dropout[name] = (
            nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        )
        self.scaling[name] = config.scaling
        if config.use_dora:  # m starts at the row norms: W' = W_0 at the start
            norms = weight.detach().norm(p=2, dim=1)  # (d_out,)
            self.lora_magnitude_vector[name] = nn.Parameter(norms.clone())

    def delta_weight(self, name: str) -> torch.Tensor:
        """:math:`s B A`, ``(d_out, d_in)``: what merging adapter ``name`` adds (plain LoRA)."""
        return (self.weights(name, "B") @ self.weights(name, "A")) * self.scaling[name]

    def weights(self, name: str, which: str) -> torch.Tensor:
        """The ``"A"`` ``(r, d_in)`` or ``"B"`` ``(d_out, r)`` matrix of adapter ``name``."""
        layer = (self.lora_A if which == "A" else self.lora_B)[name]
        return cast(nn.Linear, layer).weight

    def _dora_scale(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """:math:`m / \\lVert W + sBA \\rVert_\\text{row}` ``(d_out,)``, the norm held constant."""
        norm = (weight + self.delta_weight(name)).norm(p=2, dim=1).detach()  # (d_out,)
        return self.lora_magnitude_vector[name] / norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        for name in self.active:
            if name in self.merged:
                continue
            h = self.lora_dropout[name](x)
            update = self.lora_B[name](self.lora_A[name](h)) * self.scaling[name]
            if name in self.lora_magnitude_vector:
                # m/|W+sBA| (W + sBA) h = W h + (m/|.| - 1) W h + m/|.| sBA h; W h is in y
                weight = base_weight(self.base_layer)
                scale = self._dora_scale(name, weight)  # (d_out,)
                y = y + (scale - 1) * F.linear(h, weight) + scale * update
            else:
                y = y + update
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active adapters into the base weight (those merged already are skipped)."""
        if not isinstance(self.base_layer, nn.Linear):
            raise ConfigError(
                f"cannot merge into a quantised {type(self.base_layer).__name__}: dequantise "
                "the base model first (merging would round the update away)"
            )
        weight = self.base_layer.weight
        for name in self.active:
            if name in self.merged:
                continue
            if name in self.lora_magnitude_vector:
                new = weight + self.delta_weight(name)
                norm = new.norm(p=2, dim=1)  # (d_out,)
                self._merged_norms[name] = norm
                weight.copy_(new * (self.lora_magnitude_vector[name] / norm)[:, None])
            else:
                weight += self.delta_weight(name)
            self.merged.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take every merged update out of the base weight again, last merged first."""
        assert isinstance(self.base_layer, nn.Linear) or not self.merged
        while self.merged:
            name = self.merged.pop()
            weight = cast(nn.Linear, self.base_layer).weight
            if name in self.lora_magnitude_vector:
                norm = self._merged_norms.pop(name)
                scale = (norm / self.lora_magnitude_vector[name])[:, None]  # (d_out, 1)
                weight.copy_(weight * scale - self.delta_weight(name))
            else:
                weight -= self.delta_weight(name)


# --8<-- [end:lora_linear]


def _lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers LoRA can adapt: LoRA layers, and linear-like layers not inside one."""
    lora = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    out = []
    for name, m in model.named_modules():
        if any(name.startswith(n + ".") for n in lora):
            continue
        if isinstance(m, LoRALinear) or is_linear_like(m):
            out.append((name, m))
    return out


def apply_lora(
    model: nn.Module, config: LoRAConfig, adapter_name: str = DEFAULT_ADAPTER
) -> nn.Module:
    """Freeze ``model`` and put a LoRA adapter called ``adapter_name`` on every linear layer
    that ``config`` targets (in place; the model is returned). The new adapter is then the
    active and trainable one (:func:`set_adapter` changes that).

    Raises:
        ConfigError: no linear layer matches ``target_modules`` (the message lists the linear
            layers' names), the model has an adapter of that name already, or the rank is too
            large for a layer.
    """
    if any(adapter_name in m.lora_A for m in _lora_layers(model)):
        raise ConfigError(
            f"the model already has a LoRA adapter named {adapter_name!r}: give the new one "
            "another adapter_name"
        )
    candidates = dict(_candidates(model))
    names = select_targets(
        model, list(candidates), config.matches, f"target_modules {config.target_modules!r}"
    )
    targets = [(name, candidates[name]) for name in names]
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in targets:
        if isinstance(module, LoRALinear):
            module.add_adapter(adapter_name, config)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, config, adapter_name))
    return set_adapter(model, adapter_name)


def set_adapter(model: nn.Module, names: str | Sequence[str]) -> nn.Module:
    """Make the adapters ``names`` the active ones (their updates add up) and the only
    trainable LoRA weights; a layer without one of them uses the others (or none).

    Raises:
        ConfigError: a name no layer has.
    """
    wanted = [names] if isinstance(names, str) else list(names)
    layers = list(_lora_layers(model))
    known = {n for layer in layers for n in layer.lora_A}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(
            f"no LoRA adapter named {unknown[0]!r}; the model has {sorted(known) or 'none'}"
        )
    for layer in layers:
        if layer.merged:
            raise ConfigError("unmerge the adapters (unmerge_lora) before changing them")
        layer.active = [n for n in wanted if n in layer.lora_A]
        for n in layer.lora_A:
            on = n in wanted
            for p in (layer.weights(n, "A"), layer.weights(n, "B")):
                p.requires_grad_(on)
            if n in layer.lora_magnitude_vector:
                layer.lora_magnitude_vector[n].requires_grad_(on)
    return model


def active_adapters(model: nn.Module) -> list[str]:
    """The names of the active adapters, in order."""
    seen: list[str] = []
    for layer in _lora_layers(model):
        seen += [n for n in layer.active if n not in seen]
    return seen


def delete_adapter(model: nn.Module, name: str) -> nn.Module:
    """Remove adapter ``name`` from every layer (a layer left with none becomes its plain base
    layer again)."""
    found = False
    for module_name, layer in list(model.named_modules()):
        if not isinstance(layer, LoRALinear) or name not in layer.lora_A:
            continue
        if name in layer.merged:
            raise ConfigError(f"adapter {name!r} is merged: unmerge_lora first")
        found = True
        for d in (layer.lora_A, layer.lora_B, layer.lora_dropout, layer.lora_magnitude_vector):
            if name in d:
                del d[name]
        del layer.scaling[name]
        layer.active = [n for n in layer.active if n != name]
        if not layer.lora_A:
            parent_name, _, child = module_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, layer.base_layer)
    if not found:
        raise ConfigError(f"no LoRA adapter named {name!r}")
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge the active LoRA adapters of ``model`` into the base weights."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every merged LoRA update out of its base weight again."""
    for layer in _lora_layers(model):
        layer.unmerge()
    return model


def lora_state_dict(
    model: nn.Module, adapter_name: str = DEFAULT_ADAPTER
) -> dict[str, torch.Tensor]:
    """The weights of one adapter, named as ``peft`` saves them (without the adapter's name):
    ``<module>.lora_A.weight``, ``<module>.lora_B.weight`` and, with DoRA,
    ``<module>.lora_magnitude_vector``."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, LoRALinear) or adapter_name not in layer.lora_A:
            continue
        out[f"{name}.lora_A.weight"] = layer.weights(adapter_name, "A")
        out[f"{name}.lora_B.weight"] = layer.weights(adapter_name, "B")
        if adapter_name in layer.lora_magnitude_vector:
            out[f"{name}.lora_magnitude_vector"] = layer.lora_magnitude_vector[adapter_name]
    return out


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
