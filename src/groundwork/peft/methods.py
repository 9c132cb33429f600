"""The PEFT methods by name, for recipes and run directories: ``apply_method(model, "lora",
{"r": 16})`` builds the method's config from a plain dict (a run's ``config.yaml`` section, a
command line's ``--peft '{"r": 16}'``) with defaults for the model's family, and applies it.

``full`` is full fine-tuning (nothing frozen), so every method, the baseline included, goes
through one call. Which weights train afterwards is what ``requires_grad`` says; a task head put
on the result afterwards stays trainable (``peft``'s ``modules_to_save``). Chapter 13.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from groundwork.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["METHODS", "Method", "apply_method", "method_config", "method_options"]

LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT_LINEAR = ("qkv_proj", "o_proj", "up_proj", "down_proj")


def _family(model: nn.Module) -> str:
    from groundwork.models.gpt import GPT
    from groundwork.models.llama import Llama

    return "llama" if isinstance(model, Llama) else "gpt" if isinstance(model, GPT) else "other"


def _all_linear(model: nn.Module) -> tuple[str, ...] | str:
    """Every linear layer of the transformer blocks (QLoRA's choice, Dettmers et al. 2023 §4)."""
    family = _family(model)
    if family == "llama":
        return LLAMA_LINEAR
    if family == "gpt":
        return GPT_LINEAR
    return r".*blocks\.\d+\..*"


@dataclass(frozen=True)
class Method:
    """A PEFT method: its config class, defaults for a model and the transform."""

    name: str
    description: str
    defaults: Callable[[nn.Module], dict[str, Any]]
    apply: Callable[..., nn.Module]


def _lora(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.lora import apply_lora

    return apply_lora(model, config)


def _qlora(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.qlora import apply_qlora

    return apply_qlora(model, config)


def _adapter(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.adapters import apply_adapters

    return apply_adapters(model, config)


def _prefix(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.prefix_tuning import apply_prefix_tuning

    return apply_prefix_tuning(model, config)


def _prompt(
    model: nn.Module, config: Any, *, init_ids: Sequence[int] | None = None, **_: Any
) -> nn.Module:
    from groundwork.peft.prompt_tuning import apply_prompt_tuning

    return apply_prompt_tuning(model, config, init_ids=init_ids)


def _ia3(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.ia3 import apply_ia3

    return apply_ia3(model, config)


def _bitfit(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    from groundwork.peft.bitfit import apply_bitfit

    return apply_bitfit(model, config)


def _full(model: nn.Module, config: Any, **_: Any) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _config_classes() -> dict[str, type | None]:
    from groundwork.peft.adapters import AdapterConfig
    from groundwork.peft.bitfit import BitFitConfig
    from groundwork.peft.ia3 import IA3Config
    from groundwork.peft.lora import LoRAConfig
    from groundwork.peft.prefix_tuning import PrefixTuningConfig
    from groundwork.peft.prompt_tuning import PromptTuningConfig

    return {
        "full": None,
        "lora": LoRAConfig,
        "qlora": LoRAConfig,
        "adapter": AdapterConfig,
        "prefix": PrefixTuningConfig,
        "prompt": PromptTuningConfig,
        "ia3": IA3Config,
        "bitfit": BitFitConfig,
    }


def _ia3_defaults(model: nn.Module) -> dict[str, Any]:
    from groundwork.peft.ia3 import IA3Config

    if _family(model) == "other":
        return {}
    d = IA3Config.peft_defaults(model)
    return {"target_modules": d.target_modules, "feedforward_modules": d.feedforward_modules}


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", "every weight trains (the baseline)", lambda m: {}, _full),
        Method(
            "lora",
            "low-rank updates of every linear layer of the blocks (Hu et al. 2021)",
            lambda m: {"r": 8, "alpha": 16.0, "target_modules": _all_linear(m)},
            _lora,
        ),
        Method(
            "qlora",
            "LoRA over a base quantised to 4-bit NF4 (Dettmers et al. 2023)",
            lambda m: {"r": 8, "alpha": 16.0, "target_modules": _all_linear(m)},
            _qlora,
        ),
        Method(
            "adapter",
            "bottleneck adapters after attention and MLP (Houlsby et al. 2019)",
            lambda m: {"bottleneck": 16, "placement": "houlsby"},
            _adapter,
        ),
        Method(
            "prefix",
            "trainable key/value prefixes in every layer (Li & Liang 2021)",
            lambda m: {"num_virtual_tokens": 10, "prefix_projection": True},
            _prefix,
        ),
        Method(
            "prompt",
            "trainable soft-prompt embeddings before the input (Lester et al. 2021)",
            lambda m: {"num_virtual_tokens": 20},
            _prompt,
        ),
        Method(
            "ia3",
            "learned rescaling of keys, values and MLP activations (Liu et al. 2022)",
            _ia3_defaults,
            _ia3,
        ),
        Method(
            "bitfit",
            "only the bias terms train (Ben Zaken et al. 2022)",
            lambda m: {},
            _bitfit,
        ),
    )
}
"""The methods ``groundwork finetune --method`` knows, by name."""


def method_config(method: str, model: nn.Module, options: Mapping[str, Any] | None = None) -> Any:
    """The config of ``method`` for ``model``: the family's defaults, overridden by
    ``options`` (``None`` for ``full``).

    Raises:
        UnknownNameError: no such method.
        ConfigError: an option the method's config has no field for (the fields are listed).
    """
    if method not in METHODS:
        raise UnknownNameError(f"unknown PEFT method {method!r}: {did_you_mean(method, METHODS)}")
    cls = _config_classes()[method]
    options = dict(options or {})
    if cls is None:
        if options:
            raise ConfigError(f"method {method!r} takes no options, got {sorted(options)}")
        return None
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no field {unknown[0]!r}; its fields are {', '.join(names)}"
        )
    values = {**METHODS[method].defaults(model), **options}
    if isinstance(values.get("target_modules"), list):
        values["target_modules"] = tuple(values["target_modules"])
    return cls(**values)


def apply_method(
    model: nn.Module,
    method: str,
    options: Mapping[str, Any] | None = None,
    *,
    init_ids: Sequence[int] | None = None,
) -> nn.Module:
    """Apply PEFT method ``method`` (a name of :data:`METHODS`) with ``options`` to ``model``;
    returns the adapted model (the same object, or a wrapper for prompt and prefix tuning).
    ``init_ids``: prompt tuning's init text, tokenized."""
    config = method_config(method, model, options)
    return METHODS[method].apply(model, config, init_ids=init_ids)


def method_options(
    method: str, model: nn.Module, options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The options as recorded in a run: defaults and overrides, plain values only."""
    config = method_config(method, model, options)
    if config is None:
        return {}
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
