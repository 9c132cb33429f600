"""Conversion between Groundwork models and Hugging Face ``transformers`` checkpoints.

Two levels:

* in memory: :func:`from_hf` (a ``transformers`` model -> ours) and :func:`to_hf` (ours -> a
  ``transformers`` model). These import ``transformers`` lazily; it is an optional dependency.
* on disk: :func:`export_hf` writes ``config.json`` + ``model.safetensors`` that
  ``from_pretrained(out_dir)`` of the twin class (``AutoModelForCausalLM`` for GPT-2 and Llama)
  loads, and :func:`import_hf` reads such a directory back. Neither needs ``transformers``: the
  config is plain JSON and the weights are safetensors (never pickles).

Nothing here knows a family by name: each family with a ``transformers`` twin registers an
:class:`~groundwork.models.hf_adapter.HFAdapter` (config fields, state-dict key map, transposed
weights) in :mod:`groundwork.models.registry`, written next to its model:

* Llama (:mod:`groundwork.models.llama_hf`): our parameter names *are* Hugging Face's
  (``model.layers.0.self_attn.q_proj.weight``), so the map is the identity.
* GPT-2 (:mod:`groundwork.models.gpt_hf`): names differ (:func:`gpt2_key_map`), and Hugging Face
  stores GPT-2's linear layers as ``Conv1D`` modules whose weight is the transpose of
  ``nn.Linear``'s (``(in, out)`` instead of ``(out, in)``): those weights are transposed on the
  way in and out.
* BERT (:mod:`groundwork.models.bert_hf`): one family, several classes (``BertModel``,
  ``BertForMaskedLM``, ``BertForPreTraining``), each paired with one of ours in the adapter's
  ``hf_classes`` table.

The adapter is found by config type on export and by ``config.json``'s ``model_type`` on import;
the class to build, by the ``transformers`` class's name (``type(hf_model).__name__`` in memory,
``config.json``'s ``architectures`` on disk) and, the other way, by the type of our model
(:func:`hf_class_name`).
A checkpoint whose keys or shapes do not match the config raises
:class:`~groundwork.errors.CheckpointError` naming the key and the expected and actual shapes.
Chapters 5 and 6 of the docs.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.fileio import atomic_path, atomic_write
from groundwork.models import registry
from groundwork.models.gpt_hf import gpt2_key_map
from groundwork.models.hf_adapter import HFAdapter

Model = nn.Module
"""A model of a registered architecture with a Hugging Face twin (``GPT``, ``Llama``, ``Bert``,
...)."""
StateDict = dict[str, torch.Tensor]

__all__ = [
    "config_from_hf_dict",
    "export_hf",
    "from_hf",
    "gpt2_key_map",
    "hf_adapter",
    "hf_class_name",
    "hf_config_dict",
    "hf_state_dict",
    "import_hf",
    "load_hf_state_dict",
    "model_class_for",
    "to_hf",
]


def hf_adapter(config: Any) -> HFAdapter:
    """The Hugging Face adapter of ``config``'s architecture.

    Raises:
        ConfigError: The architecture has no ``transformers`` twin (e.g. the LSTM).
    """
    arch = registry.arch_of(config)
    if arch.hf is None:
        family = type(config).__name__.removesuffix("Config")
        twins = " and ".join(registry.hf_adapters())
        raise ConfigError(
            f"{family} models have no Hugging Face twin: only {twins} models export to (or "
            "import from) Hugging Face format"
        )
    return arch.hf


def hf_class_name(model: nn.Module) -> str:
    """The ``transformers`` class that is ``model``'s twin (``"GPT2LMHeadModel"``,
    ``"BertForMaskedLM"``): its entry in the adapter's ``hf_classes``, else the adapter's
    ``architectures``.

    Raises:
        ConfigError: The architecture has no ``transformers`` twin.
    """
    adapter = hf_adapter(model.config)
    for name, cls in adapter.hf_classes.items():
        if type(model) is cls:
            return name
    return adapter.architectures


def model_class_for(config: Any, hf_class: str | None) -> Any:
    """Our model class for a ``transformers`` class name (``"BertForMaskedLM"`` ->
    :class:`~groundwork.models.bert.BertForMaskedLM`): the adapter's ``hf_classes`` entry; the
    registry's model class when the family has one class or the name is not known (``None``).

    Raises:
        CheckpointError: A family with several classes, and a class it does not pair.
    """
    arch = registry.arch_of(config)
    classes = hf_adapter(config).hf_classes
    if not classes or hf_class is None:
        return arch.model_cls
    if hf_class not in classes:
        raise CheckpointError(
            f"{hf_class} is not supported: the {arch.name} family converts {', '.join(classes)}"
        )
    return classes[hf_class]


def _tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys that alias an earlier parameter (a head tied to the embeddings)."""
    distinct = {name for name, _ in model.named_parameters()}  # the first name of each
    distinct |= {name for name, _ in model.named_buffers()}
    return {key for key in model.state_dict() if key not in distinct}


