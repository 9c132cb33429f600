"""BERT: a bidirectional post-LN transformer encoder, with its pretraining heads.

Read top to bottom: the config and its presets, the encoder (:class:`Bert`), then the heads it
was pretrained with: masked language modelling (:class:`BertForMaskedLM`) and, together with
next-sentence prediction, :class:`BertForPreTraining`.

The encoder is the GPT block turned around: every token attends to every other token (no causal
mask, only a padding mask), the LayerNorm comes *after* each residual sum (post-LN, as in the
original Transformer), the GELU is the exact one, ``x Φ(x)``, and a third embedding table says
which segment (sentence A or B) each token belongs to. There is no final LayerNorm: the last
block's output is already normalised.

References:
    * Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
      Understanding" (the model, MLM + NSP, the ``bert-base``/``bert-large`` presets).
    * Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
      of Pre-Trained Transformers" (the ``minilm-l6`` preset's shape).
    * Reimers & Gurevych 2019, "Sentence-BERT" (all-MiniLM-L6-v2 is a sentence encoder trained
      this way: mean pooling, see :mod:`groundwork.evaluate.embeddings`).
    * Vaswani et al. 2017, "Attention Is All You Need" (the post-LN block).

Parameter names differ from Hugging Face's ``BertModel``; :mod:`groundwork.models.bert_hf` holds
the key map. Chapter 6 of the docs.
"""

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_choice, check_divides, check_positive, preset
from groundwork.models.decoder import packed_documents_of
from groundwork.nn import (
    GELUMLP,
    Attention,
    AttentionImpl,
    LayerNorm,
    LearnedPositionalEmbedding,
    TransformerBlock,
    document_mask,
    padding_mask,
    to_additive,
)

HiddenAct = Literal["gelu", "gelu_tanh"]
"""``"gelu"``: the exact GELU ``x Φ(x)`` (BERT, Hugging Face's ``"gelu"``); ``"gelu_tanh"``: its
tanh approximation (GPT-2; Hugging Face's ``"gelu_new"``)."""


@dataclass(kw_only=True)
class BertConfig:
    """Shape and options of a BERT-style encoder."""

    vocab_size: int = 30522
    """Number of token ids (BERT's uncased WordPiece vocabulary: 30522)."""
    max_seq_len: int = 512
    """Longest sequence; the number of learned position vectors (``max_position_embeddings``)."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids: sentence A and sentence B."""
    d_model: int = 768
    """Width of the residual stream (``hidden_size``)."""
    n_layers: int = 12
    """Number of encoder blocks."""
    n_heads: int = 12
    """Attention heads per block; must divide ``d_model``."""
    d_ff: int | None = None
    """Hidden size of the MLP (``intermediate_size``); ``None`` means ``4 * d_model``."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (BERT: 1e-12)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    hidden_act: HiddenAct = "gelu"
    """The MLP's (and the MLM head's) activation: ``"gelu"`` (exact, BERT) or ``"gelu_tanh"``."""
    pad_id: int | None = 0
    """The padding token: its embedding row gets no gradient from the lookup. ``None``: none."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the MLM head's output layer (BERT: yes)."""
    attn_impl: AttentionImpl = "sdpa"
    """``"sdpa"`` (fused kernel) or ``"math"`` (written out)."""

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_positive(
            self,
            "vocab_size",
            "max_seq_len",
            "type_vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
        )
        check_divides(self, "d_model", "n_heads")
        check_choice(self, "hidden_act", ["gelu", "gelu_tanh"])
        check_choice(self, "attn_impl", ["math", "sdpa"])
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(
                f"pad_id must be a token id in 0..{self.vocab_size - 1} (or None), "
                f"got {self.pad_id!r}"
            )

    @property
    def d_head(self) -> int:
        """Size of one attention head."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "BertConfig":
        """A named preset (``"bert-base"``, ``"bert-large"``, ``"minilm-l6"``, ``"tiny"``),
        optionally with fields overridden."""
        return cls(**{**preset(BERT_PRESETS, name, "BERT"), **overrides})


BERT_PRESETS: dict[str, dict[str, Any]] = {
    "bert-base": dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072),
    "bert-large": dict(d_model=1024, n_layers=24, n_heads=16, d_ff=4096),
    "minilm-l6": dict(d_model=384, n_layers=6, n_heads=12, d_ff=1536),
    "tiny": dict(vocab_size=512, max_seq_len=128, d_model=64, n_layers=2, n_heads=4, dropout=0.0),
}
"""Named configs: BERT-base and BERT-large (uncased vocabulary; Devlin et al. 2019, §3), the
shape of all-MiniLM-L6-v2 (Wang et al. 2020), and a CPU-sized one."""


# --8<-- [start:bert]
class BertMLP(GELUMLP):
    """The position-wise MLP with BERT's GELU: ``down_proj(gelu(up_proj(x)))``, where ``gelu``
    is the exact ``x Φ(x)`` (``hidden_act="gelu"``) or GPT-2's tanh approximation."""

    def __init__(
        self, d_model: int, d_ff: int, *, hidden_act: HiddenAct, dropout: float = 0.0
    ) -> None:
        super().__init__(d_model, d_ff, dropout=dropout)
        self.approximate = "none" if hidden_act == "gelu" else "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        h = F.gelu(self.up_proj(x), approximate=self.approximate)  # (B, T, d_ff)
        return self.dropout(self.down_proj(h))


