"""(IA)³: equal to peft's IA3 on the same vectors (GPT-2's fused Conv1D c_attn, Llama with GQA);
adapters saved by either load in the other with the same logits; merge/unmerge; errors."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import to_hf
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.peft.ia3 import (
    IA3Config,
    IA3Linear,
    apply_ia3,
    ia3_state_dict,
    load_ia3,
    merge_ia3,
    save_ia3,
    unmerge_ia3,
)
from groundwork.peft.naming import PREFIX, hf_module_name

V = 97


def _llama(n_layers: int = 2, d_model: int = 64) -> Llama:
    return helpers.tiny_llama(vocab_size=V, n_layers=n_layers, d_model=d_model)


def _gpt() -> GPT:
    model = helpers.tiny_gpt(vocab_size=V)
    with torch.no_grad():  # GPT-2 starts with zero biases: random ones test their scaling
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(std=0.1)
    return model


MODELS = {"llama": _llama, "gpt": _gpt}


def _randomise(model: nn.Module) -> None:
    """Vectors away from one, so the adapter changes the output."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, IA3Linear):
            nn.init.normal_(m.ia3_l, mean=1.0, std=0.3)


def _peft_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our vectors under peft's saved names (``base_model.model.<transformers name>.ia3_l``)."""
    return {
        PREFIX + hf_module_name(model, k.removesuffix(".ia3_l")) + ".ia3_l": v
        for k, v in ia3_state_dict(model).items()
    }


@pytest.mark.parity
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_equal_to_peft_with_its_default_targets(family: str) -> None:
    from peft import IA3Config as PeftIA3Config
    from peft import get_peft_model, set_peft_model_state_dict

    ours = MODELS[family]()
    config = PeftIA3Config(task_type="CAUSAL_LM", fan_in_fan_out=family == "gpt")  # Conv1D: True
    theirs = get_peft_model(to_hf(MODELS[family]()).eval(), config)
    apply_ia3(ours, IA3Config.peft_defaults(ours))
    _randomise(ours)
    result = set_peft_model_state_dict(theirs, _peft_state(ours))
    assert not result.unexpected_keys and not [k for k in result.missing_keys if "ia3_" in k]
    ids = torch.randint(0, V, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    # two blocks: GQA's k and v (2 heads of 32) + d_ff; GPT-2's fused q, k, v + d_ff
    assert n_ours == n_theirs == {"llama": 2 * (32 + 32 + 172), "gpt": 2 * (3 * 64 + 256)}[family]


@pytest.mark.parity
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_ours_load_in_peft_with_the_same_logits(family: str, tmp_path: Path) -> None:
    from peft import PeftModel

    ours = MODELS[family]()
    targets = ("q_proj", "v_proj", "o_proj", "down_proj") if family == "llama" else None
    apply_ia3(ours, IA3Config(targets) if targets else IA3Config.peft_defaults(ours))
    _randomise(ours)
    adapter = save_ia3(ours, tmp_path / "ia3")
    written = json.loads((adapter / "adapter_config.json").read_text())
    assert written["peft_type"] == "IA3"
    assert written["fan_in_fan_out"] == (family == "gpt")
    if family == "llama":  # short names where they pick exactly the adapted layers
        assert written["target_modules"] == ["down_proj", "o_proj", "q_proj", "v_proj"]
        assert written["feedforward_modules"] == ["down_proj"]
    else:  # GPT-2's c_proj is both attention output and MLP down projection: full names
        assert written["feedforward_modules"] == [f"transformer.h.{i}.mlp.c_proj" for i in (0, 1)]
    theirs = PeftModel.from_pretrained(to_hf(MODELS[family]()).eval(), str(adapter)).eval()
    ids = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_peft_adapters_load_in_ours_with_the_same_logits(family: str, tmp_path: Path) -> None:
    from peft import IA3Config as PeftIA3Config
    from peft import get_peft_model

    if family == "llama":
        config = PeftIA3Config(target_modules=["k_proj", "up_proj", "down_proj"])
    else:  # the attention's c_proj as an output target, the MLP's c_proj as a feedforward one
        config = PeftIA3Config(
            target_modules=r".*\.(c_attn|c_proj)",
            feedforward_modules=r".*mlp\.c_proj",
            fan_in_fan_out=True,
        )
    theirs = get_peft_model(to_hf(MODELS[family]()).eval(), config)
    torch.manual_seed(2)
    for name, p in theirs.named_parameters():
        if "ia3_l" in name:
            nn.init.normal_(p, mean=1.0, std=0.3)
    theirs.save_pretrained(str(tmp_path / "peft"))
    ours = load_ia3(MODELS[family](), tmp_path / "peft")
    assert sum(1 for m in ours.modules() if isinstance(m, IA3Linear)) == 6  # 3 a block
    ids = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids), theirs.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_merged_equals_unmerged_and_merging_twice_changes_nothing(family: str) -> None:
    model = MODELS[family]()
    apply_ia3(model, IA3Config.peft_defaults(model))
    _randomise(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        unmerged = model(ids)
        merge_ia3(model)
        merged_weights = {k: v.clone() for k, v in model.state_dict().items()}
        merge_ia3(model)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, merged_weights[k], rtol=0, atol=0)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
        unmerge_ia3(model)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=1e-6, atol=1e-6)


