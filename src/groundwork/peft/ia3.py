r"""(IA)³: learned vectors that rescale a frozen model's activations (Liu et al. 2022, "Few-Shot
Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning").

"Infused Adapter by Inhibiting and Amplifying Inner Activations": per block, three learned vectors
rescale, element by element, the attention's keys and values and the MLP's hidden activation

.. math:: k = l_k \odot W_k x, \qquad v = l_v \odot W_v x, \qquad
    y = W_\text{down} \, (l_\text{ff} \odot h),

everything else frozen. The vectors start at one, so the adapted model starts exactly as the
pretrained one, and they are all that trains: :math:`d_k + d_v + d_\text{ff}` numbers a block
(a few thousandths of a percent of a large model), fewer than LoRA's. A target layer rescales its
**output** (:math:`l \odot (W x + b)`: keys, values) or, if it is one of the
``feedforward_modules``, its **input** (:math:`W (l \odot x) + b`: the MLP's down projection).
Both are still linear maps, so **merging** folds the vector into the weight, scaling the rows of
:math:`W` (and the bias) for an output vector, its columns for an input vector; **unmerging**
divides it out again.

Layout and defaults follow the ``peft`` library: an :class:`IA3Linear` holds the frozen
``base_layer`` and ``ia3_l``, of shape ``(d_out, 1)`` (output) or ``(1, d_in)`` (input); the
default targets are ``peft``'s for Llama (``k_proj``, ``v_proj``, ``down_proj``, the last a
feedforward module). For GPT-2, ``peft``'s defaults are the fused ``c_attn`` (so the queries are
rescaled too) and ``mlp.c_proj`` (:meth:`IA3Config.peft_defaults` gives them in our names). GPT-2's
``Conv1D`` layers store their weights transposed (``peft``'s ``fan_in_fan_out``), but the vector
lives in the layer's output or input space either way, with the same shape: our ``nn.Linear``
layers take ``peft``'s vectors unchanged. :func:`save_ia3` and :func:`load_ia3` read and write
``peft``'s adapter format. Tested equal to ``peft``'s (IA)³ on the same vectors. Chapter 13.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.peft.naming import (
    PREFIX,
    check_family,
    hf_module_name,
    hf_targets,
    our_module_names,
    peft_matches,
    read_adapter,
    require_peft_type,
    select_targets,
    write_adapter,
)

__all__ = [
    "IA3Config",
    "IA3Linear",
    "apply_ia3",
    "ia3_state_dict",
    "load_ia3",
    "merge_ia3",
    "save_ia3",
    "unmerge_ia3",
]

Targets = tuple[str, ...] | str


@dataclass(frozen=True)
class IA3Config:
    """Which linear layers get a vector, and which of them scale their input."""

    target_modules: Targets = ("k_proj", "v_proj", "down_proj")
    """Names of the linear layers to adapt (our module names): a tuple of names, each matching a
    module whose dotted name is that name or ends in ``.name``; or one string, a regular expression
    the whole dotted name must match (``peft``'s rule). Default: ``peft``'s for Llama."""
    feedforward_modules: Targets | None = None
    """The targets whose vector scales their input rather than their output, named as
    ``target_modules`` (a tuple must be part of ``target_modules``, as in ``peft``). ``None``: the
    targets named ``down_proj``, the MLP's down projection (the paper's :math:`l_\\text{ff}`;
    ``peft``'s default for Llama and GPT-2)."""

    def __post_init__(self) -> None:
        for field in ("target_modules", "feedforward_modules"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):  # a list becomes a tuple
                object.__setattr__(self, field, tuple(value))
        if not self.target_modules:
            raise ConfigError("IA3Config.target_modules is empty: name the layers to adapt")
        if isinstance(self.target_modules, tuple) and isinstance(self.feedforward_modules, tuple):
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            if extra:
                raise ConfigError(
                    f"feedforward_modules {extra} are not in target_modules "
                    f"{list(self.target_modules)}: a feedforward module must also be a target"
                )

    def matches(self, name: str) -> bool:
        """Whether the module called ``name`` (dotted) is a target."""
        return peft_matches(name, self.target_modules)

    def is_feedforward(self, name: str) -> bool:
        """Whether the target ``name`` scales its input (a feedforward module)."""
        if self.feedforward_modules is None:
            return peft_matches(name, ("down_proj",))
        return peft_matches(name, self.feedforward_modules)

    @classmethod
    def peft_defaults(cls, model: nn.Module) -> "IA3Config":
        """``peft``'s default targets for ``model``'s family, in our module names: Llama's
        ``k_proj``, ``v_proj``, ``down_proj``; GPT-2's ``c_attn`` and ``mlp.c_proj``, which are our
        ``qkv_proj`` and ``mlp.down_proj``.

        Raises:
            ConfigError: a model of neither family.
        """
        if check_family(model) == "llama":
            return cls()
        return cls(
            target_modules=("qkv_proj", "mlp.down_proj"), feedforward_modules=("mlp.down_proj",)
        )


# --8<-- [start:ia3_linear]
class IA3Linear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) whose output (or input) is rescaled by a learned
    vector ``ia3_l``: ``(d_out, 1)`` for the output, ``(1, d_in)`` for the input."""

    def __init__(self, base_layer: nn.Linear, *, is_feedforward: bool) -> None:
        super().__init__()
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.is_feedforward = is_feedforward
        weight = base_layer.weight
        shape = (1, base_layer.in_features) if is_feedforward else (base_layer.out_features, 1)
        # ones: the adapted model starts as the base model
        self.ia3_l = nn.Parameter(torch.ones(shape, device=weight.device, dtype=weight.dtype))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        scale = self.ia3_l.flatten()
        if self.is_feedforward:
            return self.base_layer(x * scale.to(x.dtype))  # W (l ⊙ x) + b
        y = self.base_layer(x)
        return y * scale.to(y.dtype)  # l ⊙ (W x + b)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the vector into the base weight (a no-op if it is there already): its columns for
        an input vector, its rows and bias for an output vector."""
        if self.merged:
            return
        layer, scale = self.base_layer, self.ia3_l.to(self.base_layer.weight.dtype)
        layer.weight.mul_(scale)  # (d_out, d_in) * (1, d_in) or (d_out, 1)
        if not self.is_feedforward and layer.bias is not None:
            layer.bias.mul_(scale.flatten())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Divide the vector out of the base weight again (a no-op if it is not in).

        Raises:
            ConfigError: the vector has zeros; merging zeroed those weights for good.
        """
        if not self.merged:
            return
        if (self.ia3_l == 0).any():
            raise ConfigError(
                "the IA3 vector has zeros: merging it zeroed those weights, which cannot be "
                "unmerged (keep a copy of the base model to go back)"
            )
        layer, scale = self.base_layer, self.ia3_l.to(self.base_layer.weight.dtype)
        layer.weight.div_(scale)
        if not self.is_feedforward and layer.bias is not None:
            layer.bias.div_(scale.flatten())
        self.merged = False


# --8<-- [end:ia3_linear]


def _ia3_layers(model: nn.Module) -> Iterator[tuple[str, IA3Linear]]:
    return ((n, m) for n, m in model.named_modules() if isinstance(m, IA3Linear))


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _wrap(model: nn.Module, layers: dict[str, bool]) -> nn.Module:
    """Freeze ``model`` and wrap the linear layers ``layers`` (name -> is_feedforward)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, is_feedforward in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, IA3Linear(getattr(parent, child), is_feedforward=is_feedforward))
    return model


