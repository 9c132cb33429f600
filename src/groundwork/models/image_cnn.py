r"""A small convolutional image classifier: the baseline a Vision Transformer is measured against.

LeNet-style (LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition", whose
LeNet-5 read 32x32 handwritten digits): for each entry of ``channels`` a 3x3 convolution (zero
padding 1, so the size is kept), a ReLU and a 2x2 max-pool (halving each side); then the feature
maps are flattened into one vector, and a hidden linear layer with ReLU and dropout and a linear
head give the class logits. On 8x8 digits with ``channels=(32, 64)``: 8x8 -> 4x4 -> 2x2 maps, a
256-wide feature vector, 53,002 parameters.

Why a CNN is the baseline. A convolution builds in two assumptions about images: locality (a
filter sees a 3x3 neighbourhood; only depth widens the view) and translation equivariance (the same
filter slides everywhere, so a stroke is detected wherever it is, and pooling adds a little
invariance). A ViT (:mod:`groundwork.models.vit`) assumes neither: its patches attend to each
other from the first layer and their positions are learned, so it must learn from data what the
CNN gets for free. With little data (1,797 digits) the CNN's inductive bias wins; the ViT's
generality pays off only at scale (Dosovitskiy et al. 2021). Chapter 20, "Multimodal models".
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from groundwork.errors import ConfigError
from groundwork.models.config import check_positive, preset


@dataclass(kw_only=True)
class ImageCNNConfig:
    """Shape and options of a LeNet-style image classifier."""

    image_size: int = 8
    """Side of the square input images, in pixels."""
    n_channels: int = 1
    """Channels of the input images (1 for grey levels, 3 for RGB)."""
    channels: tuple[int, ...] = (32, 64)
    """Output channels of the convolution stages; each stage halves the image's sides, so
    ``image_size // 2 ** len(channels)`` must be at least 1."""
    d_hidden: int = 128
    """Width of the hidden linear layer between the flattened feature maps and the head."""
    n_classes: int = 10
    """Number of output classes."""
    dropout: float = 0.1
    """Dropout before the head (training only)."""

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        check_positive(self, "image_size", "n_channels", "d_hidden", "n_classes")
        if not self.channels or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in self.channels
        ):
            raise ConfigError(
                f"channels must be a non-empty list of positive integers, got {self.channels!r}"
            )
        if self.feature_size < 1:
            raise ConfigError(
                f"channels has {len(self.channels)} stages, each halving the image: an image "
                f"of image_size {self.image_size} would shrink below one pixel; use at most "
                f"{self.image_size.bit_length() - 1} stages or larger images"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def feature_size(self) -> int:
        """Side of the last feature maps: ``image_size`` halved (rounding down) per stage."""
        return self.image_size // 2 ** len(self.channels)

    @property
    def n_features(self) -> int:
        """Length of the flattened feature vector: last channels times ``feature_size ** 2``."""
        return self.channels[-1] * self.feature_size**2

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ImageCNNConfig":
        """A named preset (``"digits"``, ``"tiny"``), optionally with fields overridden."""
        return cls(**{**preset(IMAGE_CNN_PRESETS, name, "image CNN"), **overrides})


IMAGE_CNN_PRESETS: dict[str, dict[str, Any]] = {
    # 8x8 grey digits (groundwork.corpus.images): 53,002 parameters, trains in seconds on a CPU.
    "digits": dict(
        image_size=8, n_channels=1, channels=(32, 64), d_hidden=128, n_classes=10, dropout=0.1
    ),
    # For tests.
    "tiny": dict(image_size=8, n_channels=1, channels=(4, 8), d_hidden=16, n_classes=10),
}
"""Named configs of :class:`ImageCNNConfig`."""


# --8<-- [start:image_cnn]
class ImageCNN(nn.Module):
    """Convolution stages (3x3 conv, ReLU, 2x2 max-pool), then flatten, a hidden layer and a head.

    Args:
        config: The model's shape and options.
    """

    def __init__(self, config: ImageCNNConfig) -> None:
        super().__init__()
        self.config = c = config
        stages: list[nn.Module] = []
        c_in = c.n_channels
        for c_out in c.channels:
            stages += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c.n_features, c.d_hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.d_hidden, c.n_classes),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of images ``(B, n_channels, image_size, image_size)``.

        Raises:
            ConfigError: The images do not have the shape the model was built for.
        """
        c = self.config
        expected = (c.n_channels, c.image_size, c.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ConfigError(
                f"pixel_values must have shape (batch, {', '.join(map(str, expected))}) "
                f"(n_channels, image_size, image_size), got {tuple(pixel_values.shape)}"
            )
        x = pixel_values.to(next(self.parameters()).dtype)  # e.g. float64 input, float32 model
        return self.classifier(self.features(x))  # (B, n_classes)


# --8<-- [end:image_cnn]


def parameter_counts(config: ImageCNNConfig) -> dict[str, int]:
    """Parameters of :class:`ImageCNN` by component: convs (weights and biases of every stage),
    hidden (the linear layer after flattening), head, total.

    >>> parameter_counts(ImageCNNConfig.from_name("digits"))
    {'convs': 18816, 'hidden': 32896, 'head': 1290, 'total': 53002}
    """
    c = config
    convs, c_in = 0, c.n_channels
    for c_out in c.channels:
        convs += c_out * c_in * 9 + c_out
        c_in = c_out
    hidden = c.n_features * c.d_hidden + c.d_hidden
    head = c.d_hidden * c.n_classes + c.n_classes
    return dict(convs=convs, hidden=hidden, head=head, total=convs + hidden + head)
