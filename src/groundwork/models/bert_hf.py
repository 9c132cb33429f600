"""BERT's Hugging Face twins, ``BertModel``, ``BertForMaskedLM`` and ``BertForPreTraining``:
config fields, key map, and which ``transformers`` class each of our classes is.

One family, three classes on each side, paired in :data:`BERT_ADAPTER`'s ``hf_classes``:

=========================  ===================================================================
``transformers``           ours
=========================  ===================================================================
``BertModel``              :class:`~groundwork.models.bert.Bert` (keys without a prefix)
``BertForMaskedLM``        :class:`~groundwork.models.bert.BertForMaskedLM` (``bert.`` + the
                           MLM head ``cls.predictions.*``; no pooler)
``BertForPreTraining``     :class:`~groundwork.models.bert.BertForPreTraining` (``bert.`` with
                           the pooler, ``cls.predictions.*`` and ``cls.seq_relationship``)
=========================  ===================================================================

Our heads hold the encoder as ``bert``, as Hugging Face's do, so one key map (:func:`bert_key_map`)
covers the three: the encoder's names with and without the ``bert.`` prefix, plus the heads.
Nothing is transposed. Hugging Face's MLM head holds its output bias twice, as
``cls.predictions.bias`` and ``cls.predictions.decoder.bias``: tied together when the output
matrix is tied to the embeddings (we read and write the first), apart otherwise (then the
decoder's is the one its forward adds, and the other is left unused; we read and write the
decoder's). Ours has one, the decoder's bias.

Reference: Devlin et al. 2019; ``transformers/models/bert/modeling_bert.py``. Chapter 6.
"""

from collections.abc import Mapping
from typing import Any

from groundwork.errors import CheckpointError
from groundwork.models.bert import Bert, BertConfig, BertForMaskedLM, BertForPreTraining
from groundwork.models.hf_adapter import HFAdapter

_HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
"""Our ``hidden_act`` -> Hugging Face's (read back: ``gelu_new`` is the tanh GELU as well)."""


# --8<-- [start:bert_key_map]
def encoder_key_map(n_layers: int) -> dict[str, str]:
    """Our :class:`~groundwork.models.bert.Bert` parameter names -> Hugging Face ``BertModel``
    names.

    >>> encoder_key_map(1)["blocks.0.attn.q_proj.weight"]
    'encoder.layer.0.attention.self.query.weight'
    """
    mapping = {
        "tok_emb.weight": "embeddings.word_embeddings.weight",
        "pos_emb.weight": "embeddings.position_embeddings.weight",
        "seg_emb.weight": "embeddings.token_type_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
        "pooler.weight": "pooler.dense.weight",
        "pooler.bias": "pooler.dense.bias",
    }
    per_layer = {
        "attn.q_proj": "attention.self.query",
        "attn.k_proj": "attention.self.key",
        "attn.v_proj": "attention.self.value",
        "attn.o_proj": "attention.output.dense",
        "ln_1": "attention.output.LayerNorm",  # post-LN: after the attention's residual sum
        "mlp.up_proj": "intermediate.dense",
        "mlp.down_proj": "output.dense",
        "ln_2": "output.LayerNorm",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                mapping[f"blocks.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return mapping


HEAD_KEYS = {
    "mlm.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.decoder.weight": "cls.predictions.decoder.weight",
    "nsp.weight": "cls.seq_relationship.weight",
    "nsp.bias": "cls.seq_relationship.bias",
}
"""The pretraining heads' parameter names -> Hugging Face's (the output bias aside)."""


def bert_key_map(config: BertConfig) -> dict[str, str]:
    """Our parameter names -> Hugging Face's, for the three classes at once: the encoder's
    names (``BertModel``), the same under ``bert.`` (the models with heads), and the heads.

    >>> bert_key_map(BertConfig.from_name("tiny"))["bert.tok_emb.weight"]
    'bert.embeddings.word_embeddings.weight'
    """
    encoder = encoder_key_map(config.n_layers)
    prefixed = {f"bert.{ours}": f"bert.{theirs}" for ours, theirs in encoder.items()}
    bias = "cls.predictions.bias" if config.tie_embeddings else "cls.predictions.decoder.bias"
    return {**encoder, **prefixed, **HEAD_KEYS, "mlm.decoder.bias": bias}


# --8<-- [end:bert_key_map]


def to_hf_config(config: BertConfig) -> dict[str, Any]:
    """The ``transformers.BertConfig`` fields describing ``config``."""
    return dict(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_seq_len,
        type_vocab_size=config.type_vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.d_ff,
        hidden_act=_HIDDEN_ACT[config.hidden_act],
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        pad_token_id=config.pad_id,
        position_embedding_type="absolute",
        tie_word_embeddings=config.tie_embeddings,
    )


def from_hf_config(d: Mapping[str, Any]) -> BertConfig:
    """Our config from a ``transformers.BertConfig``'s fields.

    Raises:
        CheckpointError: An option our BERT does not implement (relative positions, a decoder
            with cross-attention, another activation).
    """
    positions = d.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise CheckpointError(f"BERT position_embedding_type {positions!r} is not supported")
    for flag in ("is_decoder", "add_cross_attention"):
        if d.get(flag):
            raise CheckpointError(f"BERT option {flag}=True is not supported (an encoder only)")
    act = d.get("hidden_act", "gelu")
    acts = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
    if act not in acts:
        raise CheckpointError(f"BERT hidden_act {act!r} is not supported (gelu, gelu_new)")
    return BertConfig(
        vocab_size=d["vocab_size"],
        max_seq_len=d["max_position_embeddings"],
        type_vocab_size=d.get("type_vocab_size", 2),
        d_model=d["hidden_size"],
        n_layers=d["num_hidden_layers"],
        n_heads=d["num_attention_heads"],
        d_ff=d["intermediate_size"],
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        dropout=d.get("hidden_dropout_prob", 0.1),
        hidden_act=acts[act],  # type: ignore[arg-type]
        pad_id=d.get("pad_token_id", 0),
        tie_embeddings=d.get("tie_word_embeddings", True),
    )


BERT_ADAPTER = HFAdapter(
    model_types=("bert",),
    architectures="BertModel",
    to_hf_config=to_hf_config,
    from_hf_config=from_hf_config,
    key_map=bert_key_map,
    ignored_suffixes=(
        "embeddings.position_ids",  # the positions 0..max-1, a buffer older checkpoints saved
        "embeddings.token_type_ids",  # all-zero segment ids, likewise
        # The output bias's other name (tied), or the unused one (untied): see above.
        "cls.predictions.decoder.bias",
        "cls.predictions.bias",
    ),
    hf_classes={
        "BertModel": Bert,
        "BertForMaskedLM": BertForMaskedLM,
        "BertForPreTraining": BertForPreTraining,
    },
)
"""The BERT adapter (registered on the ``bert`` architecture)."""
