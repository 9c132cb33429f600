"""The Vision Transformer (ViT): an image cut into patches, read by a BERT-like encoder.

A ViT is a transformer encoder that reads an image as a sequence. The image ``(C, H, W)`` is cut
into ``N = (H / p)(W / p)`` patches of ``p x p`` pixels, each mapped linearly to a ``d``-vector
(:class:`~groundwork.nn.patches.PatchEmbedding`); a learned ``[CLS]`` vector is put in front,
a learned position vector added to each of the ``1 + N`` tokens, and ``n_layers`` pre-LN blocks
(every token attends to every token; exact GELU; biases everywhere) process them. A final
LayerNorm, and the ``[CLS]`` state is the image's summary: a linear classifier reads it. Nothing
in the encoder knows that the tokens were pixels: the only image-specific pieces are the patch
embedding and the 2-D grid of positions, which :func:`~groundwork.nn.patches.interpolate_positions`
stretches to another resolution.

Read top to bottom: the config and its presets, the embeddings (:meth:`ViT.embed`), the encoder
(:class:`ViT`, Hugging Face's ``ViTModel``, with the attention maps it computes), then the
classifier (:class:`ViTForImageClassification`) and the parameter counts.

References:
    * Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
      Recognition at Scale" (the model, §3.1; the ``vit-base-patch16-224`` preset, Table 1;
      fine-tuning at a higher resolution with 2-D interpolated positions, §3.2).
    * Devlin et al. 2019 (BERT: the ``[CLS]`` token, the exact GELU MLP reused here).

Parameter names differ from Hugging Face's; :mod:`groundwork.models.vit_hf` holds the key map.
Chapter 20 of the docs.
"""

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.bert import BertMLP, HiddenAct
from groundwork.models.config import check_choice, check_divides, check_positive, preset
from groundwork.nn import (
    Attention,
    AttentionImpl,
    LayerNorm,
    PatchEmbedding,
    TransformerBlock,
    interpolate_positions,
)


@dataclass(kw_only=True)
class ViTConfig:
    """Shape and options of a Vision Transformer."""

    image_size: int = 224
    """Side of the square images it is trained on, in pixels."""
    patch_size: int = 16
    """Side of a square patch, in pixels; must divide ``image_size``."""
    n_channels: int = 3
    """Channels of the input images (3 for RGB, 1 for grey levels)."""
    d_model: int = 768
    """Width of the residual stream (``hidden_size``)."""
    n_layers: int = 12
    """Number of encoder blocks."""
    n_heads: int = 12
    """Attention heads per block; must divide ``d_model``."""
    d_ff: int | None = None
    """Hidden size of the MLP (``intermediate_size``); ``None`` means ``4 * d_model``."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (Hugging Face's ViT: 1e-12)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    hidden_act: HiddenAct = "gelu"
    """The MLP's activation: ``"gelu"`` (exact, ViT) or ``"gelu_tanh"``."""
    n_classes: int = 1000
    """Classes of the classifier head (ImageNet-1k: 1000)."""
    attn_impl: AttentionImpl = "sdpa"
    """``"sdpa"`` (fused kernel) or ``"math"`` (written out)."""

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        check_positive(
            self,
            "image_size",
            "patch_size",
            "n_channels",
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
            "n_classes",
        )
        check_divides(self, "image_size", "patch_size")
        check_divides(self, "d_model", "n_heads")
        check_choice(self, "hidden_act", ["gelu", "gelu_tanh"])
        check_choice(self, "attn_impl", ["math", "sdpa"])
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    @property
    def grid(self) -> int:
        """Patches along each side of a training image (``image_size // patch_size``)."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """Patches in a training image: ``grid ** 2`` (the sequence is one longer, ``[CLS]``)."""
        return self.grid**2

    @property
    def max_seq_len(self) -> int:
        """Tokens the encoder reads at ``image_size``: ``1 + n_patches`` (``[CLS]`` and the
        patches; the sequence length ``groundwork model info`` counts attention FLOPs with)."""
        return 1 + self.n_patches

    @property
    def d_head(self) -> int:
        """Size of one attention head."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ViTConfig":
        """A named preset (``"vit-base-patch16-224"``, ``"tiny"``, ``"digits"``), optionally with
        fields overridden."""
        return cls(**{**preset(VIT_PRESETS, name, "ViT"), **overrides})


VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit-base-patch16-224": dict(
        image_size=224,
        patch_size=16,
        n_channels=3,
        d_model=768,
        n_layers=12,
        n_heads=12,
        d_ff=3072,
        n_classes=1000,
    ),
    "tiny": dict(
        image_size=24,
        patch_size=6,
        n_channels=3,
        d_model=48,
        n_layers=2,
        n_heads=3,
        d_ff=96,
        n_classes=10,
    ),
    "digits": dict(
        image_size=8,
        patch_size=2,
        n_channels=1,
        d_model=64,
        n_layers=4,
        n_heads=4,
        d_ff=128,
        n_classes=10,
        dropout=0.1,
    ),
}
"""Named configs: ViT-Base/16 at 224 pixels (Dosovitskiy et al. 2021, Table 1; the shape of
google/vit-base-patch16-224), a CPU-sized one for tests, and one for 8x8 grey digits (16 patches
of 2x2 pixels)."""


# --8<-- [start:vit]
class ViT(nn.Module):
    """The ViT encoder (Hugging Face's ``ViTModel``): patch embedding, ``[CLS]``, learned
    positions, ``n_layers`` pre-LN blocks attending in both directions, a final LayerNorm and
    (optionally) the pooler on ``[CLS]``.

    Args:
        config: The model's shape and options.
        pooler: Build the pooler (Hugging Face's ``add_pooling_layer``; the classifier has none).
    """

    def __init__(self, config: ViTConfig, *, pooler: bool = True) -> None:
        super().__init__()
        self.config = c = config
        assert c.d_ff is not None
        self.patch_emb = PatchEmbedding(c.n_channels, c.patch_size, c.d_model, bias=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model))  # (1, 1, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, 1 + c.n_patches, c.d_model))  # (1, 1 + N, d)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                Attention(
                    c.d_model,
                    c.n_heads,
                    bias=True,
                    causal=False,  # every patch sees every patch
                    impl=c.attn_impl,
                    dropout=c.dropout,
                ),
                BertMLP(c.d_model, c.d_ff, hidden_act=c.hidden_act, dropout=c.dropout),
                LayerNorm(c.d_model, eps=c.layer_norm_eps),
                LayerNorm(c.d_model, eps=c.layer_norm_eps),
                norm_position="pre",  # x = x + sublayer(norm(x)), then a final norm
            )
            for _ in range(c.n_layers)
        )
        self.norm = LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.pooler = nn.Linear(c.d_model, c.d_model) if pooler else None
        init_vit_weights(self)

    def embed(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """The tokens the first block reads: ``[CLS]`` then the patches in raster order, each
        plus its position, ``(B, C, H, W) -> (B, 1 + N, d_model)``; the arguments are
        :meth:`forward`'s."""
        grid = _check_pixels(self.config, pixel_values, interpolate_pos_encoding)
        pixel_values = pixel_values.to(self.patch_emb.proj.weight.dtype)
        patches = self.patch_emb(pixel_values)  # (B, N, d)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, d)
        x = torch.cat([cls, patches], dim=1)  # (B, 1 + N, d)
        positions: torch.Tensor = self.pos_emb  # (1, 1 + N, d): the training grid
        if interpolate_pos_encoding:
            positions = interpolate_positions(self.pos_emb[0], grid).unsqueeze(0)  # (1, 1+N', d)
        return self.drop(x + positions)

    def forward(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """The hidden state of every token after the final LayerNorm.

        Args:
            pixel_values: Images ``(B, C, H, W)`` (normalised as in training).
            interpolate_pos_encoding: Accept images of another size (sides multiples of
                ``patch_size``): the learned positions are resized bicubically to their grid.

        Returns:
            Hidden states ``(B, 1 + N, d_model)``: ``[CLS]`` first, then the ``N`` patches.

        Raises:
            ConfigError: The images have the wrong number of dimensions or channels, or another
                size (without ``interpolate_pos_encoding``), or sides that are not multiples of
                ``patch_size``.
        """
        x = self.embed(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        for block in self.blocks:
            x = block(x)  # (B, 1 + N, d)
        return self.norm(x)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled output: ``tanh(W h_[CLS] + b)``, ``(B, 1 + N, d) -> (B, d)``.

        Raises:
            ConfigError: The model was built without a pooler.
        """
        if self.pooler is None:
            raise ConfigError("this ViT encoder has no pooler: build it with pooler=True")
        return torch.tanh(self.pooler(hidden[:, 0]))  # (B, d)

    def attention_maps(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> list[torch.Tensor]:
        """Where every token looks: per block, the attention probabilities ``(B, H, 1 + N,
        1 + N)`` (row ``i``: how query token ``i`` shares its attention among the keys; row 0
        is ``[CLS]``). Computed again from each block's input, so call it in eval mode (they
        are the probabilities before attention dropout); the arguments are :meth:`forward`'s.
        """
        x = self.embed(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        maps = []
        for block in self.blocks:
            block = cast(TransformerBlock, block)
            maps.append(attention_probs(cast(Attention, block.attn), block.ln_1(x)))
            x = block(x)  # (B, 1 + N, d)
        return maps


# --8<-- [end:vit]


# --8<-- [start:attention_probs]
def attention_probs(attn: Attention, h: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d_head))`` of one attention layer on its (normalised) input
    ``h`` ``(B, T, d)``: ``(B, H, T, T)``, each row summing to 1 (no mask: an encoder)."""
    B, T, _ = h.shape
    q = attn.q_proj(h).view(B, T, attn.n_heads, attn.d_head).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(h).view(B, T, attn.n_heads, attn.d_head).transpose(1, 2)  # (B, H, T, D)
    scores = (q @ k.transpose(-2, -1)) * attn.d_head**-0.5  # (B, H, T, T)
    return torch.softmax(scores.float(), dim=-1).to(h.dtype)


# --8<-- [end:attention_probs]


# --8<-- [start:classifier]
class ViTForImageClassification(nn.Module):
    """The encoder (without pooler) and a linear classifier on the final ``[CLS]`` state.

    Args:
        config: The model's shape and options (``n_classes`` classes).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.vit = ViT(config, pooler=False)
        self.classifier = nn.Linear(config.d_model, config.n_classes)
        init_vit_weights(self.classifier)

    def forward(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Class logits ``(B, n_classes)``; the arguments are :meth:`ViT.forward`'s."""
        hidden = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.classifier(hidden[:, 0])  # (B, n_classes), from [CLS]


# --8<-- [end:classifier]

INIT_STD = 0.02
"""Standard deviation of ViT's truncated normal initialisation (``initializer_range``)."""


def init_vit_weights(module: nn.Module) -> None:
    """ViT's initialisation, in place: linear and patch-embedding weights, ``[CLS]`` and the
    positions from a truncated ``N(0, 0.02^2)``, biases zero (LayerNorms start at 1 and 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, ViT):
            nn.init.trunc_normal_(m.cls_token, mean=0.0, std=INIT_STD)
            nn.init.trunc_normal_(m.pos_emb, mean=0.0, std=INIT_STD)


def _check_pixels(
    config: ViTConfig, pixel_values: torch.Tensor, interpolate_pos_encoding: bool
) -> tuple[int, int]:
    """The patch grid ``(rows, columns)`` of ``pixel_values``, or a clear error here instead of
    a shape error deep inside the convolution or the position sum."""
    if pixel_values.dim() != 4:
        raise ConfigError(
            "pixel_values must be (batch, channels, height, width), "
            f"got shape {tuple(pixel_values.shape)}"
        )
    _, channels, height, width = pixel_values.shape
    if channels != config.n_channels:
        raise ConfigError(
            f"pixel_values have {channels} channels, the model reads {config.n_channels} "
            "(n_channels)"
        )
    p, side = config.patch_size, config.image_size
    if height % p or width % p:
        raise ConfigError(
            f"an image of {height}x{width} pixels is not cut evenly into {p}x{p} patches "
            f"(patch_size {p}): give sides that are multiples of {p}"
        )
    if not interpolate_pos_encoding and (height, width) != (side, side):
        raise ConfigError(
            f"expected images of {side}x{side} pixels (image_size {side}), got "
            f"{height}x{width}: resize them, or pass interpolate_pos_encoding=True to resize "
            "the learned positions to their patch grid"
        )
    return height // p, width // p


def parameter_counts(config: ViTConfig) -> dict[str, int]:
    """Parameters of the encoder (:class:`ViT` with its pooler, Hugging Face's ``ViTModel``) by
    component: embeddings (patch projection, ``[CLS]``, positions), attention, mlp, norms, head
    (the pooler), total.

    >>> parameter_counts(ViTConfig.from_name("vit-base-patch16-224"))["total"]
    86389248
    """
    c = config
    assert c.d_ff is not None
    d, L = c.d_model, c.n_layers
    patch = c.n_channels * c.patch_size**2 * d + d  # the convolution, with its bias
    embeddings = patch + d + (1 + c.n_patches) * d  # + [CLS] + positions
    attention = L * 4 * (d * d + d)  # query, key, value, output, with biases
    mlp = L * (d * c.d_ff + c.d_ff + c.d_ff * d + d)  # up + down
    norms = (2 * L + 1) * 2 * d  # two per block and the final one, weight + bias
    head = d * d + d  # the pooler
    total = embeddings + attention + mlp + norms + head
    return dict(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, head=head, total=total
    )