class Bert(nn.Module):
    """The BERT encoder: token + position + segment embeddings, LayerNorm, ``n_layers`` post-LN
    blocks attending in both directions, and (optionally) the pooler on ``[CLS]``.

    Args:
        config: The model's shape and options.
        pooler: Build the pooler (Hugging Face's ``add_pooling_layer``; the MLM-only model has
            none).
    """

    def __init__(self, config: BertConfig, *, pooler: bool = True) -> None:
        super().__init__()
        self.config = c = config
        assert c.d_ff is not None
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.pos_emb = LearnedPositionalEmbedding(c.max_seq_len, c.d_model)
        self.seg_emb = nn.Embedding(c.type_vocab_size, c.d_model)  # sentence A / B
        self.emb_norm = LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                Attention(
                    c.d_model,
                    c.n_heads,
                    bias=True,
                    causal=False,  # every token sees every (non-padding) token
                    impl=c.attn_impl,
                    dropout=c.dropout,
                ),
                BertMLP(c.d_model, c.d_ff, hidden_act=c.hidden_act, dropout=c.dropout),
                LayerNorm(c.d_model, eps=c.layer_norm_eps),
                LayerNorm(c.d_model, eps=c.layer_norm_eps),
                norm_position="post",  # x = norm(x + sublayer(x))
            )
            for _ in range(c.n_layers)
        )
        # The pooler reads the first token, [CLS], whose state NSP trained to sum up the pair.
        self.pooler = nn.Linear(c.d_model, c.d_model) if pooler else None
        init_bert_weights(self)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last block's hidden state of every token.

        Args:
            input_ids: Token ids ``(B, T)``.
            attention_mask: ``(B, T)`` with 1 for tokens and 0 for padding; ``None``: no
                padding. Padding keys are hidden from every query.
            token_type_ids: Segment ids ``(B, T)`` (0 for sentence A, 1 for B); default all 0.
            position_ids: ``(B, T)`` or ``(1, T)``; default ``0 .. T - 1``. Without an
                ``attention_mask``, ids that restart inside a row mark packed documents
                (:func:`~groundwork.models.decoder.packed_documents_of`, the decoders' rule),
                each attending only to itself, as ``transformers``' bidirectional mask does.

        Returns:
            Hidden states ``(B, T, d_model)``.

        Raises:
            ConfigError: A shape, a token id, a segment id or a position does not fit the config.
        """
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        documents = packed_documents_of(position_ids, attention_mask, None, input_ids.shape[0])
        if position_ids is None:
            T = input_ids.shape[1]
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T): all sentence A
        x = self.tok_emb(input_ids) + self.seg_emb(token_type_ids) + self.pos_emb(position_ids)
        x = self.drop(self.emb_norm(x))  # (B, T, d_model)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = to_additive(padding_mask(attention_mask), x.dtype)  # (B, 1, 1, T)
        elif documents is not None:
            mask = to_additive(document_mask(documents), x.dtype)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask=mask)  # (B, T, d_model)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled output: ``tanh(W h_[CLS] + b)``, ``(B, T, d_model) -> (B, d_model)``.

        Raises:
            ConfigError: The model was built without a pooler.
        """
        if self.pooler is None:
            raise ConfigError("this BERT encoder has no pooler: build it with pooler=True")
        return torch.tanh(self.pooler(hidden[:, 0]))  # (B, d_model)


class MaskedLMHead(nn.Module):
    """Predicts every token from its hidden state: a dense layer, GELU and LayerNorm (the
    "transform"), then a projection onto the vocabulary (``decoder``, with a bias)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        c = config
        self.dense = nn.Linear(c.d_model, c.d_model)
        self.approximate = "none" if c.hidden_act == "gelu" else "tanh"
        self.norm = LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.decoder = nn.Linear(c.d_model, c.vocab_size)

    @classmethod
    def tied_to(cls, bert: "Bert") -> "MaskedLMHead":
        """A newly initialised head for ``bert``, its output matrix the token embedding when the
        config ties them (one matrix reads tokens in and predicts them)."""
        head = cls(bert.config)
        init_bert_weights(head)
        if bert.config.tie_embeddings:
            head.decoder.weight = bert.tok_emb.weight
        return head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to logits ``(B, T, vocab_size)``."""
        h = self.norm(F.gelu(self.dense(hidden), approximate=self.approximate))  # (B, T, d)
        return self.decoder(h)  # (B, T, vocab_size)


class BertForMaskedLM(nn.Module):
    """The encoder (without pooler) and the masked-language-modelling head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=False)
        self.mlm = MaskedLMHead.tied_to(self.bert)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token logits ``(B, T, vocab_size)`` at every position (the loss reads the masked
        ones); the arguments are :meth:`Bert.forward`'s."""
        hidden = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )  # (B, T, d_model)
        return self.mlm(hidden)  # (B, T, vocab_size)


