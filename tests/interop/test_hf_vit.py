"""Parity with Hugging Face ``transformers``: ViT's two classes built offline from a small odd
config (24x24 images, 6x6 patches, width 48, 3 heads, MLP 97).

For ``ViTModel`` and ``ViTForImageClassification``: ``from_hf`` gives the matching class of ours
with equal outputs and equal gradients (with respect to the weights and the pixels), ``to_hf``
gives the matching ``transformers`` class back, ``export_hf`` goes through ``from_pretrained``,
and ``save_pretrained``'s checkpoint names load after :func:`rename_checkpoint_keys`. Position
interpolation on another image size and the attention maps equal theirs.
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
    load_hf_state_dict,
    to_hf,
)
from groundwork.models import registry
from groundwork.models.vit import ViT, ViTConfig, ViTForImageClassification
from groundwork.models.vit_hf import rename_checkpoint_keys, vit_key_map

transformers = pytest.importorskip("transformers")

TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-5)
CLASSES = {"ViTModel": ViT, "ViTForImageClassification": ViTForImageClassification}


def _hf_config(**overrides: Any) -> Any:
    kwargs = dict(
        image_size=24,
        patch_size=6,
        num_channels=3,
        hidden_size=48,
        num_attention_heads=3,
        num_hidden_layers=2,
        intermediate_size=97,
        num_labels=5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.1,
        attn_implementation="eager",
    )
    return transformers.ViTConfig(**{**kwargs, **overrides})


def _hf_model(name: str, **overrides: Any) -> Any:
    torch.manual_seed(0)
    model = getattr(transformers, name)(_hf_config(**overrides)).eval()
    with torch.no_grad():  # the init leaves biases and LayerNorms at 0 and 1: move them
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _pixels(H: int = 24, W: int = 24) -> torch.Tensor:
    return torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1))


def _hf_outputs(name: str, out: Any) -> list[torch.Tensor]:
    if name == "ViTModel":
        return [out.last_hidden_state, out.pooler_output]
    return [out.logits]


def _our_outputs(model: Any, pixels: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
    if isinstance(model, ViT):
        hidden = model(pixels, **kwargs)
        return [hidden, model.pool(hidden)]
    return [model(pixels, **kwargs)]


def _assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_from_hf_and_to_hf_give_the_same_outputs(name: str) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    assert type(ours) is CLASSES[name] and not ours.training
    assert hf_class_name(ours) == name and ours.config.n_classes == 5
    pixels = _pixels()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(pixels))
        _assert_all_close(_our_outputs(ours, pixels), expected)
        back = to_hf(ours)
        assert type(back).__name__ == name
        _assert_all_close(_hf_outputs(name, back(pixels)), expected)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_gradients_equal_transformers(name: str) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    pixels_hf = _pixels().requires_grad_()
    pixels_ours = _pixels().requires_grad_()
    torch.manual_seed(2)
    weights = [torch.randn_like(t) for t in _our_outputs(ours, _pixels())]

    def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor:
        """A weighted mean of every output (a scalar that depends on all of them)."""
        terms = [(w * o).mean() for w, o in zip(weights, outputs, strict=True)]
        return torch.stack(terms).sum()

    loss_hf = loss_of(_hf_outputs(name, hf(pixels_hf)))
    loss_ours = loss_of(_our_outputs(ours, pixels_ours))
    torch.testing.assert_close(loss_ours, loss_hf, **TOL)
    loss_hf.backward()
    loss_ours.backward()
    torch.testing.assert_close(pixels_ours.grad, pixels_hf.grad, **TOL)
    hf_params = dict(hf.named_parameters())
    key_map = vit_key_map(ours.config)
    for key, p in ours.named_parameters():
        hf_grad = hf_params[key_map[key]].grad
        assert p.grad is not None and hf_grad is not None, key
        torch.testing.assert_close(p.grad, hf_grad, **TOL)
    assert len(list(ours.parameters())) == len(hf_params)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_interpolated_positions_on_another_image_size(name: str) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    pixels = _pixels(30, 36)  # 5 x 6 patches instead of 4 x 4
    with torch.no_grad():
        expected = _hf_outputs(name, hf(pixels, interpolate_pos_encoding=True))
        _assert_all_close(_our_outputs(ours, pixels, interpolate_pos_encoding=True), expected)


@pytest.mark.parity
@pytest.mark.parametrize("size", [(24, 24), (30, 36)])
def test_attention_maps_equal_output_attentions(size: tuple[int, int]) -> None:
    hf = _hf_model("ViTModel", num_hidden_layers=3)
    ours = from_hf(hf)
    pixels = _pixels(*size)
    with torch.no_grad():
        out = hf(pixels, output_attentions=True, interpolate_pos_encoding=True)
        maps = ours.attention_maps(pixels, interpolate_pos_encoding=True)
    assert len(maps) == len(out.attentions) == 3
    for got, want in zip(maps, out.attentions, strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_export_hf_loads_in_from_pretrained_and_import_hf(name: str, tmp_path: Path) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    export_hf(ours, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == [name] and written["model_type"] == "vit"
    assert "bos_token_id" not in written and len(written["id2label"]) == 5
    # The weights are saved under the names save_pretrained writes (every version reads them).
    from safetensors.torch import load_file

    hf.save_pretrained(tmp_path / "reference")
    reference = set(load_file(tmp_path / "reference" / "model.safetensors"))
    assert set(load_file(tmp_path / "model.safetensors")) == reference
    loaded = getattr(transformers, name).from_pretrained(tmp_path, attn_implementation="eager")
    back = import_hf(tmp_path)
    assert type(back) is CLASSES[name] and back.config == ours.config
    pixels = _pixels()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(pixels))
        _assert_all_close(_hf_outputs(name, loaded.eval()(pixels)), expected)
        _assert_all_close(_our_outputs(back.eval(), pixels), expected)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_save_pretrained_names_load_after_renaming(name: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    hf = _hf_model(name)
    hf.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert any(".encoder.layer.0.attention.attention.query." in f".{k}" for k in saved)
    config = config_from_hf_dict(json.loads((tmp_path / "config.json").read_text()))
    ours = load_hf_state_dict(CLASSES[name](config), rename_checkpoint_keys(saved)).eval()
    pixels = _pixels()
    with torch.no_grad():
        _assert_all_close(_our_outputs(ours, pixels), _hf_outputs(name, hf(pixels)))


@pytest.mark.parity
def test_import_hf_reads_save_pretrained_output(tmp_path: Path) -> None:
    hf = _hf_model("ViTForImageClassification")
    hf.save_pretrained(tmp_path)
    ours = import_hf(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(_pixels()), hf(_pixels()).logits, **TOL)


# ----------------------------------------------------------------------------------------------
# Adapter, config and errors


def test_the_adapter_maps_every_key_of_every_class() -> None:
    arch = registry.get("vit")
    assert arch.hf is not None and dict(arch.hf.hf_classes) == CLASSES
    for overrides in ({}, {"n_layers": 3, "n_classes": 7}, {"hidden_act": "gelu_tanh"}):
        config = arch.config("tiny", **overrides)
        key_map = vit_key_map(config)
        assert len(set(key_map.values())) == len(key_map), "two keys map to one"
        for cls in CLASSES.values():
            with torch.device("meta"):
                model = cls(config)
            assert set(model.state_dict()) <= set(key_map), cls.__name__
        assert config_from_hf_dict(hf_config_dict(config)) == config


def test_hf_config_dict_names_the_class_and_the_labels() -> None:
    config = ViTConfig.from_name("digits")
    d = hf_config_dict(config)
    assert d["architectures"] == ["ViTForImageClassification"] and d["model_type"] == "vit"
    assert hf_config_dict(config, hf_class="ViTModel")["architectures"] == ["ViTModel"]
    assert (d["image_size"], d["patch_size"], d["num_channels"], len(d["id2label"])) == (
        8,
        2,
        1,
        10,
    )
    # A square image given as a pair is read; num_labels when there is no id2label.
    pair = {k: v for k, v in d.items() if k != "id2label"} | {"image_size": [8, 8], "num_labels": 3}
    assert config_from_hf_dict(pair) == ViTConfig.from_name("digits", n_classes=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(qkv_bias=False), "qkv_bias=False"),
        (dict(hidden_act="relu"), "hidden_act 'relu'"),
        (dict(pooler_output_size=32), "pooler_output_size 32"),
        (dict(pooler_act="relu"), "pooler_act 'relu'"),
        (dict(image_size=[24, 30]), r"image_size=\[24, 30\].*square"),
        (dict(patch_size=[6, 3]), r"patch_size=\[6, 3\]"),
        (dict(id2label={}), "num_labels=0"),
    ],
)
def test_unsupported_options_are_refused(overrides: dict, message: str) -> None:
    d = {**hf_config_dict(ViTConfig.from_name("tiny")), **overrides}
    with pytest.raises(CheckpointError, match=message):
        config_from_hf_dict(d)


@pytest.mark.parity
def test_unsupported_classes_and_hf_options_are_refused() -> None:
    with pytest.raises(CheckpointError, match="qkv_bias=False"):
        from_hf(transformers.ViTModel(_hf_config(qkv_bias=False)))
    with pytest.raises(CheckpointError, match="ViTForMaskedImageModeling is not supported"):
        from_hf(transformers.ViTForMaskedImageModeling(_hf_config(encoder_stride=6)))
