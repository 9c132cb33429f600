"""T5's Hugging Face twins, ``T5ForConditionalGeneration`` and ``T5EncoderModel``: config fields
and key map.

Our :class:`~groundwork.models.t5.T5` names its parts after what they do
(``decoder.blocks.1.cross_attn.q_proj.weight``); Hugging Face keeps the Mesh TensorFlow layout,
where each block is a list of sublayers (``decoder.block.1.layer.1.EncDecAttention.q.weight``:
sublayer 0 is self-attention, 1 cross-attention in the decoder, the last the feed-forward layer).
Three more differences, all names only (nothing is transposed):

* the relative position bias: one table per stack for us (``encoder.relative_attention_bias``),
  stored by Hugging Face in the first block's self-attention
  (``encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight``);
* the embeddings: ours ``embed_tokens``, theirs ``shared``, with ``encoder.embed_tokens`` and
  ``decoder.embed_tokens`` aliases of it (skipped on import);
* the feed-forward layer: ``wi``/``wo`` (v1.0, ReLU), ``wi_0`` (gate), ``wi_1``, ``wo``
  (v1.1, gated GELU).

``T5EncoderModel`` has only ``shared`` and ``encoder.*``: the keys of our
:class:`~groundwork.models.t5.T5Encoder`, a subset of :func:`t5_key_map`.

The head: ``config.json``'s ``tie_word_embeddings`` is true for v1.0 (head = embeddings, decoder
output rescaled by ``d_model ** -0.5``) and false for v1.1 (separate head, no rescale). Since
``transformers`` 5 the config object always says ``tie_word_embeddings=True`` and keeps the
rescale in ``scale_decoder_outputs``, which a saved ``config.json`` then holds as well; it is
read first.

Reference: ``transformers/models/t5/{configuration,modeling}_t5.py``. Chapter 6 of the docs.
"""

from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.hf_adapter import HFAdapter
from groundwork.models.t5 import T5, T5Config, T5Encoder

_ATTENTION = ("q", "k", "v", "o")


def _block_keys(config: T5Config, stack: str, i: int) -> dict[str, str]:
    """Our names -> Hugging Face's for block ``i`` of ``stack`` (``"encoder"``/``"decoder"``)."""
    ours, theirs = f"{stack}.blocks.{i}", f"{stack}.block.{i}.layer"
    keys = {f"{ours}.self_attn_norm.weight": f"{theirs}.0.layer_norm.weight"}
    for p in _ATTENTION:
        keys[f"{ours}.self_attn.{p}_proj.weight"] = f"{theirs}.0.SelfAttention.{p}.weight"
    ff = 1
    if stack == "decoder":
        keys[f"{ours}.cross_attn_norm.weight"] = f"{theirs}.1.layer_norm.weight"
        for p in _ATTENTION:
            keys[f"{ours}.cross_attn.{p}_proj.weight"] = f"{theirs}.1.EncDecAttention.{p}.weight"
        ff = 2
    keys[f"{ours}.mlp_norm.weight"] = f"{theirs}.{ff}.layer_norm.weight"
    dense = f"{theirs}.{ff}.DenseReluDense"
    if config.feed_forward == "gated-gelu":
        keys[f"{ours}.mlp.gate_proj.weight"] = f"{dense}.wi_0.weight"
        keys[f"{ours}.mlp.up_proj.weight"] = f"{dense}.wi_1.weight"
    else:
        keys[f"{ours}.mlp.up_proj.weight"] = f"{dense}.wi.weight"
    keys[f"{ours}.mlp.down_proj.weight"] = f"{dense}.wo.weight"
    return keys


def t5_key_map(config: T5Config) -> dict[str, str]:
    """Our T5 parameter names -> Hugging Face ``T5ForConditionalGeneration`` names (a
    :class:`~groundwork.models.t5.T5Encoder` uses the ``embed_tokens`` and ``encoder`` ones).

    >>> key_map = t5_key_map(T5Config.from_name("tiny"))
    >>> key_map["decoder.blocks.1.cross_attn.q_proj.weight"]
    'decoder.block.1.layer.1.EncDecAttention.q.weight'
    >>> key_map["encoder.relative_attention_bias.weight"]
    'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
    """
    assert config.n_decoder_layers is not None
    keys = {"embed_tokens.weight": "shared.weight"}
    for stack, n in (("encoder", config.n_layers), ("decoder", config.n_decoder_layers)):
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        keys[f"{stack}.relative_attention_bias.weight"] = bias
        for i in range(n):
            keys.update(_block_keys(config, stack, i))
        keys[f"{stack}.final_norm.weight"] = f"{stack}.final_layer_norm.weight"
    keys["lm_head.weight"] = "lm_head.weight"
    return keys


def to_hf_config(config: T5Config) -> dict[str, Any]:
    """The ``transformers.T5Config`` fields describing ``config``."""
    return dict(
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.n_layers,
        num_decoder_layers=config.n_decoder_layers,
        num_heads=config.n_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        feed_forward_proj=config.feed_forward,
        tie_word_embeddings=config.tie_embeddings,
        is_encoder_decoder=True,
        pad_token_id=config.pad_id,
        eos_token_id=config.eos_id,
        decoder_start_token_id=config.decoder_start_id,
    )


def _token_id(d: Mapping[str, Any], key: str, default: int) -> int:
    value = d.get(key)
    if isinstance(value, list):  # several end-of-sequence ids: the first one
        value = value[0] if value else None
    return default if value is None else int(value)


def from_hf_config(d: Mapping[str, Any]) -> T5Config:
    """Our config from a ``transformers.T5Config``'s fields.

    Raises:
        CheckpointError: A feed-forward layer other than ``relu`` and ``gated-gelu``.
    """
    feed_forward = d.get("feed_forward_proj", "relu")
    if feed_forward not in ("relu", "gated-gelu"):
        raise CheckpointError(
            f"T5 feed_forward_proj {feed_forward!r} is not supported (relu, gated-gelu)"
        )
    scale = d.get("scale_decoder_outputs")  # transformers >= 5 writes the rescale apart
    tied = bool(d.get("tie_word_embeddings", True) if scale is None else scale)
    pad_id = _token_id(d, "pad_token_id", 0)
    return T5Config(
        vocab_size=d["vocab_size"],
        max_seq_len=d.get("n_positions") or 512,
        d_model=d["d_model"],
        d_kv=d["d_kv"],
        d_ff=d["d_ff"],
        n_layers=d["num_layers"],
        n_decoder_layers=d.get("num_decoder_layers"),
        n_heads=d["num_heads"],
        relative_attention_num_buckets=d.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=d.get("relative_attention_max_distance", 128),
        dropout=d.get("dropout_rate", 0.1),
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-6),
        feed_forward=feed_forward,
        tie_embeddings=tied,
        pad_id=pad_id,
        eos_id=_token_id(d, "eos_token_id", 1),
        decoder_start_id=_token_id(d, "decoder_start_token_id", pad_id),
    )


T5_ADAPTER = HFAdapter(
    model_types=("t5",),
    architectures="T5ForConditionalGeneration",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=t5_key_map,
    # Aliases of `shared` in the stacks, and the unused cross-attention bias old checkpoints hold.
    ignored_suffixes=("embed_tokens.weight", "EncDecAttention.relative_attention_bias.weight"),
    hf_classes={"T5ForConditionalGeneration": T5, "T5EncoderModel": T5Encoder},
)
"""The T5 adapter (registered on the ``t5`` architecture)."""