# ----------------------------------------------------------------------------------------------
# Configs: ours <-> the dictionaries in Hugging Face's config.json


def _token_id(token_id: int | None, vocab_size: int) -> int | None:
    """``token_id`` if it names a token of the vocabulary, else ``None``."""
    return token_id if token_id is not None and 0 <= token_id < vocab_size else None


def hf_config_dict(
    config: Any,
    *,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    hf_class: str | None = None,
) -> dict[str, Any]:
    """The Hugging Face ``config.json`` contents describing the same architecture as ``config``.

    Args:
        config: A config of a registered architecture with a twin (``GPTConfig``, ...).
        eos_token_id: The tokenizer's end-of-text id, written as ``eos_token_id`` (and as
            ``bos_token_id`` unless that is given) when it lies inside the vocabulary;
            otherwise ``null``. (``transformers``' defaults, e.g. GPT-2's 50256, would name
            ids a small vocabulary does not have.)
        bos_token_id: The beginning-of-text id, if it differs from ``eos_token_id``.
        hf_class: The ``transformers`` class written in ``architectures`` (default: the
            adapter's, that of the registry's model class; see :func:`hf_class_name`).

    Raises:
        ConfigError: The config has no Hugging Face twin (e.g. an LSTM, or a post-LN GPT).
    """
    adapter = hf_adapter(config)
    architectures = [hf_class or adapter.architectures]
    d: dict[str, Any] = dict(architectures=architectures, model_type=adapter.model_type)
    d.update(adapter.to_hf_config(config))
    if eos_token_id is None and bos_token_id is None and "eos_token_id" in d:
        return d  # the family's config carries its own ids (T5: eos 1, no bos)
    if not hasattr(config, "vocab_size"):
        return d  # a model that reads no tokens (ViT)
    bos = eos_token_id if bos_token_id is None else bos_token_id
    d["bos_token_id"] = _token_id(bos, config.vocab_size)
    d["eos_token_id"] = _token_id(eos_token_id, config.vocab_size)
    return d


def config_from_hf_dict(d: Mapping[str, Any]) -> Any:
    """Our config from the contents of a Hugging Face ``config.json`` (any ``model_type`` a
    registered adapter reads: ``gpt2``, ``llama``).

    Raises:
        CheckpointError: The architecture or one of its options is not supported.
    """
    model_type = d.get("model_type")
    adapter = registry.hf_adapter_for_model_type(str(model_type))
    if adapter is None:
        known = ", ".join(t for a in registry.hf_adapters().values() for t in a.model_types)
        raise CheckpointError(f"model_type {model_type!r} is not supported ({known})")
    return adapter.from_hf_config(d)


# ----------------------------------------------------------------------------------------------
# State dicts


def hf_state_dict(model: Model) -> StateDict:
    """``model``'s weights under Hugging Face names and layouts (GPT-2 ``Conv1D`` transposed)."""
    adapter = hf_adapter(model.config)
    key_map = adapter.key_map(model.config)
    out: StateDict = {}
    for key, tensor in model.state_dict().items():
        hf_key = key_map[key]
        out[hf_key] = tensor.t() if adapter.transposed(hf_key) else tensor
    return out


