"""Parity with Hugging Face ``transformers``: ``CLIPModel`` built offline from a small odd config
(image 24, patch 6, vision width 48 with 3 heads; vocabulary 99 with end-of-text id 98).

``from_hf`` gives our :class:`~groundwork.models.clip.CLIP` with equal logits, embeddings,
features, hidden states (padded texts included), loss and gradients; ``to_hf`` gives
``CLIPModel`` back; ``export_hf``/``import_hf`` go through ``from_pretrained`` and
``save_pretrained``; resized position grids agree; unsupported options are refused.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from groundwork.errors import CheckpointError
from groundwork.interop.hf import (
    config_from_hf_dict,
    export_hf,
    from_hf,
    hf_class_name,
    hf_config_dict,
    import_hf,
    to_hf,
)
from groundwork.models import registry
from groundwork.models.clip import CLIP, CLIPConfig, clip_loss, parameter_counts
from groundwork.models.clip_hf import clip_key_map

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)
EOS = 98


def _hf_config(text: dict[str, Any] | None = None, **vision: Any) -> Any:
    text_config = dict(
        vocab_size=99,
        hidden_size=36,
        num_attention_heads=3,
        num_hidden_layers=2,
        intermediate_size=71,
        max_position_embeddings=16,
        eos_token_id=EOS,
        bos_token_id=97,
        pad_token_id=0,
    )
    vision_config = dict(
        image_size=24,
        patch_size=6,
        hidden_size=48,
        num_attention_heads=3,
        num_hidden_layers=2,
        intermediate_size=97,
    )
    return transformers.CLIPConfig(
        text_config={**text_config, **(text or {})},
        vision_config={**vision_config, **vision},
        projection_dim=32,
        attn_implementation="eager",
    )


def _hf_model(**kwargs: Any) -> Any:
    torch.manual_seed(0)
    model = transformers.CLIPModel(_hf_config(**kwargs)).eval()
    with torch.no_grad():  # the init leaves biases and LayerNorms at 0 and 1: move them
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _batch(n_texts: int = 3, n_images: int = 2, size: tuple[int, int] = (24, 24)) -> dict:
    """Texts right-padded with 0 after their end-of-text token (and row 0 holding it twice)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, EOS, (n_texts, 10), generator=generator)
    mask = torch.ones(n_texts, 10, dtype=torch.long)
    for row, eos in enumerate((9, 6, 3)[:n_texts]):
        ids[row, eos] = EOS
        ids[row, eos + 1 :] = 0
        mask[row, eos + 1 :] = 0
    ids[0, 4] = EOS
    pixels = torch.randn(n_images, 3, *size, generator=generator)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels)


def _ours(model: CLIP, batch: dict) -> Any:
    return model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


def _assert_same_outputs(ours: Any, hf_out: Any) -> None:
    for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        torch.testing.assert_close(getattr(ours, name), getattr(hf_out, name), **TOL)


@pytest.mark.parity
def test_from_hf_gives_the_same_outputs() -> None:
    hf = _hf_model()
    ours = from_hf(hf)
    assert type(ours) is CLIP and not ours.training and hf_class_name(ours) == "CLIPModel"
    assert (ours.config.eos_id, ours.config.vocab_size, ours.config.image_size) == (EOS, 99, 24)
    batch = _batch()
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    with torch.no_grad():
        _assert_same_outputs(_ours(ours, batch), hf(**batch))
        text = hf.text_model(input_ids=ids, attention_mask=mask)
        hidden, pooled = ours.text(ids, mask)
        torch.testing.assert_close(hidden, text.last_hidden_state, **TOL)  # padding included
        torch.testing.assert_close(pooled, text.pooler_output, **TOL)
        vision = hf.vision_model(pixel_values=pixels)
        hidden, pooled = ours.vision(pixels)
        torch.testing.assert_close(hidden, vision.last_hidden_state, **TOL)
        torch.testing.assert_close(pooled, vision.pooler_output, **TOL)
        want = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        torch.testing.assert_close(ours.encode_text(ids, mask), want, **TOL)
        want = hf.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(ours.encode_image(pixels), want, **TOL)
        # Without a mask, too.
        plain = hf(input_ids=ids, pixel_values=pixels)
        _assert_same_outputs(ours(pixels, ids), plain)


@pytest.mark.parity
def test_exact_gelu_towers_agree() -> None:
    hf = _hf_model(text={"hidden_act": "gelu"}, hidden_act="gelu")
    ours = from_hf(hf)
    assert ours.config.hidden_act == "gelu"
    batch = _batch()
    with torch.no_grad():
        _assert_same_outputs(_ours(ours, batch), hf(**batch))


@pytest.mark.parity
def test_loss_and_gradients_equal_transformers() -> None:
    hf = _hf_model()
    ours = from_hf(hf)
    batch = _batch(n_texts=3, n_images=3)  # B matching pairs
    out = hf(**batch, return_loss=True)
    loss = clip_loss(_ours(ours, batch).logits_per_text)
    torch.testing.assert_close(loss, out.loss, **TOL)
    loss.backward()
    out.loss.backward()
    hf_params = dict(hf.named_parameters())
    key_map = clip_key_map(ours.config)
    for key, param in ours.named_parameters():
        hf_grad = hf_params[key_map[key]].grad
        assert param.grad is not None and hf_grad is not None, key
        torch.testing.assert_close(param.grad, hf_grad, **TOL)
    assert len(dict(ours.named_parameters())) == len(hf_params)
    assert float(ours.logit_scale.grad.abs()) > 0  # the temperature learns (no clamp at init)


