"""Load Llama-architecture GGUF files: llama.cpp's tensor names and Q/K row order mapped to Hugging
Face's, the config read from the metadata, and our :class:`~groundwork.models.llama.Llama` built
from them.

The file format itself (header, metadata, tensor infos) is read by
:mod:`groundwork.interop.gguf_file` and the quantized blocks decoded by
:mod:`groundwork.interop.gguf_quants`; their public names are re-exported here, so
``from groundwork.interop.gguf import GGUFFile, dequantize`` works. The tokenizer and
chat template are rebuilt by :mod:`groundwork.interop.gguf_tokenizer`.

A llama.cpp file differs from a Hugging Face Llama checkpoint in three ways, each undone here:

* the names (:func:`hf_llama_name`): ``blk.N.attn_q.weight`` is
  ``model.layers.N.self_attn.q_proj.weight``;
* the rows of ``q_proj`` and ``k_proj``, which llama.cpp's converter permutes for its RoPE
  (:func:`unpermute_rotary`, undone by :func:`load_state_dict`);
* the config, which lives in ``llama.*`` metadata keys (:func:`llama_config_from_gguf`).

References:
    - llama.cpp ``convert_hf_to_gguf.py`` (``LlamaModel.permute``, the tensor name map).
    - ``transformers/modeling_gguf_pytorch_utils.py`` (the reverse mapping, used in the tests).
    - Docs: chapter 6, "Pretrained model families: loading real weights".
"""

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.interop.gguf_file import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    SUPPORTED_VERSIONS,
    GGUFFile,
    GGUFValueType,
    TensorInfo,
    read_gguf,
)
from groundwork.interop.gguf_quants import (
    GGML_TYPES,
    Q4_0_BLOCK,
    Q4_1_BLOCK,
    Q8_0_BLOCK,
    SUPPORTED_TYPES,
    GGMLType,
    dequantize,
    dequantize_bf16,
    dequantize_q4_0,
    dequantize_q4_1,
    dequantize_q8_0,
)

if TYPE_CHECKING:
    from groundwork.models.llama import Llama

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGML_TYPES",
    "GGUF_MAGIC",
    "Q4_0_BLOCK",
    "Q4_1_BLOCK",
    "Q8_0_BLOCK",
    "SUPPORTED_TYPES",
    "SUPPORTED_VERSIONS",
    "GGMLType",
    "GGUFFile",
    "GGUFValueType",
    "TensorInfo",
    "dequantize",
    "dequantize_bf16",
    "dequantize_q4_0",
    "dequantize_q4_1",
    "dequantize_q8_0",
    "hf_llama_name",
    "llama_config_from_gguf",
    "llama_from_gguf",
    "load_llama_gguf",
    "load_state_dict",
    "read_gguf",
    "unpermute_rotary",
]


# --8<-- [start:names]
# llama.cpp tensor names -> Hugging Face Llama names ("blk.N." becomes "model.layers.N.").
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# --8<-- [end:names]
# Tensors some converters add that are computed from the config, not learned: Llama 3.1 files store
# their rope-scaling frequency factors as "rope_freqs.weight". Hugging Face recomputes them.
_DERIVED_TENSORS = {"rope_freqs.weight"}


def hf_llama_name(gguf_name: str) -> str:
    """Map a llama.cpp tensor name to its Hugging Face Llama name.

    >>> hf_llama_name("blk.3.ffn_gate.weight")
    'model.layers.3.mlp.gate_proj.weight'
    >>> hf_llama_name("token_embd.weight")
    'model.embed_tokens.weight'

    Raises:
        UnknownNameError: For a name outside the Llama architecture (e.g. ``rope_freqs.weight``).
    """
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    raise UnknownNameError(
        f"GGUF tensor {gguf_name!r} has no Hugging Face Llama name; known: "
        f"{', '.join(_GLOBAL_NAMES)}, blk.N.{{{', '.join(_BLOCK_NAMES)}}}"
    )