def load_hf_state_dict(model: Model, hf_state: Mapping[str, torch.Tensor]) -> Model:
    """Load weights in Hugging Face names and layouts into ``model`` (in place); returns it.

    A tied output head may be missing from ``hf_state`` (it is saved once, as the embeddings).

    Raises:
        CheckpointError: A key is missing or unexpected, or a tensor has the wrong shape.
    """
    adapter = hf_adapter(model.config)
    state = dict(hf_state)
    prefix = adapter.base_prefix
    if prefix and not any(k.startswith(prefix) for k in state):
        # Checkpoints saved from the base model (e.g. the original "gpt2") lack the prefix.
        state = {f"{prefix}{k}": v for k, v in state.items()}
    key_map = adapter.key_map(model.config)
    tied = _tied_keys(model)
    converted: StateDict = {}
    for key, target in model.state_dict().items():
        hf_key = key_map[key]
        if hf_key not in state:
            if key in tied:
                continue  # shared with the token embeddings, saved once
            raise CheckpointError(f"checkpoint is missing key {hf_key!r}")
        tensor = state[hf_key]
        if adapter.transposed(hf_key):
            tensor = tensor.t()
        if tensor.shape != target.shape:
            raise CheckpointError(
                f"{hf_key}: expected shape {tuple(target.shape)} (after the key map), "
                f"got {tuple(tensor.shape)}"
            )
        if key not in tied:  # the embeddings already set the shared matrix
            converted[key] = tensor
    known = {key_map[key] for key in model.state_dict()}  # this class's keys, not the family's
    ignored = adapter.ignored_suffixes
    unexpected = [k for k in state if k not in known and not (ignored and k.endswith(ignored))]
    if unexpected:
        raise CheckpointError(f"checkpoint has unexpected key {unexpected[0]!r}")
    model.load_state_dict(converted, strict=False)
    return model


# ----------------------------------------------------------------------------------------------
# In memory: transformers models


def from_hf(hf_model: Any) -> Model:
    """Our model with the architecture and weights of a ``transformers`` model.

    Args:
        hf_model: A ``GPT2LMHeadModel``, ``LlamaForCausalLM``, ``BertModel``,
            ``BertForMaskedLM``, ... (any dtype, any device).

    Returns:
        The twin of ours (``GPT``, ``Llama``, ``Bert``, ``BertForMaskedLM``, ...) on the same
        device and dtype, in eval mode if ``hf_model`` is.

    Raises:
        CheckpointError: The architecture, one of its options or the class is not supported.
    """
    config = config_from_hf_dict(hf_model.config.to_dict())
    param = next(hf_model.parameters())
    model = model_class_for(config, type(hf_model).__name__)(config)
    load_hf_state_dict(model, hf_model.state_dict())
    model.to(device=param.device, dtype=param.dtype)
    return model.train(hf_model.training)