@pytest.mark.parity
def test_interpolated_positions_agree() -> None:
    hf = _hf_model()
    ours = from_hf(hf)
    batch = _batch(size=(30, 36))  # a 5 x 6 grid of patches instead of 4 x 4
    pixels = batch["pixel_values"]
    with torch.no_grad():
        want = hf.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)
        got = ours.encode_image(pixels, interpolate_pos_encoding=True)
        torch.testing.assert_close(got, want.pooler_output, **TOL)
        out = hf(**batch, interpolate_pos_encoding=True)
        _assert_same_outputs(ours(pixels, batch["input_ids"], interpolate_pos_encoding=True), out)


@pytest.mark.parity
def test_to_hf_round_trip() -> None:
    hf = _hf_model()
    back = to_hf(from_hf(hf))
    assert type(back).__name__ == "CLIPModel" and not back.training
    assert back.config.text_config.eos_token_id == EOS
    assert back.config.projection_dim == 32 and back.config.vision_config.patch_size == 6
    batch = _batch()
    with torch.no_grad():
        _assert_same_outputs(back(**batch), hf(**batch))


@pytest.mark.parity
def test_export_hf_loads_in_from_pretrained_and_import_hf(tmp_path: Path) -> None:
    hf = _hf_model()
    ours = from_hf(hf)
    export_hf(ours, tmp_path, eos_token_id=EOS)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["CLIPModel"] and written["model_type"] == "clip"
    assert written["text_config"]["eos_token_id"] == EOS and written["projection_dim"] == 32
    loaded = transformers.CLIPModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    back = import_hf(tmp_path).eval()
    assert type(back) is CLIP and back.config == ours.config
    batch = _batch()
    with torch.no_grad():
        expected = hf(**batch)
        _assert_same_outputs(loaded(**batch), expected)
        _assert_same_outputs(_ours(back, batch), expected)


@pytest.mark.parity
def test_import_hf_reads_save_pretrained_output(tmp_path: Path) -> None:
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    ours = import_hf(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        _assert_same_outputs(_ours(ours, batch), hf(**batch))


def test_parameter_counts_equal_transformers() -> None:
    # ViT-B/32 widths with one block per tower (the doctest gives the 12-block total); tiny.
    small = dict(num_hidden_layers=1)
    with torch.device("meta"):
        hf = transformers.CLIPModel(transformers.CLIPConfig(text_config=small, vision_config=small))
    ours = CLIPConfig(vision_n_layers=1, text_n_layers=1)
    assert parameter_counts(ours)["total"] == sum(p.numel() for p in hf.parameters())
    tiny = _hf_model()
    assert parameter_counts(from_hf(tiny).config)["total"] == sum(
        p.numel() for p in tiny.parameters()
    )


def test_the_adapter_maps_every_key_and_round_trips_configs() -> None:
    arch = registry.get("clip")
    for name in arch.presets:
        config = arch.config(name)
        key_map = clip_key_map(config)
        assert len(set(key_map.values())) == len(key_map), "two keys map to one"
        with torch.device("meta"):
            model = CLIP(CLIPConfig.from_name("tiny")) if name != "tiny" else CLIP(config)
        assert set(model.state_dict()) <= set(clip_key_map(model.config))
        d = hf_config_dict(config)
        assert d["text_config"]["eos_token_id"] == config.eos_id
        assert config_from_hf_dict(d) == config
        assert config_from_hf_dict(json.loads(json.dumps(d))) == config
    # An older config.json: the *_dict copies win, as in transformers.
    d = hf_config_dict(CLIPConfig.from_name("tiny"))
    old = {**d, "text_config_dict": {"max_position_embeddings": 12}}
    assert config_from_hf_dict(old).max_seq_len == 12


def test_unsupported_checkpoints_are_refused() -> None:
    legacy = transformers.CLIPModel(_hf_config(text={"eos_token_id": 2}))
    with pytest.raises(CheckpointError, match=r"eos_token_id is 2.*legacy argmax pooling"):
        from_hf(legacy)
    d = hf_config_dict(CLIPConfig.from_name("tiny"))
    gelu_new = {**d, "text_config": {**d["text_config"], "hidden_act": "gelu_new"}}
    with pytest.raises(CheckpointError, match="hidden_act 'gelu_new'"):
        config_from_hf_dict(gelu_new)
    mixed = {**d, "vision_config": {**d["vision_config"], "hidden_act": "gelu"}}
    with pytest.raises(CheckpointError, match="both towers"):
        config_from_hf_dict(mixed)
    dropout = {**d, "vision_config": {**d["vision_config"], "attention_dropout": 0.1}}
    with pytest.raises(CheckpointError, match="attention_dropout"):
        config_from_hf_dict(dropout)
    oblong = {**d, "vision_config": {**d["vision_config"], "patch_size": [6, 4]}}
    with pytest.raises(CheckpointError, match="only squares"):
        config_from_hf_dict(oblong)
    classifier = transformers.CLIPForImageClassification(_hf_config())
    with pytest.raises(CheckpointError, match="CLIPForImageClassification is not supported"):
        from_hf(classifier)
