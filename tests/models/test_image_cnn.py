"""ImageCNN: config validation naming the field, shapes, parameter counts, gradients, and its
registry entry."""

import doctest

import pytest
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import image_cnn, registry
from groundwork.models.image_cnn import (
    IMAGE_CNN_PRESETS,
    ImageCNN,
    ImageCNNConfig,
    parameter_counts,
)


def tiny(**overrides: object) -> ImageCNN:
    torch.manual_seed(0)
    return ImageCNN(ImageCNNConfig.from_name("tiny", **overrides))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(image_size=0), "image_size"),
        (dict(n_channels=0), "n_channels"),
        (dict(d_hidden=-1), "d_hidden"),
        (dict(n_classes=0), "n_classes"),
        (dict(channels=()), "channels"),
        (dict(channels=(8, 0)), "channels"),
        (dict(channels=(8, 8, 8, 8)), "image_size 8"),  # 8 -> 4 -> 2 -> 1 -> 0 pixels
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ImageCNNConfig(**overrides)


def test_three_stages_fit_an_8x8_image() -> None:
    config = ImageCNNConfig(channels=(4, 4, 4))
    assert config.feature_size == 1 and config.n_features == 4
    assert tiny(channels=(2, 3, 5))(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_shapes_and_odd_sizes() -> None:
    model = tiny().eval()
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    rgb = tiny(image_size=11, n_channels=3, n_classes=4)  # 11 -> 5 -> 2 (pooling floors)
    assert rgb.config.n_features == 8 * 2 * 2
    assert rgb(torch.rand(3, 3, 11, 11)).shape == (3, 4)
    assert model(torch.rand(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float32


@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 3, 8, 8), (2, 1, 7, 8), (2, 1, 8, 8, 1)])
def test_wrong_input_shape_is_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"pixel_values must have shape \(batch, 1, 8, 8\)"):
        tiny()(torch.rand(shape))


@pytest.mark.parametrize("name", sorted(IMAGE_CNN_PRESETS))
def test_parameter_counts_match_the_module(name: str) -> None:
    config = ImageCNNConfig.from_name(name)
    counts = parameter_counts(config)
    model = ImageCNN(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["convs"] == sum(p.numel() for p in model.features.parameters())
    assert counts["total"] == counts["convs"] + counts["hidden"] + counts["head"]


def test_gradients_reach_every_parameter_and_a_step_lowers_the_loss() -> None:
    model = tiny(dropout=0.0)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    losses = []
    for _ in range(5):  # plain gradient descent (torch.optim's first use costs a second)
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_dropout_only_in_training() -> None:
    model = tiny(dropout=0.5)
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_registry_entry() -> None:
    arch = registry.get("image-cnn")
    assert arch.config_cls is ImageCNNConfig and arch.model_cls is ImageCNN
    assert not arch.causal_lm and arch.hf is None
    assert arch.extra["run_kind"] == "image-classifier" and arch.extra["model_class"] == "ImageCNN"
    config = arch.config("digits", d_hidden=64)
    assert config.d_hidden == 64 and config.channels == (32, 64)
    assert registry.arch_of(config) is arch
    assert isinstance(registry.build_model(config), ImageCNN)
    as_dict = registry.config_to_dict(config)
    assert as_dict["arch"] == "image-cnn"
    as_dict["channels"] = list(as_dict["channels"])  # YAML has no tuples
    assert registry.config_from_dict(as_dict) == config
    assert "image-cnn" in registry.names(causal_lm=False)
    assert arch.parameter_counts is not None and arch.parameter_counts(config)["total"] > 0
    with pytest.raises(UnknownNameError, match="digits"):
        ImageCNNConfig.from_name("digit")


def test_docstring_examples() -> None:
    assert doctest.testmod(image_cnn).failed == 0