# --8<-- [start:unpermute]
def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of the rows of a ``q_proj`` / ``k_proj`` weight.

    Hugging Face Llama applies RoPE to the two *halves* of each head (``rotate_half``: dimension
    ``i`` pairs with ``i + d_head/2``); llama.cpp rotates *adjacent* pairs (``2i`` with ``2i+1``).
    So its converter reorders each head's output rows, half-split -> interleaved:

        HF row ``h*d_head + s*(d_head/2) + i``  ->  GGUF row ``h*d_head + 2*i + s``   (s in {0, 1})

    i.e. view the rows as ``(n_heads, 2, d_head/2)`` and swap the last two axes. The inverse views
    the GGUF rows as ``(n_heads, d_head/2, 2)`` and swaps them back. For one head with
    ``d_head = 4``: GGUF rows ``[a0, b0, a1, b1]`` -> HF rows ``[a0, a1, b0, b1]``.

    Args:
        weight: ``(n_heads * d_head, d_model)`` as stored in the GGUF file (row-major).
        n_heads: Heads this projection has: ``head_count`` for Q, ``head_count_kv`` for K.

    Returns:
        The weight in Hugging Face row order, same shape.
    """
    rows = weight.shape[0]
    d_head = rows // n_heads
    w = weight.reshape(n_heads, d_head // 2, 2, *weight.shape[1:])  # (H, d_head/2, 2, D)
    return w.swapaxes(1, 2).reshape(weight.shape)  # (H, 2, d_head/2, D) -> (H*d_head, D)


# --8<-- [end:unpermute]


def llama_config_from_gguf(
    metadata: Mapping[str, Any], tensor_names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The Hugging Face ``LlamaConfig`` fields a Llama-architecture GGUF describes.

    Args:
        metadata: :attr:`GGUFFile.metadata` of a file with ``general.architecture == "llama"``.
        tensor_names: The file's tensor names (:attr:`GGUFFile.tensors`). The metadata does not
            say whether the output head is tied to the embedding; the tensors do: a file without
            ``output.weight`` reuses ``token_embd.weight``. Without names, tied is assumed.

    Returns:
        A ``config.json``-style dict (``transformers.LlamaConfig(**config)`` accepts it):
        ``model_type`` (``"llama"``), ``vocab_size``, ``hidden_size``, ``intermediate_size``,
        ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
        ``rope_theta``, ``rms_norm_eps``, ``max_position_embeddings``, ``tie_word_embeddings``,
        and the ``bos/eos/pad/unk_token_id`` the file names.

    Raises:
        ConfigError: If the architecture is not ``llama`` or a required key is missing.
    """
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ConfigError(
            f"GGUF general.architecture is {arch!r}; only 'llama' files can be loaded as Llama"
        )

    def get(key: str, default: Any = None) -> Any:
        full = f"llama.{key}"
        if full in metadata:
            return metadata[full]
        if default is None:
            raise ConfigError(f"GGUF metadata lacks {full!r}, needed for the Llama config")
        return default

    n_heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    vocab_size = metadata.get("llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", [])))
    config: dict[str, Any] = {
        "model_type": "llama",
        "vocab_size": int(vocab_size),
        "hidden_size": d_model,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(get("attention.head_count_kv", n_heads)),
        "head_dim": int(get("rope.dimension_count", d_model // n_heads)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(get("context_length")),
        "tie_word_embeddings": tensor_names is None or "output.weight" not in set(tensor_names),
    }
    for field, key in [("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")]:
        if f"tokenizer.ggml.{key}_token_id" in metadata:
            config[f"{field}_token_id"] = int(metadata[f"tokenizer.ggml.{key}_token_id"])
    return config


def load_state_dict(
    path: str | Path | GGUFFile, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Load a Llama-architecture GGUF as a Hugging Face Llama state dict, dequantized.

    Renames tensors (:func:`hf_llama_name`), undoes the Q/K row permutation
    (:func:`unpermute_rotary`) and returns tensors in PyTorch shapes; ``rope_freqs.weight``
    (derived from the config, not learned) is skipped. Files without
    ``output.weight`` tie the output head to the embedding: there is then no ``lm_head.weight``
    key (and :func:`llama_config_from_gguf` says ``tie_word_embeddings``).

    Args:
        path: The ``.gguf`` file, or an opened :class:`GGUFFile`.
        dtype: The dtype of the returned tensors.

    Returns:
        ``{"model.embed_tokens.weight": (vocab_size, d_model), ...}``.
    """
    gguf = path if isinstance(path, GGUFFile) else GGUFFile(path)
    config = llama_config_from_gguf(gguf.metadata)
    state: dict[str, torch.Tensor] = {}
    for name in gguf.tensors:
        if name in _DERIVED_TENSORS:
            continue
        weight = gguf.dequantize(name)
        if name.endswith(".attn_q.weight"):
            weight = unpermute_rotary(weight, config["num_attention_heads"])
        elif name.endswith(".attn_k.weight"):
            weight = unpermute_rotary(weight, config["num_key_value_heads"])
        state[hf_llama_name(name)] = torch.from_numpy(np.ascontiguousarray(weight)).to(dtype)
    return state


def load_llama_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict of a Llama GGUF in one call: ``(llama_config, state_dict)``.

    The same as :func:`llama_config_from_gguf` (with the file's tensor names) and
    :func:`load_state_dict`, reading the file once.
    """
    gguf = GGUFFile(path)
    config = llama_config_from_gguf(gguf.metadata, gguf.tensors)
    return config, load_state_dict(gguf, dtype=dtype)


def llama_from_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> "Llama":
    """Our :class:`~groundwork.models.llama.Llama` with the architecture and weights of a GGUF file.

    The GGUF config and state dict (:func:`load_llama_gguf`) are already in Hugging Face form, so
    this goes through the same converters as a ``transformers`` checkpoint
    (:func:`groundwork.interop.hf.config_from_hf_dict`, ``load_hf_state_dict``). The tokenizer
    comes from :func:`groundwork.interop.gguf_tokenizer.tokenizer_from_gguf`.

    Example:
        >>> model = llama_from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf").eval()  # doctest: +SKIP

    Args:
        path: A Llama-architecture ``.gguf`` file.
        dtype: The dtype of the returned model's parameters.

    Returns:
        The model, in training mode like any freshly built module (call ``.eval()``).
    """
    from groundwork.interop.hf import config_from_hf_dict, load_hf_state_dict
    from groundwork.models import build_model

    config, state = load_llama_gguf(path)
    model = build_model(config_from_hf_dict(config))
    load_hf_state_dict(model, state)
    return model.to(dtype)