def apply_ia3(model: nn.Module, config: IA3Config) -> nn.Module:
    """Freeze ``model`` and put an (IA)³ vector on every ``nn.Linear`` that ``config`` targets (in
    place; the model is returned).

    Raises:
        ConfigError: no linear layer matches ``target_modules`` (the message lists the linear
            layers' names), or the model already has (IA)³ layers.
    """
    if any(True for _ in _ia3_layers(model)):
        raise ConfigError("the model already has IA3 layers: apply_ia3 once per model")
    targets = select_targets(
        model, _linear_names(model), config.matches, f"target_modules {config.target_modules!r}"
    )
    return _wrap(model, {name: config.is_feedforward(name) for name in targets})


def merge_ia3(model: nn.Module) -> nn.Module:
    """Merge every (IA)³ vector of ``model`` into its base weight."""
    for _, layer in _ia3_layers(model):
        layer.merge()
    return model


def unmerge_ia3(model: nn.Module) -> nn.Module:
    """Divide every merged (IA)³ vector out of its base weight again."""
    for _, layer in _ia3_layers(model):
        layer.unmerge()
    return model


def ia3_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The vectors alone (``...k_proj.ia3_l``), under our module names."""
    return {k: v for k, v in model.state_dict().items() if k.endswith(".ia3_l")}


# ---------------------------------------------------------------------------------------------
# peft's format


def _peft_feedforward(hf_name: str, feedforward_modules: str | Sequence[str]) -> bool:
    """``peft``'s test of a feedforward module (``IA3Model._check_target_module_feedforward``): a
    regular expression matching the whole name, or a name ending in an entry (no dot needed)."""
    if isinstance(feedforward_modules, str):
        return peft_matches(hf_name, feedforward_modules)
    return any(hf_name.endswith(t) for t in feedforward_modules)


def save_ia3(model: nn.Module, directory: Path | str, *, base_model: str | None = None) -> Path:
    """Write ``model``'s (IA)³ vectors as ``peft`` does (``adapter_config.json`` and
    ``adapter_model.safetensors``, under the ``transformers`` twin's module names), for
    ``PeftModel.from_pretrained`` on that twin; returns the directory.

    Raises:
        ConfigError: the model has no (IA)³ layers, or is neither a GPT nor a Llama.
    """
    family = check_family(model)
    layers = dict(_ia3_layers(model))
    if not layers:
        raise ConfigError("the model has no IA3 layers: apply_ia3 first")
    hf = {name: hf_module_name(model, name) for name in layers}
    full = sorted(hf.values())
    feedforward = sorted(hf[n] for n, layer in layers.items() if layer.is_feedforward)
    targets = hf_targets(model, list(layers))
    if targets == full:
        ff_names = feedforward
    else:  # short names: they must pick the feedforward layers by peft's rule, else full names
        ff_short = sorted({n.rsplit(".", 1)[-1] for n in feedforward})
        picked = sorted(n for n in full if _peft_feedforward(n, ff_short))
        if set(ff_short) <= set(targets) and picked == feedforward:
            ff_names = ff_short
        else:
            targets, ff_names = full, feedforward
    config: dict[str, Any] = {
        "peft_type": "IA3",
        "task_type": "CAUSAL_LM",
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "revision": None,
        "target_modules": targets,
        "exclude_modules": None,
        "feedforward_modules": ff_names,
        "fan_in_fan_out": family == "gpt",  # GPT-2's Conv1D layers store (in, out)
        "modules_to_save": None,
        "init_ia3_weights": True,
        "inference_mode": True,
    }
    state = {hf[name] + ".ia3_l": layer.ia3_l.detach() for name, layer in layers.items()}
    return write_adapter(directory, config, state)


def load_ia3(model: nn.Module, directory: Path | str) -> nn.Module:
    """Put the (IA)³ adapter saved in ``directory`` (by ``peft`` on the ``transformers`` twin, or
    by :func:`save_ia3`) on ``model`` (in place; returned). The layers to wrap are those the saved
    vectors name; ``peft``'s ``feedforward_modules`` rule says which scale their input.

    Raises:
        CheckpointError: missing files, or a weight whose name or shape does not fit the model
            (named).
        ConfigError: a config of another method, an option we do not read (``modules_to_save``),
            a model that already has (IA)³ layers or is neither a GPT nor a Llama.
    """
    check_family(model)
    config, weights = read_adapter(directory)
    require_peft_type(config, "IA3", "load_ia3")
    if config.get("modules_to_save"):
        raise ConfigError(
            f"the adapter sets modules_to_save={config['modules_to_save']!r}, which load_ia3 does "
            "not read"
        )
    if any(True for _ in _ia3_layers(model)):
        raise ConfigError("the model already has IA3 layers: load_ia3 once per model")
    if not weights:
        raise CheckpointError(f"{directory} holds no IA3 vectors")
    feedforward_modules = config.get("feedforward_modules") or []
    for key in weights:
        if not key.endswith(".ia3_l"):
            raise CheckpointError(f"adapter weight {PREFIX}{key} is no IA3 vector (name.ia3_l)")
    hf_names = {key: key.removesuffix(".ia3_l") for key in weights}
    ours = our_module_names(model, hf_names.values())
    layers: dict[str, bool] = {}
    for key, value in weights.items():
        hf = hf_names[key]
        name = ours[hf]
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise CheckpointError(
                f"adapter weight {PREFIX}{key} is for {name}, a {type(module).__name__}: IA3 "
                "adapts linear layers"
            )
        is_feedforward = _peft_feedforward(hf, feedforward_modules)
        shape = (1, module.in_features) if is_feedforward else (module.out_features, 1)
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"adapter weight {PREFIX}{key} has shape {tuple(value.shape)}, the model's "
                f"{shape}: the adapter was trained on another model"
            )
        layers[name] = is_feedforward
    _wrap(model, layers)
    with torch.no_grad():
        for key, value in weights.items():
            layer = model.get_submodule(ours[hf_names[key]])
            assert isinstance(layer, IA3Linear)
            layer.ia3_l.copy_(value)
    return model