def test_the_adapted_model_starts_as_the_base_and_trains_only_the_vectors() -> None:
    model = _llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        before = model(ids)
    apply_ia3(model, IA3Config())
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before, rtol=0, atol=0)  # vectors of ones
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(ia3_state_dict(model)) and len(trainable) == 6
    assert {tuple(model.get_parameter(n).shape) for n in trainable} == {(32, 1), (1, 172)}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = model(ids).logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        assert not torch.allclose(model(ids), before)
    for key, value in model.state_dict().items():
        plain = key.replace(".base_layer.", ".")
        if plain in base:
            torch.testing.assert_close(value, base[plain], rtol=0, atol=0)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"match no linear layer.*named down_proj, gate_proj"):
        apply_ia3(_llama(), IA3Config(("c_attn",), feedforward_modules=()))
    with pytest.raises(ConfigError, match=r"match no linear layer.*named.*qkv_proj"):
        apply_ia3(_gpt(), IA3Config(("k_proj", "v_proj"), feedforward_modules=()))
    with pytest.raises(ConfigError, match=r"feedforward_modules \['up_proj'\] are not in"):
        IA3Config(("k_proj", "down_proj"), feedforward_modules=("up_proj",))
    model = apply_ia3(_llama(), IA3Config())
    with pytest.raises(ConfigError, match="already has IA3 layers"):
        apply_ia3(model, IA3Config())
    with pytest.raises(ConfigError, match="has no IA3 layers"):
        save_ia3(_llama(), tmp_path / "none")
    with pytest.raises(ConfigError, match="zeros"):
        nn.init.zeros_(model.get_submodule("model.layers.0.self_attn.k_proj").ia3_l)
        unmerge_ia3(merge_ia3(model))


def test_bad_adapters_are_refused(tmp_path: Path) -> None:
    adapter = save_ia3(apply_ia3(_llama(), IA3Config()), tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"k_proj\.ia3_l has shape \(32, 1\), the model's"):
        load_ia3(_llama(d_model=128), adapter)  # wider layers
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.1\.mlp\.down_proj', which the Llama does not"
    ):
        load_ia3(_llama(n_layers=1), adapter)
    with pytest.raises(CheckpointError, match=r"'transformer\.h\.0\..*', which the Llama does not"):
        load_ia3(_llama(), save_ia3(apply_ia3(_gpt(), IA3Config(("qkv_proj",))), tmp_path / "g"))
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(ConfigError, match="'LORA' adapter; load_ia3 reads IA3 adapters"):
        load_ia3(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}))
    with pytest.raises(ConfigError, match="modules_to_save"):
        load_ia3(_llama(), adapter)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_ia3(_llama(), tmp_path / "nothing")
    with pytest.raises(ConfigError, match="GPT and Llama"):
        load_ia3(nn.Sequential(nn.Linear(2, 2)), adapter)
