"""CLIP: an image encoder and a text encoder trained so that matching pairs point the same way.

CLIP learns from (image, caption) pairs without labels. A batch of ``B`` pairs gives ``B`` image
vectors and ``B`` text vectors, projected into one space and normalised to unit length; their
``B x B`` matrix of cosine similarities, scaled by a learned temperature, is read as ``B``
classification problems in each direction: which of the captions belongs to this image, and
which of the images to this caption. The right answers lie on the diagonal, and the loss is the
mean of the two cross-entropies (the symmetric InfoNCE loss). Once trained, a class name written
as a caption ("a photo of a dog") is a classifier: zero-shot classification.

Read top to bottom: the config and its presets, the vision tower (:class:`CLIPVisionEncoder`, a
ViT with a LayerNorm before the blocks and one on the pooled ``[CLS]`` state), the text tower
(:class:`CLIPTextEncoder`, a causal transformer whose text vector is the final state of the
end-of-text token), the joint model (:class:`CLIP`: projections and temperature), then the loss
(:func:`clip_loss`).

References:
    * Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
      Supervision" (the model, the loss, the temperature clamp at 100; the ViT-B/32 preset).
    * van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"
      (the InfoNCE loss).
    * Dosovitskiy et al. 2021 (ViT: patches as tokens, see :mod:`groundwork.nn.patches`).

Parameter names differ from Hugging Face's ``CLIPModel``; :mod:`groundwork.models.clip_hf` holds
the key map. Chapter 20 of the docs.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_choice, check_divides, check_positive, preset
from groundwork.nn import (
    GELUMLP,
    Attention,
    LayerNorm,
    PatchEmbedding,
    TransformerBlock,
    build_attention_mask,
    interpolate_positions,
)
from groundwork.nn.patches import check_image_grid

HiddenAct = Literal["quick_gelu", "gelu"]
"""``"quick_gelu"``: ``x sigmoid(1.702 x)`` (OpenAI's CLIP); ``"gelu"``: the exact ``x Φ(x)``."""

MAX_LOGIT_SCALE = 100.0
"""The largest temperature factor ``exp(logit_scale)`` (Radford et al. 2021, §2.5)."""


@dataclass(kw_only=True)
class CLIPConfig:
    """Shape and options of a CLIP model: both towers and the joint space, in one flat record
    (one YAML section)."""

    image_size: int = 224
    """Side of the square training images, in pixels (the learned position grid's)."""
    patch_size: int = 32
    """Side of a square patch; must divide ``image_size``."""
    n_channels: int = 3
    """Channels of the input images (3 for RGB, 1 for grey levels)."""
    vision_d_model: int = 768
    """Width of the vision tower's residual stream."""
    vision_n_layers: int = 12
    """Number of vision blocks."""
    vision_n_heads: int = 12
    """Attention heads per vision block; must divide ``vision_d_model``."""
    vision_d_ff: int = 3072
    """Hidden size of the vision MLPs."""
    vocab_size: int = 49408
    """Number of token ids (OpenAI CLIP's byte-level BPE: 49408)."""
    max_seq_len: int = 77
    """Longest text, in tokens; the number of learned text positions."""
    text_d_model: int = 512
    """Width of the text tower's residual stream."""
    text_n_layers: int = 12
    """Number of text blocks."""
    text_n_heads: int = 8
    """Attention heads per text block; must divide ``text_d_model``."""
    text_d_ff: int = 2048
    """Hidden size of the text MLPs."""
    projection_dim: int = 512
    """Size of the joint embedding space both towers project into."""
    layer_norm_eps: float = 1e-5
    """LayerNorm epsilon (both towers)."""
    hidden_act: HiddenAct = "quick_gelu"
    """The MLPs' activation: ``"quick_gelu"`` (OpenAI's CLIP) or ``"gelu"`` (exact)."""
    logit_scale_init: float = 2.6592
    """Initial ``logit_scale``, the log of the inverse temperature: ``log(1 / 0.07)``."""
    eos_id: int = 49407
    """The end-of-text token: the final state at its first occurrence is the text's vector."""
    attn_impl: Literal["math", "sdpa"] = "sdpa"
    """``"sdpa"`` (fused kernel) or ``"math"`` (written out)."""

    def __post_init__(self) -> None:
        # fmt: off
        check_positive(
            self, "image_size", "patch_size", "n_channels", "vocab_size", "max_seq_len",
            "vision_d_model", "vision_n_layers", "vision_n_heads", "vision_d_ff",
            "text_d_model", "text_n_layers", "text_n_heads", "text_d_ff", "projection_dim",
        )
        # fmt: on
        check_divides(self, "image_size", "patch_size")
        check_divides(self, "vision_d_model", "vision_n_heads")
        check_divides(self, "text_d_model", "text_n_heads")
        check_choice(self, "hidden_act", ["quick_gelu", "gelu"])
        check_choice(self, "attn_impl", ["math", "sdpa"])
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if not math.isfinite(self.logit_scale_init):
            raise ConfigError(f"logit_scale_init must be finite, got {self.logit_scale_init!r}")
        if not isinstance(self.eos_id, int) or not 0 <= self.eos_id < self.vocab_size:
            raise ConfigError(
                f"eos_id must be a token id in 0..{self.vocab_size - 1}, got {self.eos_id!r}"
            )

    @property
    def n_patches(self) -> int:
        """Patches of a training image: ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "CLIPConfig":
        """A named preset (``"clip-vit-base-patch32"``, ``"tiny"``, ``"digits"``), optionally
        with fields overridden."""
        return cls(**{**preset(CLIP_PRESETS, name, "CLIP"), **overrides})


# fmt: off
CLIP_PRESETS: dict[str, dict[str, Any]] = {
    "clip-vit-base-patch32": {},  # the defaults
    "tiny": dict(
        image_size=24, patch_size=6, n_channels=3,
        vision_d_model=48, vision_n_layers=2, vision_n_heads=3, vision_d_ff=97,
        vocab_size=99, max_seq_len=16,
        text_d_model=36, text_n_layers=2, text_n_heads=3, text_d_ff=71,
        projection_dim=32, eos_id=98,
    ),
    "digits": dict(
        image_size=8, patch_size=2, n_channels=1,
        vision_d_model=64, vision_n_layers=4, vision_n_heads=4, vision_d_ff=128,
        vocab_size=64, max_seq_len=16,  # the vocabulary size is the tokenizer's
        text_d_model=64, text_n_layers=2, text_n_heads=4, text_d_ff=128,
        projection_dim=32, eos_id=1,
    ),
}
"""Named configs: the shape of OpenAI's ViT-B/32 CLIP (``openai/clip-vit-base-patch32``), an odd
CPU-sized one for tests, and one for 8x8 grey digit images with short captions."""
# fmt: on


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI's cheap GELU: ``x sigmoid(1.702 x)`` (within 0.02 of ``x Φ(x)``).

    >>> round(float(quick_gelu(torch.tensor(1.0))), 4)
    0.8458
    """
    return x * torch.sigmoid(1.702 * x)


class CLIPMLP(GELUMLP):
    """The position-wise MLP with CLIP's activation: ``down_proj(act(up_proj(x)))``."""

    def __init__(self, d_model: int, d_ff: int, *, hidden_act: HiddenAct) -> None:
        super().__init__(d_model, d_ff)
        self.hidden_act = hidden_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, T, d_model)`` to ``(B, T, d_model)``."""
        h = self.up_proj(x)  # (B, T, d_ff)
        h = quick_gelu(h) if self.hidden_act == "quick_gelu" else F.gelu(h)
        return self.down_proj(h)


def _blocks(c: CLIPConfig, tower: str, *, causal: bool) -> nn.ModuleList:
    """The pre-LN blocks of ``tower`` (``"vision"`` or ``"text"``), shaped by its fields."""
    d, n_heads, d_ff = (getattr(c, f"{tower}_{f}") for f in ("d_model", "n_heads", "d_ff"))
    return nn.ModuleList(
        TransformerBlock(
            Attention(d, n_heads, bias=True, causal=causal, impl=c.attn_impl),
            CLIPMLP(d, d_ff, hidden_act=c.hidden_act),
            LayerNorm(d, eps=c.layer_norm_eps),
            LayerNorm(d, eps=c.layer_norm_eps),
            norm_position="pre",
        )
        for _ in range(getattr(c, f"{tower}_n_layers"))
    )


class CLIPVisionEncoder(nn.Module):
    """CLIP's image tower (Hugging Face's ``CLIPVisionTransformer``): a ViT whose patch map has no
    bias, with a LayerNorm before the first block and one on the pooled ``[CLS]`` state.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.vision_d_model
        self.class_emb = nn.Parameter(torch.zeros(d))  # the [CLS] token's input vector
        self.patch_emb = PatchEmbedding(c.n_channels, c.patch_size, d, bias=False)
        self.pos_emb = nn.Embedding(1 + c.n_patches, d)
        self.pre_norm = LayerNorm(d, eps=c.layer_norm_eps)
        self.blocks = _blocks(c, "vision", causal=False)  # every patch sees every patch
        self.post_norm = LayerNorm(d, eps=c.layer_norm_eps)
        _init_tower(self, d, c.vision_n_layers)
        nn.init.normal_(self.class_emb, std=d**-0.5)

    def forward(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images ``(B, C, H, W)``.

        Args:
            pixel_values: Normalised images; ``H = W = image_size`` unless
                ``interpolate_pos_encoding``.
            interpolate_pos_encoding: Accept any size the patches tile, the learned position
                grid resized bicubically (:func:`~groundwork.nn.interpolate_positions`).

        Returns:
            The last block's states ``(B, 1 + N, d)`` (not normalised, as Hugging Face's
            ``last_hidden_state``) and the pooled ``post_norm`` of the ``[CLS]`` state ``(B, d)``.

        Raises:
            ConfigError: The images have the wrong shape, channels or size.
        """
        c = self.config
        if pixel_values.dim() != 4 or pixel_values.shape[1] != c.n_channels:
            raise ConfigError(
                f"pixel_values must be (batch, {c.n_channels} channels, height, width), got "
                f"shape {tuple(pixel_values.shape)}"
            )
        batch, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height, width) != (c.image_size, c.image_size):
            raise ConfigError(
                f"images of {height}x{width} pixels do not match image_size {c.image_size}: "
                "resize them, or pass interpolate_pos_encoding=True"
            )
        try:
            grid = check_image_grid(height, width, c.patch_size)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        patches = self.patch_emb(pixel_values.to(self.class_emb.dtype))  # (B, N, d)
        cls = self.class_emb.expand(batch, 1, -1)  # (B, 1, d)
        positions = interpolate_positions(self.pos_emb.weight, grid)  # (1 + N, d)
        x = torch.cat([cls, patches], dim=1) + positions  # (B, 1 + N, d)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)  # (B, 1 + N, d): every patch sees every patch
        return x, self.post_norm(x[:, 0])  # (B, 1 + N, d), (B, d)


class CLIPTextEncoder(nn.Module):
    """CLIP's text tower (Hugging Face's ``CLIPTextTransformer``): token + learned position
    embeddings, causal pre-LN blocks, a final LayerNorm; the text's vector is the final state of
    its end-of-text token.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.text_d_model
        self.tok_emb = nn.Embedding(c.vocab_size, d)
        self.pos_emb = nn.Embedding(c.max_seq_len, d)
        self.blocks = _blocks(c, "text", causal=True)
        self.final_norm = LayerNorm(d, eps=c.layer_norm_eps)
        _init_tower(self, d, c.text_n_layers)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode token ids ``(B, T)``, each row holding ``eos_id`` (the tokenizer appends it).

        Args:
            input_ids: Token ids ``(B, T)``.
            attention_mask: ``(B, T)``, 1 for tokens and 0 for padding; ``None``: no padding.

        Returns:
            The final-normed states ``(B, T, d)`` and the pooled state ``(B, d)`` at each row's
            first ``eos_id``.

        Raises:
            ConfigError: Wrong shape, too long, a token id outside the vocabulary, or a row
                without the end-of-text token.
        """
        c = self.config
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must be (batch, seq_len), got {tuple(input_ids.shape)}")
        shape, vocab = tuple(input_ids.shape), c.vocab_size
        seq_len = shape[1]
        if seq_len > c.max_seq_len:
            raise ConfigError(
                f"text of {seq_len} tokens > max_seq_len {c.max_seq_len}: truncate it"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != shape:
            raise ConfigError(
                f"attention_mask must have the shape of input_ids {shape}, got "
                f"{tuple(attention_mask.shape)}"
            )
        if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < vocab:
            raise ConfigError(f"input_ids must lie in 0..{vocab - 1} (vocab_size {vocab})")
        positions = torch.arange(seq_len, device=input_ids.device)  # (T,)
        x = self.tok_emb(input_ids) + self.pos_emb(positions)  # (B, T, d)
        mask = build_attention_mask(
            attention_mask, seq_len, seq_len, dtype=x.dtype, device=x.device
        )
        for block in self.blocks:
            x = block(x, mask=mask)  # (B, T, d); mask None: causal
        x = self.final_norm(x)
        return x, self.pool(x, input_ids)

    # --8<-- [start:eot_pooling]
    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The state ``(B, d)`` at each row's first end-of-text token. Under the causal mask it
        is the one state that has read the whole text (and nothing after it, e.g. padding).

        Raises:
            ConfigError: A row holds no ``eos_id``.
        """
        is_eos = input_ids == self.config.eos_id  # (B, T)
        if not bool(is_eos.any(dim=1).all()):
            raise ConfigError(
                f"each text must end with the end-of-text token (eos_id {self.config.eos_id}): "
                f"row {int((~is_eos.any(dim=1)).nonzero()[0])} has none"
            )
        first = is_eos.int().argmax(dim=1)  # (B,): argmax returns the first maximum
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, first]  # (B, d)

    # --8<-- [end:eot_pooling]