class PreTrainingLogits(NamedTuple):
    """What :class:`BertForPreTraining` predicts."""

    mlm: torch.Tensor
    """Token logits ``(B, T, vocab_size)``."""
    nsp: torch.Tensor
    """Next-sentence logits ``(B, 2)``: index 0 "B follows A", index 1 "B is random"."""


class BertForPreTraining(nn.Module):
    """The encoder with both pretraining heads: masked LM on every token, next-sentence
    prediction (a linear layer to 2 classes) on the pooled ``[CLS]`` state.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=True)
        self.mlm = MaskedLMHead.tied_to(self.bert)
        self.nsp = nn.Linear(config.d_model, 2)
        init_bert_weights(self.nsp)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> PreTrainingLogits:
        """MLM logits ``(B, T, vocab_size)`` and NSP logits ``(B, 2)``; the arguments are
        :meth:`Bert.forward`'s."""
        hidden = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )  # (B, T, d_model)
        return PreTrainingLogits(mlm=self.mlm(hidden), nsp=self.nsp(self.bert.pool(hidden)))


# --8<-- [end:bert]

INIT_STD = 0.02
"""Standard deviation of BERT's normal initialisation (``initializer_range``)."""


def init_bert_weights(module: nn.Module) -> None:
    """BERT's initialisation, in place: linear and embedding weights from ``N(0, 0.02^2)``,
    biases zero, the padding token's embedding zero (LayerNorms start at 1 and 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()


def _check_inputs(
    config: BertConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> None:
    """Check that every input fits ``config``: a clear error here instead of an index error deep
    inside an embedding lookup."""
    if input_ids.dim() != 2:
        raise ConfigError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    shape = tuple(input_ids.shape)  # (B, T)
    seq_len = shape[1]
    if seq_len > config.max_seq_len:
        raise ConfigError(
            f"sequence of {seq_len} tokens > max_seq_len {config.max_seq_len}: truncate the input"
        )
    _check_range("input_ids", input_ids, config.vocab_size, "vocab_size")
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ConfigError(
                f"{name} must have the shape of input_ids {shape}, got {tuple(tensor.shape)}"
            )
    if token_type_ids is not None:
        _check_range("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size")
    if position_ids is not None:
        if position_ids.dim() != 2 or position_ids.shape[1] != seq_len:
            raise ConfigError(
                f"position_ids must be (batch or 1, {seq_len}), got {tuple(position_ids.shape)}"
            )
        _check_range("position_ids", position_ids, config.max_seq_len, "max_seq_len")


def _check_range(name: str, ids: torch.Tensor, size: int, field: str) -> None:
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ConfigError(f"{name} must lie in 0..{size - 1} ({field} {size}), got {bad}")


def parameter_counts(config: BertConfig) -> dict[str, int]:
    """Parameters of the encoder (:class:`Bert` with its pooler, Hugging Face's ``BertModel``)
    by component: embeddings (tokens, positions, segments), attention, mlp, norms, head (the
    pooler, the encoder's one layer above the blocks), total.

    >>> parameter_counts(BertConfig.from_name("bert-base"))["total"]
    109482240
    >>> parameter_counts(BertConfig.from_name("minilm-l6"))["total"]
    22713216
    """
    c = config
    assert c.d_ff is not None
    d, L = c.d_model, c.n_layers
    embeddings = (c.vocab_size + c.max_seq_len + c.type_vocab_size) * d
    attention = L * 4 * (d * d + d)  # query, key, value, output, with biases
    mlp = L * (d * c.d_ff + c.d_ff + c.d_ff * d + d)  # up + down
    norms = (2 * L + 1) * 2 * d  # two per block and one on the embeddings, weight + bias
    head = d * d + d  # the pooler
    total = embeddings + attention + mlp + norms + head
    return dict(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, head=head, total=total
    )
