"""CLIP (``groundwork.models.clip``): config checks, shapes, end-of-text pooling, the loss
written out by hand, the temperature clamp, parameter counts and the registry entry."""

import dataclasses
import doctest
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import clip as clip_module
from groundwork.models import clip_hf, registry
from groundwork.models.clip import (
    CLIP,
    CLIP_PRESETS,
    CLIPConfig,
    clip_loss,
    parameter_counts,
    quick_gelu,
)

TOL = dict(rtol=1e-5, atol=1e-5)
EOS = 98  # the tiny preset's end-of-text id


def _model(**overrides: Any) -> CLIP:
    torch.manual_seed(0)
    return CLIP(CLIPConfig.from_name("tiny", **overrides)).eval()


def _texts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three texts of 9 tokens, right-padded with 0, each ending with the end-of-text id."""
    ids = torch.randint(1, EOS, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    for row, eos in enumerate((8, 5, 2)):
        ids[row, eos] = EOS
        ids[row, eos + 1 :] = 0
        mask[row, eos + 1 :] = 0
    return ids, mask


def _images(n: int = 2, size: tuple[int, int] = (24, 24)) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(2))


def test_presets_build_and_the_defaults_are_vit_b32() -> None:
    assert set(CLIP_PRESETS) == {"clip-vit-base-patch32", "tiny", "digits"}
    base = CLIPConfig.from_name("clip-vit-base-patch32")
    assert base == CLIPConfig()
    assert (base.image_size, base.patch_size, base.n_patches, base.eos_id) == (224, 32, 49, 49407)
    digits = CLIPConfig.from_name("digits", vocab_size=40)
    assert (digits.n_channels, digits.n_patches, digits.vocab_size) == (1, 16, 40)
    with pytest.raises(UnknownNameError, match="unknown CLIP preset 'tiyn'"):
        CLIPConfig.from_name("tiyn")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(patch_size=5), r"image_size \(24\) must be a multiple of patch_size \(5\)"),
        (dict(vision_n_heads=5), r"vision_d_model \(48\) must be a multiple of vision_n_heads"),
        (dict(text_n_heads=5), r"text_d_model \(36\) must be a multiple of text_n_heads"),
        (dict(projection_dim=0), "projection_dim must be a positive integer"),
        (dict(vision_d_ff=1.5), "vision_d_ff must be a positive integer"),
        (dict(hidden_act="relu"), "hidden_act must be one of"),
        (dict(attn_impl="flash"), "attn_impl must be one of"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps must be positive"),
        (dict(logit_scale_init=math.inf), "logit_scale_init must be finite"),
        (dict(eos_id=99), r"eos_id must be a token id in 0\.\.98"),
    ],
)
def test_invalid_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CLIPConfig.from_name("tiny", **overrides)


def test_shapes_and_unit_embeddings() -> None:
    model = _model()
    ids, mask = _texts()
    images = _images()
    with torch.no_grad():
        hidden, pooled = model.vision(images)
        assert hidden.shape == (2, 1 + 16, 48) and pooled.shape == (2, 48)
        text_hidden, text_pooled = model.text(ids, mask)
        assert text_hidden.shape == (3, 9, 36) and text_pooled.shape == (3, 36)
        assert model.encode_image(images).shape == (2, 32)
        assert model.encode_text(ids, mask).shape == (3, 32)
        out = model(images, ids, mask)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    scale = math.exp(2.6592)  # at init, the clamp does nothing
    cosines = out.text_embeds @ out.image_embeds.t()
    torch.testing.assert_close(out.logits_per_text, scale * cosines, **TOL)


def test_math_equals_sdpa() -> None:
    sdpa = _model(attn_impl="sdpa")
    math_model = _model(attn_impl="math")
    math_model.load_state_dict(sdpa.state_dict())
    ids, mask = _texts()
    images = _images()
    with torch.no_grad():
        for got, want in zip(math_model(images, ids, mask), sdpa(images, ids, mask), strict=True):
            torch.testing.assert_close(got, want, **TOL)


def test_pooling_reads_the_first_end_of_text_token() -> None:
    model = _model()
    ids, mask = _texts()
    ids[0, 3] = EOS  # row 0 now holds EOS at 3 and at 8: the first one counts
    with torch.no_grad():
        hidden, pooled = model.text(ids, mask)
        for row, first in enumerate((3, 5, 2)):
            torch.testing.assert_close(pooled[row], hidden[row, first])
        # Causal: what follows the first end-of-text token does not change the text's vector.
        changed = ids.clone()
        changed[0, 4:8] = 7
        torch.testing.assert_close(model.text(changed, mask)[1], pooled, **TOL)


def test_input_errors_are_clear() -> None:
    model = _model()
    ids, _ = _texts()
    ids[1, 5] = 4  # row 1 loses its end-of-text token
    with pytest.raises(ConfigError, match=r"each text must end with the end-of-text token.*row 1"):
        model.encode_text(ids)
    with pytest.raises(ConfigError, match="text of 17 tokens > max_seq_len 16"):
        model.encode_text(torch.full((1, 17), EOS))
    with pytest.raises(ConfigError, match=r"input_ids must lie in 0\.\.98"):
        model.encode_text(torch.tensor([[99, EOS]]))
    with pytest.raises(ConfigError, match="attention_mask must have the shape"):
        model.encode_text(torch.tensor([[1, EOS]]), torch.ones(1, 3))
    with pytest.raises(ConfigError, match="do not match image_size 24"):
        model.encode_image(_images(1, (30, 36)))
    with pytest.raises(ConfigError, match="3 channels"):
        model.encode_image(torch.randn(1, 1, 24, 24))
    with pytest.raises(ConfigError, match="not cut evenly into 6x6 patches"):
        model.encode_image(_images(1, (25, 24)), interpolate_pos_encoding=True)


def test_interpolation_is_a_no_op_at_the_training_size() -> None:
    model = _model()
    images = _images()
    with torch.no_grad():
        plain = model.encode_image(images)
        torch.testing.assert_close(model.encode_image(images, interpolate_pos_encoding=True), plain)
        assert model.encode_image(_images(2, (30, 36)), interpolate_pos_encoding=True).shape == (
            2,
            32,
        )


def test_clip_loss_equals_a_hand_computation() -> None:
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 5
    B = len(logits)
    rows = [float(logits[i, i] - torch.logsumexp(logits[i, :], dim=0)) for i in range(B)]
    cols = [float(logits[j, j] - torch.logsumexp(logits[:, j], dim=0)) for j in range(B)]
    by_hand = (-sum(rows) / B - sum(cols) / B) / 2
    # And once more with the softmax written out.
    e = [[math.exp(float(x)) for x in row] for row in logits]
    text_side = -sum(math.log(e[i][i] / sum(e[i])) for i in range(B)) / B
    image_side = -sum(math.log(e[j][j] / sum(e[i][j] for i in range(B))) for j in range(B)) / B
    assert float(clip_loss(logits)) == pytest.approx(by_hand, rel=1e-5)
    assert float(clip_loss(logits)) == pytest.approx((text_side + image_side) / 2, rel=1e-5)
    # Perfectly separated pairs cost nothing; the loss is symmetric in texts and images.
    assert float(clip_loss(100 * torch.eye(3))) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(clip_loss(logits.t()), clip_loss(logits))


def test_the_temperature_factor_is_clamped_at_100() -> None:
    model = _model()
    ids, mask = _texts()
    images = _images()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) > 100
        out = model(images, ids, mask)
    assert float(model.temperature_scale().detach()) == 100.0
    torch.testing.assert_close(
        out.logits_per_text, 100 * (out.text_embeds @ out.image_embeds.t()), **TOL
    )
    model.temperature_scale().backward()
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) == 0.0


def test_quick_gelu() -> None:
    x = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x))
    assert float((quick_gelu(x) - F.gelu(x)).abs().max()) < 0.03
    gelu = _model(hidden_act="gelu")
    assert gelu.text.blocks[0].mlp.hidden_act == "gelu"


@pytest.mark.parametrize("name", ["tiny", "digits"])
def test_parameter_counts_equal_the_model(name: str) -> None:
    config = CLIPConfig.from_name(name)
    model = CLIP(config)
    counts = parameter_counts(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["vision"] == sum(p.numel() for p in model.vision.parameters())
    assert counts["text"] == sum(p.numel() for p in model.text.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_parameter_counts_at_vit_b32_widths() -> None:
    # One block per tower keeps the build quick; the doctest gives the 12-block total.
    config = CLIPConfig.from_name("clip-vit-base-patch32", vision_n_layers=1, text_n_layers=1)
    with torch.device("meta"):
        model = CLIP(config)
    assert parameter_counts(config)["total"] == sum(p.numel() for p in model.parameters())


def test_registry_entry() -> None:
    arch = registry.get("clip")
    assert arch.config_cls is CLIPConfig and arch.model_cls is CLIP and not arch.causal_lm
    assert arch.hf is clip_hf.CLIP_ADAPTER and arch.parameter_counts is parameter_counts
    assert dict(arch.extra) == {"run_kind": "clip", "model_class": "CLIP", "task": "contrastive"}
    config = registry.find_preset("tiny", "clip", eos_id=5)
    assert registry.arch_of(config) is arch and isinstance(registry.build_model(config), CLIP)
    assert registry.config_from_dict(registry.config_to_dict(config)) == config
    assert registry.find_preset("clip-vit-base-patch32") == CLIPConfig()
    assert "clip" in registry.names(causal_lm=False)
    assert {f.name for f in dataclasses.fields(CLIPConfig)} == arch.field_names()


@pytest.mark.parametrize("module", [clip_module, clip_hf])
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