class CLIPOutput(NamedTuple):
    """What :class:`CLIP` computes for a batch of images and a batch of texts."""

    logits_per_image: torch.Tensor
    """``(B_i, B_t)``: scaled cosine similarity of every image with every text."""
    logits_per_text: torch.Tensor
    """``(B_t, B_i)``: its transpose."""
    image_embeds: torch.Tensor
    """``(B_i, projection_dim)``, unit length."""
    text_embeds: torch.Tensor
    """``(B_t, projection_dim)``, unit length."""


class CLIP(nn.Module):
    """Both towers, their linear projections (no bias) into the joint space, and the learned
    temperature (Hugging Face's ``CLIPModel``).

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        self.vision = CLIPVisionEncoder(c)
        self.text = CLIPTextEncoder(c)
        self.visual_projection = nn.Linear(c.vision_d_model, c.projection_dim, bias=False)
        self.text_projection = nn.Linear(c.text_d_model, c.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))  # 0-dim
        nn.init.normal_(self.visual_projection.weight, std=c.vision_d_model**-0.5)
        nn.init.normal_(self.text_projection.weight, std=c.text_d_model**-0.5)

    def encode_image(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Image features ``(B, projection_dim)``, not normalised (Hugging Face's
        ``get_image_features``); arguments as :meth:`CLIPVisionEncoder.forward`'s."""
        _, pooled = self.vision(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.visual_projection(pooled)  # (B, P)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Text features ``(B, projection_dim)``, not normalised (Hugging Face's
        ``get_text_features``); arguments as :meth:`CLIPTextEncoder.forward`'s."""
        _, pooled = self.text(input_ids, attention_mask)
        return self.text_projection(pooled)  # (B, P)

    # --8<-- [start:similarity]
    def temperature_scale(self) -> torch.Tensor:
        """The factor ``exp(logit_scale)`` the cosines are multiplied by (the inverse of the
        softmax temperature), at most 100: Radford et al. clip it there so that training cannot
        sharpen the softmax without bound. At its initial value (14.3) nothing is clipped, and the
        logits equal Hugging Face's, which does not clip."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        interpolate_pos_encoding: bool = False,
    ) -> CLIPOutput:
        """Every image against every text: unit-length embeddings and their scaled cosines.

        Args:
            pixel_values: Images ``(B_i, C, H, W)``.
            input_ids: Texts ``(B_t, T)``, each holding ``eos_id``.
            attention_mask: ``(B_t, T)``, 1 for tokens and 0 for padding.
            interpolate_pos_encoding: See :meth:`CLIPVisionEncoder.forward`.
        """
        image = self.encode_image(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        text = self.encode_text(input_ids, attention_mask)
        image = image / image.norm(dim=-1, keepdim=True)  # (B_i, P), unit length
        text = text / text.norm(dim=-1, keepdim=True)  # (B_t, P)
        logits_per_text = self.temperature_scale() * (text @ image.t())  # (B_t, B_i)
        return CLIPOutput(
            logits_per_image=logits_per_text.t(),  # (B_i, B_t)
            logits_per_text=logits_per_text,
            image_embeds=image,
            text_embeds=text,
        )

    # --8<-- [end:similarity]


# --8<-- [start:clip_loss]
def clip_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE loss of a batch of ``B`` matching pairs, ``(B, B) -> ()``.

    Row ``i`` of ``logits_per_text`` scores text ``i`` against every image: a ``B``-way
    classification whose answer is image ``i``; column ``j`` scores image ``j`` against every
    text, whose answer is text ``j``. The loss is the mean of the two cross-entropies (Hugging
    Face's ``return_loss=True``).

    >>> round(float(clip_loss(torch.zeros(4, 4))), 4)  # no preference: log 4
    1.3863
    """
    targets = torch.arange(len(logits_per_text), device=logits_per_text.device)  # the diagonal
    text_loss = F.cross_entropy(logits_per_text, targets)  # which image for each text
    image_loss = F.cross_entropy(logits_per_text.t(), targets)  # which text for each image
    return (text_loss + image_loss) / 2