def to_hf(model: Model, *, attn_implementation: str = "eager") -> nn.Module:
    """A ``transformers`` model equal to ``model``, of its twin class (:func:`hf_class_name`:
    ``GPT2LMHeadModel``, ``LlamaForCausalLM``, ``BertModel``, ``BertForMaskedLM``, ...).

    Args:
        model: Our ``GPT``, ``Llama``, ``Bert``, ...
        attn_implementation: Passed to ``transformers`` (``"eager"`` or ``"sdpa"``).

    Raises:
        ConfigError: The config has no Hugging Face twin.
    """
    import transformers

    hf_class = hf_class_name(model)
    d = hf_config_dict(model.config, hf_class=hf_class)
    hf_config = transformers.AutoConfig.for_model(
        **{k: v for k, v in d.items() if k != "architectures"}
    )
    hf_model = getattr(transformers, hf_class)._from_config(
        hf_config, attn_implementation=attn_implementation
    )
    adapter = hf_adapter(model.config)
    param = next(model.parameters())
    hf_model.to(device=param.device, dtype=param.dtype)
    if _has_untied_head(model) and _hf_head_is_tied(hf_model):
        # transformers 5 may tie a head built from a config whatever the config says (T5 v1.1):
        # give the head its own matrix before loading, or one key would overwrite the other.
        head = hf_model.get_output_embeddings()
        head.weight = nn.Parameter(head.weight.detach().clone())
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model), strict=False)
    ignored = adapter.ignored_suffixes
    missing = [k for k in missing if not (ignored and k.endswith(ignored))]
    if missing or unexpected:
        raise CheckpointError(f"key map incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.train(model.training)


def _has_untied_head(model: nn.Module) -> bool:
    """Whether ``model`` has an output head whose weight is not an input embedding's."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    heads = [m for name, m in model.named_modules() if name.endswith("lm_head")]
    return any(isinstance(h, nn.Linear) and id(h.weight) not in embeddings for h in heads)


def _hf_head_is_tied(hf_model: nn.Module) -> bool:
    head = hf_model.get_output_embeddings()  # type: ignore[operator]
    inputs = hf_model.get_input_embeddings()  # type: ignore[operator]
    return head is not None and inputs is not None and head.weight is inputs.weight


# ----------------------------------------------------------------------------------------------
# On disk: config.json + model.safetensors


def export_hf(
    model: Model,
    out_dir: str | Path,
    *,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` loadable by ``from_pretrained(out_dir)``.

    A tied output head is stored once (under the embedding's name), as Hugging Face does.
    Nothing is written for a model without a Hugging Face twin.

    Args:
        model: Our ``GPT``, ``Llama``, ``Bert``, ... (a model of an architecture with a Hugging
            Face twin); ``config.json`` names its twin class in ``architectures``.
        out_dir: Directory to create or overwrite the two files in.
        eos_token_id: The tokenizer's end-of-text id (``tokenizer.eot_id``), written as the
            config's ``eos_token_id`` and ``bos_token_id``; ``None`` (or an id outside the
            vocabulary) writes ``null`` for both.
        bos_token_id: A beginning-of-text id that differs from ``eos_token_id``.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ConfigError: The model has no Hugging Face twin.
    """
    from safetensors.torch import save_file

    # Refuses a model without a twin before anything is written.
    d = hf_config_dict(
        model.config,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        hf_class=hf_class_name(model),
    )
    dtype = next(model.parameters()).dtype
    d["torch_dtype"] = str(dtype).removeprefix("torch.")
    hf_names = hf_adapter(model.config).key_map(model.config)
    tied = {hf_names[key] for key in _tied_keys(model)}
    state = {k: v for k, v in hf_state_dict(model).items() if k not in tied}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    to_checkpoint = hf_adapter(model.config).to_checkpoint
    if to_checkpoint is not None:  # the names checkpoints use, where the modules' differ
        tensors = to_checkpoint(tensors)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    atomic_write(out / "config.json", text.encode("utf-8"))
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), {"format": "pt"})
    return out


def _read_safetensors(directory: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    try:
        if single.exists():
            return load_file(single)
        if index.exists():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            state: StateDict = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_file(directory / shard))
            return state
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the weights in {directory}: {e}") from e
    raise CheckpointError(
        f"{directory} has no model.safetensors (pickled .bin checkpoints are not loaded)"
    )


def import_hf(path: str | Path, *, dtype: torch.dtype | None = None) -> Model:
    """Our model from a local Hugging Face checkpoint directory (``config.json`` + safetensors),
    of the class paired with the first of ``config.json``'s ``architectures`` (``BertModel`` ->
    ``Bert``; see :func:`model_class_for`).

    Args:
        path: Directory holding ``config.json`` and ``model.safetensors`` (or a sharded
            ``model.safetensors.index.json``).
        dtype: Convert the weights to this dtype (default: float32).

    Raises:
        CheckpointError: Files missing or corrupt, unsupported architecture, or weights that do
            not match the config.
    """
    directory = Path(path)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: is {directory} a checkpoint directory?")
    try:
        d = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path} is not valid JSON: {e}") from e
    try:
        config = config_from_hf_dict(d)
    except KeyError as e:
        raise CheckpointError(f"{config_path} lacks the field {e.args[0]!r}") from e
    architectures = d.get("architectures") or [None]  # the transformers class it was saved from
    model = model_class_for(config, architectures[0])(config)
    state = _read_safetensors(directory)
    from_checkpoint = hf_adapter(config).from_checkpoint
    load_hf_state_dict(model, state if from_checkpoint is None else from_checkpoint(state))
    return model.to(dtype) if dtype is not None else model
