"""Conversion between Groundwork models and Hugging Face ``transformers`` checkpoints.

Two levels:

* in memory: :func:`from_hf` (a ``transformers`` model -> ours) and :func:`to_hf` (ours -> a
  ``transformers`` model). These import ``transformers`` lazily; it is an optional dependency.
* on disk: :func:`export_hf` writes ``config.json`` + ``model.safetensors`` that
  ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads, and :func:`import_hf` reads such a
  directory back. Neither needs ``transformers``: the config is plain JSON and the weights are
  safetensors (never pickles).

The state-dict key maps are explicit and documented:

* Llama: our parameter names *are* Hugging Face's (``model.layers.0.self_attn.q_proj.weight``),
  so the map is the identity.
* GPT-2: names differ (:func:`gpt2_key_map`), and Hugging Face stores GPT-2's linear layers as
  ``Conv1D`` modules whose weight is the transpose of ``nn.Linear``'s (``(in, out)`` instead of
  ``(out, in)``): those weights are transposed on the way in and out.

A checkpoint whose keys or shapes do not match the config raises
:class:`~groundwork.errors.CheckpointError` naming the key and the expected and actual shapes.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError
from groundwork.fileio import atomic_path, atomic_write
from groundwork.models import build_model
from groundwork.models.gpt import GPT, GPTConfig
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.nn import RopeScaling

Model = GPT | Llama
StateDict = dict[str, torch.Tensor]

# Buffers some Hugging Face checkpoints carry that hold no learned state (causal masks, RoPE
# frequencies): skipped on import.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


# --8<-- [start:gpt2_key_map]
def gpt2_key_map(n_layers: int) -> dict[str, str]:
    """Our GPT parameter names -> Hugging Face ``GPT2LMHeadModel`` names.

    >>> gpt2_key_map(1)["blocks.0.attn.qkv_proj.weight"]
    'transformer.h.0.attn.c_attn.weight'
    """
    mapping = {
        "wte.weight": "transformer.wte.weight",
        "wpe.weight": "transformer.wpe.weight",
        "ln_f.weight": "transformer.ln_f.weight",
        "ln_f.bias": "transformer.ln_f.bias",
        "lm_head.weight": "lm_head.weight",
    }
    per_layer = {
        "ln_1": "ln_1",
        "attn.qkv_proj": "attn.c_attn",
        "attn.o_proj": "attn.c_proj",
        "ln_2": "ln_2",
        "mlp.up_proj": "mlp.c_fc",
        "mlp.down_proj": "mlp.c_proj",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                mapping[f"blocks.{i}.{ours}.{p}"] = f"transformer.h.{i}.{theirs}.{p}"
    return mapping


def _is_conv1d_weight(hf_key: str) -> bool:
    """GPT-2's ``Conv1D`` weights, stored ``(in, out)``: every linear weight except ``lm_head``."""
    return hf_key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))


# --8<-- [end:gpt2_key_map]


def _key_map(model: Model) -> dict[str, str]:
    """Our state-dict keys -> Hugging Face keys for ``model``."""
    if isinstance(model, GPT):
        return gpt2_key_map(model.config.n_layers)
    return {key: key for key in model.state_dict()}  # Llama: the same names


# ----------------------------------------------------------------------------------------------
# Configs: ours <-> the dictionaries in Hugging Face's config.json