# --8<-- [end:clip_loss]


def _init_tower(tower: nn.Module, d: int, n_layers: int) -> None:
    """Hugging Face CLIP's initialisation of one tower, in place: embeddings from ``N(0,
    0.02^2)``, attention inputs and the MLP's output with std ``d^-1/2 (2 L)^-1/2``, the attention
    output ``d^-1/2``, the MLP's input ``(2 d)^-1/2``; biases 0 (LayerNorms start at 1 and 0)."""
    deep = d**-0.5 * (2 * n_layers) ** -0.5
    for name, m in tower.named_modules():
        if isinstance(m, nn.Embedding | nn.Conv2d):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Linear):
            last = name.rsplit(".", 1)[-1]
            std = {"o_proj": d**-0.5, "up_proj": (2 * d) ** -0.5}.get(last, deep)
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def parameter_counts(config: CLIPConfig) -> dict[str, int]:
    """Parameters of :class:`CLIP` (Hugging Face's ``CLIPModel``) by component: the vision
    tower, the text tower, the two projections, the temperature, total.

    >>> parameter_counts(CLIPConfig.from_name("clip-vit-base-patch32"))["total"]
    151277313
    """
    c = config

    def blocks(d: int, d_ff: int, n_layers: int) -> int:
        attention = 4 * (d * d + d)  # query, key, value, output, with biases
        mlp = d * d_ff + d_ff + d_ff * d + d
        return n_layers * (attention + mlp + 2 * 2 * d)  # two LayerNorms per block

    vd, td = c.vision_d_model, c.text_d_model
    vision = (
        vd  # the [CLS] vector
        + c.n_channels * c.patch_size**2 * vd  # the patch map, no bias
        + (1 + c.n_patches) * vd  # positions
        + 2 * 2 * vd  # pre_norm and post_norm
        + blocks(vd, c.vision_d_ff, c.vision_n_layers)
    )
    text = (
        (c.vocab_size + c.max_seq_len) * td
        + 2 * td  # final_norm
        + blocks(td, c.text_d_ff, c.text_n_layers)
    )
    projections = (vd + td) * c.projection_dim
    logit_scale = 1
    total = vision + text + projections + logit_scale
    return dict(
        vision=vision, text=text, projections=projections, logit_scale=logit_scale, total=total
    )
