"""Where ``peft``'s names meet ours: module names of the ``transformers`` twin, target lists, and
the two files of an adapter directory.

``peft`` names an adapter's weights after the modules of the ``transformers`` model it wraps,
under the prefix ``base_model.model.``. Our Llama carries ``transformers``' module names already
(``model.layers.0.self_attn.q_proj``); our GPT does not (``blocks.0.attn.qkv_proj`` is GPT-2's
fused ``transformer.h.0.attn.c_attn``), so its names go through the checkpoint key map of
:mod:`groundwork.models.gpt_hf`. Every PEFT method's reader and writer goes through
:func:`hf_module_name` / :func:`our_module_names` and :func:`write_adapter` / :func:`read_adapter`.
Chapter 13.
"""

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.fileio import atomic_path

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "PREFIX",
    "check_family",
    "hf_module_name",
    "hf_targets",
    "our_module_names",
    "peft_matches",
    "read_adapter",
    "require_peft_type",
    "select_targets",
    "write_adapter",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
"""What ``peft`` puts before a module's name in a saved adapter."""


def check_family(model: nn.Module) -> str:
    """``"llama"`` or ``"gpt"``: the families whose ``transformers`` twins peft adapters fit.

    Raises:
        ConfigError: any other model.
    """
    from groundwork.models.gpt import GPT
    from groundwork.models.llama import Llama

    if isinstance(model, Llama):
        return "llama"
    if isinstance(model, GPT):
        return "gpt"
    raise ConfigError(
        f"peft-format adapters are written for GPT and Llama models (whose transformers twins "
        f"peft wraps), not a {type(model).__name__}"
    )


def _gpt_module_map(model: nn.Module) -> dict[str, str]:
    """Our GPT module names -> GPT-2's (from the checkpoint key map, weights and biases)."""
    from groundwork.models.gpt import GPT
    from groundwork.models.gpt_hf import gpt2_key_map

    assert isinstance(model, GPT)
    keys = gpt2_key_map(model.config.n_layers)
    return {ours.rsplit(".", 1)[0]: hf.rsplit(".", 1)[0] for ours, hf in keys.items()}


def hf_module_name(model: nn.Module, name: str) -> str:
    """The ``transformers`` name of our module ``name`` (dotted; ``""`` is the model).

    >>> from groundwork.models.gpt import GPT, GPTConfig
    >>> hf_module_name(GPT(GPTConfig.from_name("tiny")), "blocks.1.attn.qkv_proj")
    'transformer.h.1.attn.c_attn'
    """
    if check_family(model) == "llama":
        return name
    mapping = _gpt_module_map(model)
    if name in mapping:
        return mapping[name]
    # a module below a mapped one (e.g. an adapter's own layers) keeps its tail
    for ours, hf in mapping.items():
        if name.startswith(ours + "."):
            return hf + name[len(ours) :]
    raise CheckpointError(f"{type(model).__name__} module {name!r} has no transformers twin")


def our_module_names(model: nn.Module, hf_names: Iterable[str]) -> dict[str, str]:
    """``transformers`` module name -> ours, for each of ``hf_names``.

    Raises:
        CheckpointError: a name that is no module of the model (named, with what exists).
    """
    if check_family(model) == "llama":
        mapping = {n: n for n, _ in model.named_modules() if n}
    else:
        mapping = {hf: ours for ours, hf in _gpt_module_map(model).items()}
    out = {}
    for hf in hf_names:
        if hf not in mapping:
            raise CheckpointError(
                f"the adapter names module {hf!r}, which the {type(model).__name__} does not have "
                f"(its modules are named like {next(iter(mapping))!r}): it was saved for another "
                "model"
            )
        out[hf] = mapping[hf]
    return out


def peft_matches(name: str, targets: str | Sequence[str]) -> bool:
    """``peft``'s rule: a string is a regular expression the whole name must match; a list
    matches a name equal to one of its entries or ending in ``"." + entry``."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def select_targets(
    model: nn.Module, linear: Sequence[str], matches: Callable[[str], bool], targets: str
) -> list[str]:
    """The names in ``linear`` (the model's linear layers) that ``matches``; ``targets`` says
    how they were asked for, for the error.

    Raises:
        ConfigError: none matches (the message lists the linear layers' names).
    """
    chosen = [name for name in linear if matches(name)]
    if not chosen:
        suffixes = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ConfigError(
            f"{targets} match no linear layer of the {type(model).__name__}; its linear layers "
            f"are named {', '.join(suffixes) or '(none)'}"
        )
    return chosen


def hf_targets(model: nn.Module, adapted: Sequence[str]) -> list[str]:
    """The ``target_modules`` list to write for the adapted modules ``adapted`` (our names):
    their last name parts on the ``transformers`` side when those pick exactly these modules
    (``["q_proj", "v_proj"]``), else their full names (GPT-2's ``c_proj`` is both the attention
    output and the MLP's down projection)."""
    hf = sorted(hf_module_name(model, n) for n in adapted)
    if check_family(model) == "llama":
        candidates = [n for n, _ in model.named_modules() if n]
    else:
        candidates = list(_gpt_module_map(model).values())
    short = sorted({n.rsplit(".", 1)[-1] for n in hf})
    picked = sorted(n for n in candidates if peft_matches(n, short))
    return short if picked == hf else hf


def write_adapter(
    directory: Path | str,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    prefix: str = PREFIX,
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors``, atomically; returns the
    directory. Module adapters give their keys in ``transformers`` names and get :data:`PREFIX`
    added; prompt-learning adapters (``prompt_embeddings``) and our own formats pass
    ``prefix=""``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {prefix + k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_path(out / ADAPTER_CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return out


def read_adapter(directory: Path | str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, weights)`` of a ``peft`` adapter directory, the weights' keys without
    :data:`PREFIX`.

    Raises:
        CheckpointError: a file is missing or unreadable.
    """
    from safetensors.torch import load_file

    path = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}: not a peft adapter directory")
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / ADAPTER_CONFIG} is not valid JSON: {e}") from e
    weights = {k.removeprefix(PREFIX): v for k, v in load_file(str(path / ADAPTER_WEIGHTS)).items()}
    return config, weights


def require_peft_type(config: dict[str, Any], expected: str, reader: str) -> None:
    """Refuse a config of another method, by name."""
    given = config.get("peft_type")
    if given != expected:
        raise ConfigError(
            f"the adapter is a {given!r} adapter; {reader} reads {expected} adapters "
            "(groundwork.peft.load_adapter picks the reader from peft_type)"
        )