def hf_config_dict(config: GPTConfig | LlamaConfig) -> dict[str, Any]:
    """The Hugging Face ``config.json`` contents describing the same architecture as ``config``.

    Raises:
        ConfigError: The config has no Hugging Face twin (e.g. a post-LN or bias-free GPT).
    """
    if not isinstance(config, GPTConfig | LlamaConfig):
        raise ConfigError(
            f"{type(config).__name__.removesuffix('Config')} models have no Hugging Face twin: "
            "only GPT and Llama models export to (or import from) Hugging Face format"
        )
    if isinstance(config, GPTConfig):
        if config.norm_position != "pre":
            raise ConfigError("norm_position must be 'pre' to export to Hugging Face GPT-2")
        if not config.bias:
            raise ConfigError("bias must be True to export to Hugging Face GPT-2")
        if not config.tie_embeddings:
            raise ConfigError("tie_embeddings must be True to export to Hugging Face GPT-2")
        return dict(
            architectures=["GPT2LMHeadModel"],
            model_type="gpt2",
            vocab_size=config.vocab_size,
            n_positions=config.max_seq_len,
            n_embd=config.d_model,
            n_layer=config.n_layers,
            n_head=config.n_heads,
            n_inner=config.d_ff,
            activation_function="gelu_new",
            layer_norm_epsilon=config.layer_norm_eps,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            tie_word_embeddings=True,
        )
    scaling = config.rope_scaling
    rope_scaling = None
    if scaling is not None:
        rope_scaling = {"rope_type": scaling.kind, "factor": scaling.factor}
        if scaling.kind == "llama3":
            rope_scaling.update(
                low_freq_factor=scaling.low_freq_factor,
                high_freq_factor=scaling.high_freq_factor,
                original_max_position_embeddings=scaling.original_max_seq_len,
            )
    return dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_seq_len,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.d_head,
        intermediate_size=config.d_ff,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )


