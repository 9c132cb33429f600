r"""Bottleneck adapters: small trainable MLPs inside a frozen transformer (Houlsby et al. 2019,
"Parameter-Efficient Transfer Learning for NLP"; Pfeiffer et al. 2021, "AdapterFusion:
Non-Destructive Task Composition for Transfer Learning").

An adapter maps a sublayer's output :math:`h \in \mathbb{R}^d` through a bottleneck of width
:math:`m \ll d` and adds it back:

.. math:: h' = h + W_\text{up} \, f(W_\text{down} h + b_\text{down}) + b_\text{up},
    \qquad W_\text{down} \in \mathbb{R}^{m \times d}, \; W_\text{up} \in \mathbb{R}^{d \times m}.

:math:`W_\text{up}` and :math:`b_\text{up}` start at zero, so every adapter starts as the identity
and the adapted model as the pretrained one; :math:`W_\text{down}` starts random (as ``nn.Linear``),
else no gradient would reach either. An adapter trains :math:`2md + m + d` numbers.

* **Houlsby** (``placement="houlsby"``): two adapters a block, after the attention sublayer and
  after the MLP, each on the sublayer's output before it is added to the residual stream.
* **Pfeiffer** (``placement="pfeiffer"``): one adapter a block, after the MLP: the configuration
  AdapterFusion's search settled on, about as good for half the adapters. (Their full version
  also reads the residual stream and reuses the block's norm; we keep the adapter on the MLP's
  output, as Houlsby's.)

Here an adapter wraps the sublayer's output projection (attention ``o_proj`` and MLP
``down_proj``: Llama's ``self_attn.o_proj`` and ``mlp.down_proj``, GPT's ``attn.o_proj`` and
``mlp.down_proj``): :class:`AdapterLinear` returns ``adapter(base_layer(x))``, which the block
adds to the residual stream (GPT's residual dropout comes after it). Houlsby et al. also train
the layer norms; here only the adapters train. Unlike LoRA and (IA)³, an adapter is non-linear:
it cannot be merged, and costs a little at inference.

``peft`` has no bottleneck adapters (the ``adapters`` library has, in a format of its own), so
:func:`save_adapters` writes ours: an ``adapter_config.json`` with
``"peft_type": "BOTTLENECK_ADAPTER"`` and an ``adapter_model.safetensors`` of the adapters' weights
under our module names, which ``peft`` cannot read. Chapter 13.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

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
    "AdapterConfig",
    "AdapterLinear",
    "BottleneckAdapter",
    "adapters_state_dict",
    "apply_adapters",
    "load_adapters",
    "save_adapters",
]

Placement = Literal["houlsby", "pfeiffer"]
Activation = Literal["relu", "gelu", "silu", "tanh"]
Targets = tuple[str, ...] | str

PLACEMENTS: dict[str, tuple[str, ...]] = {
    "houlsby": ("o_proj", "down_proj"),  # after the attention and after the MLP
    "pfeiffer": ("down_proj",),  # after the MLP
}
"""The output projections each placement wraps."""

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}

PEFT_TYPE = "BOTTLENECK_ADAPTER"
"""The ``peft_type`` our saved adapters carry (no ``peft`` type: ``peft`` has no such method)."""


@dataclass(frozen=True)
class AdapterConfig:
    """Width, placement and non-linearity of the adapters."""

    bottleneck: int
    """Width :math:`m` of the bottleneck; smaller than the model's width."""
    placement: Placement = "houlsby"
    """``"houlsby"``: after the attention and after the MLP; ``"pfeiffer"``: after the MLP."""
    activation: Activation = "relu"
    """The non-linearity :math:`f` between the down and up projections."""
    target_modules: Targets | None = None
    """The output projections to put adapters on, named as LoRA's targets (a tuple of names, each
    matching a module whose dotted name is that name or ends in ``.name``, or one regular
    expression); ``None``: those of ``placement``."""

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ConfigError(f"adapter bottleneck must be >= 1, got {self.bottleneck}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(
                f"adapter placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.activation not in get_args(Activation):
            raise ConfigError(
                f"adapter activation must be one of {', '.join(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        if self.target_modules is not None and not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def targets(self) -> Targets:
        """The output projections adapted: ``target_modules``, or ``placement``'s."""
        return (
            self.target_modules if self.target_modules is not None else PLACEMENTS[self.placement]
        )

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` (dotted) gets an adapter."""
        return peft_matches(name, self.targets)


def _check_bottleneck(bottleneck: int, d: int) -> None:
    if bottleneck >= d:
        raise ConfigError(
            f"adapter bottleneck {bottleneck} is not narrower than the layer's output ({d}): "
            f"choose fewer than {d}"
        )


# --8<-- [start:adapter]
class BottleneckAdapter(nn.Module):
    """``h + up(f(down(h)))``, ``up`` starting at zero: the identity until it trains."""

    def __init__(
        self,
        d_model: int,
        bottleneck: int,
        activation: Activation = "relu",
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, d_model, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))  # (..., d_model)


class AdapterLinear(nn.Module):
    """A frozen output projection (``base_layer``) followed by a trainable ``adapter``."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__()
        d = base_layer.out_features
        _check_bottleneck(config.bottleneck, d)
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.activation = config.activation
        w = base_layer.weight
        self.adapter = BottleneckAdapter(
            d, config.bottleneck, config.activation, device=w.device, dtype=w.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(x))


# --8<-- [end:adapter]


def _adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLinear]]:
    return ((n, m) for n, m in model.named_modules() if isinstance(m, AdapterLinear))


def _targets(model: nn.Module, config: AdapterConfig) -> list[str]:
    """The linear layers ``config`` puts adapters on.

    Raises:
        ConfigError: none (the message lists the linear layers' names).
    """
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return select_targets(model, linear, config.matches, f"adapter targets {config.targets!r}")


def apply_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Freeze ``model`` and put a bottleneck adapter after every output projection ``config``
    targets (in place; the model is returned).

    Raises:
        ConfigError: no linear layer matches the targets (the message lists the linear layers'
            names), the bottleneck is not narrower than a layer, or the model already has
            adapters.
    """
    if any(True for _ in _adapter_layers(model)):
        raise ConfigError("the model already has adapters: apply_adapters once per model")
    targets = _targets(model, config)
    for name in targets:  # every layer checked before the model changes
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        _check_bottleneck(config.bottleneck, layer.out_features)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AdapterLinear(getattr(parent, child), config))
    return model


def adapters_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights alone (``...o_proj.adapter.down.weight``, ...), by our names."""
    return {
        f"{name}.adapter.{key}": value
        for name, layer in _adapter_layers(model)
        for key, value in layer.adapter.state_dict().items()
    }


def _expected_shapes(model: nn.Module, config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every adapter weight ``config`` would give ``model``."""
    m = config.bottleneck
    shapes: dict[str, tuple[int, ...]] = {}
    for name in _targets(model, config):
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        d = layer.out_features
        shapes |= {
            f"{name}.adapter.down.weight": (m, d),
            f"{name}.adapter.down.bias": (m,),
            f"{name}.adapter.up.weight": (d, m),
            f"{name}.adapter.up.bias": (d,),
        }
    return shapes


def save_adapters(model: nn.Module, directory: Path | str) -> Path:
    """Write ``model``'s adapters (weights, width, activation and the modules they sit on) to
    ``directory`` (our format, see the module docstring); returns the directory.

    Raises:
        ConfigError: the model has no adapters.
    """
    layers = dict(_adapter_layers(model))
    if not layers:
        raise ConfigError("the model has no adapters: apply_adapters first")
    first = next(iter(layers.values()))
    config: dict[str, Any] = {
        "peft_type": PEFT_TYPE,
        "format": "groundwork",  # not peft's: peft has no bottleneck adapters
        "model_class": type(model).__name__,
        "bottleneck": first.adapter.down.out_features,
        "activation": first.activation,
        "target_modules": sorted(layers),
    }
    return write_adapter(directory, config, adapters_state_dict(model), prefix="")


def load_adapters(model: nn.Module, directory: Path | str) -> nn.Module:
    """Put the adapters saved in ``directory`` (by :func:`save_adapters`) on ``model`` (in place;
    returned). The model is checked before it is changed.

    Raises:
        CheckpointError: missing files, an adapted module the model lacks, or a weight whose name
            or shape does not fit the model (named).
        ConfigError: a config of another method, or a model that already has adapters.
    """
    saved, weights = read_adapter(directory)
    require_peft_type(saved, PEFT_TYPE, "load_adapters")
    names = list(saved.get("target_modules") or [])
    modules = dict(model.named_modules())
    kind = type(model).__name__
    for name in names:
        if name not in modules:
            raise CheckpointError(
                f"the adapters sit on {name!r}, which the {kind} does not have: they were saved "
                "for another model"
            )
        if not isinstance(modules[name], nn.Linear):
            raise CheckpointError(
                f"the adapters sit on {name!r}, which in the {kind} is a "
                f"{type(modules[name]).__name__}, not a linear layer: they were saved for "
                "another model"
            )
    config = AdapterConfig(
        bottleneck=int(saved["bottleneck"]),
        activation=saved.get("activation", "relu"),
        target_modules=tuple(names),
    )
    expected = _expected_shapes(model, config)
    for key, value in weights.items():
        if key not in expected:
            raise CheckpointError(f"adapter weight {key} fits no adapter of the saved config")
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(
                f"adapter weight {key} has shape {tuple(value.shape)}, the model's "
                f"{expected[key]}: the adapters were trained on another model"
            )
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError(f"{directory} has no {missing[0]} (and {len(missing) - 1} more)")
    apply_adapters(model, config)
    model.load_state_dict(weights, strict=False)
    return model
