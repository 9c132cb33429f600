"""ViT: config validation and presets, shapes, attention maps, math == SDPA, bad inputs, init,
parameter counts, the registry entry. Parity with ``transformers`` is in
tests/interop/test_hf_vit.py."""

from dataclasses import asdict
from typing import Any

import pytest
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import build_model, info, registry
from groundwork.models.vit import ViT, ViTConfig, ViTForImageClassification, parameter_counts

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)


def _images(config: ViTConfig, B: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
    H, W = size or (config.image_size, config.image_size)
    generator = torch.Generator().manual_seed(1)
    return torch.randn(B, config.n_channels, H, W, generator=generator)


def test_presets_have_the_published_sizes() -> None:
    base = ViTConfig.from_name("vit-base-patch16-224")
    assert (base.image_size, base.patch_size, base.d_model, base.n_layers, base.n_heads) == (
        224,
        16,
        768,
        12,
        12,
    )
    assert (base.d_ff, base.n_classes, base.grid, base.n_patches) == (3072, 1000, 14, 196)
    assert base == ViTConfig()  # the defaults are ViT-Base/16
    digits = ViTConfig.from_name("digits")
    assert (digits.n_channels, digits.grid, digits.n_patches, digits.dropout) == (1, 4, 16, 0.1)
    tiny = ViTConfig.from_name("tiny", d_ff=None)
    assert (tiny.d_ff, tiny.d_head, tiny.n_patches) == (192, 16, 16)


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'tiny'"):
        ViTConfig.from_name("tiyn")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(image_size=25), "image_size"),  # not a multiple of patch_size
        (dict(patch_size=0), "patch_size"),
        (dict(n_channels=0), "n_channels"),
        (dict(d_model=50), "d_model"),
        (dict(n_heads=0), "n_heads"),
        (dict(n_layers=-1), "n_layers"),
        (dict(d_ff=0), "d_ff"),
        (dict(n_classes=0), "n_classes"),
        (dict(hidden_act="relu"), "hidden_act"),
        (dict(attn_impl="flash"), "attn_impl"),
        (dict(dropout=1.0), "dropout"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ViTConfig.from_name("tiny", **overrides)


def test_shapes_pooler_and_classifier() -> None:
    torch.manual_seed(0)
    c = ViTConfig.from_name("tiny")
    images = _images(c)
    encoder = ViT(c)
    hidden = encoder(images)
    assert hidden.shape == (2, 1 + 16, 48)
    assert encoder.pool(hidden).shape == (2, 48)
    assert encoder.cls_token.shape == (1, 1, 48) and encoder.pos_emb.shape == (1, 17, 48)
    classifier = build_model(c)
    assert isinstance(classifier, ViTForImageClassification)
    assert classifier.vit.pooler is None and classifier.config is c
    assert classifier(images).shape == (2, 10)
    with pytest.raises(ConfigError, match="no pooler"):
        classifier.vit.pool(hidden)
    # Another resolution, with stretched positions: 30x36 pixels are 5x6 patches.
    assert encoder(_images(c, size=(30, 36)), interpolate_pos_encoding=True).shape == (2, 31, 48)
    torch.testing.assert_close(encoder(images, interpolate_pos_encoding=True), hidden)


def test_attention_maps_are_distributions_and_see_every_patch() -> None:
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_name("tiny", n_layers=3)).eval()
    images = _images(model.config)
    with torch.no_grad():
        maps = model.attention_maps(images)
        assert len(maps) == 3 and all(m.shape == (2, 3, 17, 17) for m in maps)
        for m in maps:
            torch.testing.assert_close(m.sum(-1), torch.ones(2, 3, 17))
            assert bool((m > 0).all())  # no mask: every token attends to every token
        # Changing the last patch changes [CLS]: attention is bidirectional.
        changed = images.clone()
        changed[:, :, -6:, -6:] += 1.0
        assert not torch.allclose(model(images)[:, 0], model(changed)[:, 0], atol=1e-4)
        wide = model.attention_maps(
            _images(model.config, size=(12, 30)), interpolate_pos_encoding=True
        )
        assert wide[0].shape == (2, 3, 11, 11)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_tanh"])
def test_math_and_sdpa_paths_agree(hidden_act: str) -> None:
    torch.manual_seed(0)
    sdpa = ViTForImageClassification(ViTConfig.from_name("tiny", hidden_act=hidden_act)).eval()
    math = ViTForImageClassification(
        ViTConfig.from_name("tiny", hidden_act=hidden_act, attn_impl="math")
    ).eval()
    math.load_state_dict(sdpa.state_dict())
    images = _images(sdpa.config)
    with torch.no_grad():
        torch.testing.assert_close(math(images), sdpa(images), **TOL)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig.from_name("digits"))
    images = _images(model.config)
    assert not torch.equal(model(images), model(images))  # dropout 0.1 in training mode
    model.eval()
    torch.testing.assert_close(model(images), model(images))


def test_init() -> None:
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_name("tiny", d_model=240, n_heads=4))
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.patch_emb.proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.pos_emb.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.cls_token.abs().sum() > 0
    assert model.blocks[0].mlp.up_proj.bias.abs().sum() == 0
    assert model.patch_emb.proj.bias is not None and model.patch_emb.proj.bias.abs().sum() == 0
    assert bool((model.norm.weight == 1).all())


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((3, 24, 24), {}, r"\(batch, channels, height, width\), got shape \(3, 24, 24\)"),
        ((1, 1, 24, 24), {}, "1 channels, the model reads 3 \\(n_channels\\)"),
        ((1, 3, 30, 30), {}, r"expected images of 24x24 pixels.*got 30x30.*interpolate_pos"),
        ((1, 3, 25, 24), {"interpolate_pos_encoding": True}, r"25x24 .*multiples of 6"),
    ],
)
def test_bad_inputs_raise_before_torch(shape: tuple, kwargs: dict, message: str) -> None:
    model = ViTForImageClassification(ViTConfig.from_name("tiny"))
    with pytest.raises(ConfigError, match=message):
        model(torch.zeros(shape), **kwargs)
    with pytest.raises(ConfigError, match=message):
        model.vit.attention_maps(torch.zeros(shape), **kwargs)


def test_parameter_counts_match_the_encoder_and_the_registry() -> None:
    for preset, overrides in [("tiny", {}), ("digits", {}), ("tiny", {"d_ff": 97, "n_layers": 3})]:
        config = ViTConfig.from_name(preset, **overrides)
        with torch.device("meta"):
            model = ViT(config)
        counts = parameter_counts(config)
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    arch = registry.get("vit")
    assert arch.causal_lm is False and arch.hf is not None
    assert arch.model_cls is ViTForImageClassification
    assert set(arch.model_classes()) == {"ViT", "ViTForImageClassification"}
    assert arch.extra["run_kind"] == "image-classifier"
    assert registry.find_preset("digits", "vit") == ViTConfig.from_name("digits")
    report = info(ViTConfig.from_name("vit-base-patch16-224"))
    assert report["architecture"] == "vit"
    assert report["parameters"]["total"] == 86_389_248  # transformers' ViTModel of ViT-Base/16
    config = ViTConfig.from_name("digits")
    assert registry.config_from_dict(registry.config_to_dict(config)) == config
    assert asdict(registry.config_from_dict(registry.config_to_dict(config))) == asdict(config)