def config_from_hf_dict(d: Mapping[str, Any]) -> GPTConfig | LlamaConfig:
    """Our config from the contents of a Hugging Face ``config.json`` (GPT-2 or Llama).

    Raises:
        CheckpointError: The architecture or one of its options is not supported.
    """
    model_type = d.get("model_type")
    if model_type == "gpt2":
        act = d.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise CheckpointError(f"GPT-2 activation_function {act!r} is not supported")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if d.get(flag):
                raise CheckpointError(f"GPT-2 option {flag}=True is not supported")
        if d.get("tie_word_embeddings", True) is False:
            raise CheckpointError("GPT-2 with untied embeddings is not supported")
        return GPTConfig(
            vocab_size=d["vocab_size"],
            max_seq_len=d["n_positions"],
            d_model=d["n_embd"],
            n_layers=d["n_layer"],
            n_heads=d["n_head"],
            d_ff=d.get("n_inner"),
            layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
            dropout=d.get("resid_pdrop", 0.0),
        )
    if model_type == "llama":
        if d.get("attention_bias") or d.get("mlp_bias"):
            raise CheckpointError("Llama with attention_bias or mlp_bias is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"Llama hidden_act {d['hidden_act']!r} is not supported")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        kind = rope.get("rope_type", rope.get("type", "default"))
        scaling: RopeScaling | None = None
        if kind == "linear":
            scaling = RopeScaling(kind="linear", factor=rope["factor"])
        elif kind == "llama3":
            scaling = RopeScaling(
                kind="llama3",
                factor=rope["factor"],
                low_freq_factor=rope["low_freq_factor"],
                high_freq_factor=rope["high_freq_factor"],
                original_max_seq_len=rope["original_max_position_embeddings"],
            )
        elif kind != "default":
            raise CheckpointError(f"RoPE type {kind!r} is not supported (default, linear, llama3)")
        return LlamaConfig(
            vocab_size=d["vocab_size"],
            max_seq_len=d["max_position_embeddings"],
            d_model=d["hidden_size"],
            n_layers=d["num_hidden_layers"],
            n_heads=d["num_attention_heads"],
            n_kv_heads=d.get("num_key_value_heads"),
            d_head=d.get("head_dim"),
            d_ff=d["intermediate_size"],
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            tie_embeddings=d.get("tie_word_embeddings", False),
        )
    raise CheckpointError(f"model_type {model_type!r} is not supported (gpt2, llama)")


# ----------------------------------------------------------------------------------------------
# State dicts


def hf_state_dict(model: Model) -> StateDict:
    """``model``'s weights under Hugging Face names and layouts (GPT-2 ``Conv1D`` transposed)."""
    key_map = _key_map(model)
    out: StateDict = {}
    for key, tensor in model.state_dict().items():
        hf_key = key_map[key]
        is_gpt_conv = isinstance(model, GPT) and _is_conv1d_weight(hf_key)
        out[hf_key] = tensor.t() if is_gpt_conv else tensor
    return out


def load_hf_state_dict(model: Model, hf_state: Mapping[str, torch.Tensor]) -> Model:
    """Load weights in Hugging Face names and layouts into ``model`` (in place); returns it.

    Raises:
        CheckpointError: A key is missing or unexpected, or a tensor has the wrong shape.
    """
    state = dict(hf_state)
    if isinstance(model, GPT) and not any(k.startswith("transformer.") for k in state):
        # Checkpoints saved from GPT2Model (e.g. the original "gpt2") lack the prefix.
        state = {f"transformer.{k}": v for k, v in state.items()}
    key_map = _key_map(model)
    expected = model.state_dict()
    tied = model.config.tie_embeddings
    converted: StateDict = {}
    for key, target in expected.items():
        hf_key = key_map[key]
        if hf_key not in state:
            if tied and key == "lm_head.weight":
                continue  # shared with the token embeddings, saved once
            raise CheckpointError(f"checkpoint is missing key {hf_key!r}")
        tensor = state[hf_key]
        if isinstance(model, GPT) and _is_conv1d_weight(hf_key):
            tensor = tensor.t()
        if tensor.shape != target.shape:
            raise CheckpointError(
                f"{hf_key}: expected shape {tuple(target.shape)} (after the key map), "
                f"got {tuple(tensor.shape)}"
            )
        converted[key] = tensor
    known = set(key_map.values())
    unexpected = [k for k in state if k not in known and not k.endswith(_IGNORED_SUFFIXES)]
    if unexpected:
        raise CheckpointError(f"checkpoint has unexpected key {unexpected[0]!r}")
    if tied and "lm_head.weight" in converted:
        converted.pop("lm_head.weight")  # the embeddings already set the shared matrix
    model.load_state_dict(converted, strict=False)
    return model


# ----------------------------------------------------------------------------------------------
# In memory: transformers models


def from_hf(hf_model: Any) -> Model:
    """Our model with the architecture and weights of a ``transformers`` model.

    Args:
        hf_model: A ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` (any dtype, any device).

    Returns:
        A ``GPT`` or ``Llama`` on the same device and dtype, in eval mode if ``hf_model`` is.
    """
    config = config_from_hf_dict(hf_model.config.to_dict())
    param = next(hf_model.parameters())
    model = build_model(config)
    load_hf_state_dict(model, hf_model.state_dict())
    model.to(device=param.device, dtype=param.dtype)
    return model.train(hf_model.training)


def to_hf(model: Model, *, attn_implementation: str = "eager") -> nn.Module:
    """A ``transformers`` model (``GPT2LMHeadModel`` / ``LlamaForCausalLM``) equal to ``model``.

    Args:
        model: Our ``GPT`` or ``Llama``.
        attn_implementation: Passed to ``transformers`` (``"eager"`` or ``"sdpa"``).

    Raises:
        ConfigError: The config has no Hugging Face twin.
    """
    import transformers

    d = hf_config_dict(model.config)
    hf_config = transformers.AutoConfig.for_model(
        **{k: v for k, v in d.items() if k != "architectures"}
    )
    hf_model = transformers.AutoModelForCausalLM.from_config(
        hf_config, attn_implementation=attn_implementation
    )
    param = next(model.parameters())
    hf_model.to(device=param.device, dtype=param.dtype)
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith(_IGNORED_SUFFIXES) and k != "lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(f"key map incomplete: missing {missing}, unexpected {unexpected}")
    return hf_model.train(model.training)


# ----------------------------------------------------------------------------------------------
# On disk: config.json + model.safetensors


def export_hf(model: Model, out_dir: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` loadable by ``from_pretrained(out_dir)``.

    A tied output head is stored once (under the embedding's name), as Hugging Face does.

    Args:
        model: Our ``GPT`` or ``Llama``.
        out_dir: Directory to create or overwrite the two files in.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = hf_config_dict(model.config)
    dtype = next(model.parameters()).dtype
    d["torch_dtype"] = str(dtype).removeprefix("torch.")
    state = hf_state_dict(model)
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
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
    """Our model from a local Hugging Face checkpoint directory (``config.json`` + safetensors).

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
    model = build_model(config)
    load_hf_state_dict(model, _read_safetensors(directory))
    return model.to(dtype) if dtype is not None else model
