"""LoRA: equal to peft's LoRA on the same weights; merge/unmerge; frozen base; errors."""

import pytest
import torch
from torch import nn

import helpers
from groundwork.errors import ConfigError
from groundwork.models.llama import Llama
from groundwork.peft import (
    LoRAConfig,
    LoRALinear,
    active_adapters,
    apply_lora,
    delete_adapter,
    lora_state_dict,
    merge_lora,
    set_adapter,
    trainable_parameters,
    unmerge_lora,
)


def _tiny_llama() -> Llama:
    return helpers.tiny_llama(n_layers=2)


_randomise_b = helpers.randomise_lora_b


@pytest.mark.parametrize("use_rslora", [False, True])
def test_equal_to_peft_on_the_same_weights(use_rslora: bool) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    ours = _tiny_llama()
    theirs = _tiny_llama()
    theirs.load_state_dict(ours.state_dict())
    targets = ("q_proj", "v_proj", "down_proj")
    apply_lora(ours, LoRAConfig(r=4, alpha=8, target_modules=targets, use_rslora=use_rslora))
    _randomise_b(ours)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), use_rslora=use_rslora)
    theirs = inject_adapter_in_model(peft_config, theirs)
    state = {}
    for key, value in lora_state_dict(ours).items():  # ...lora_A.weight -> ...lora_A.default.weight
        state[
            key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
        ] = value
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "lora_" in k]
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids), rtol=1e-5, atol=1e-5)
    n_ours = trainable_parameters(ours)[0]
    n_theirs = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert n_ours == n_theirs > 0


def test_the_adapted_model_starts_as_the_base_and_trains_only_the_adapters() -> None:
    model = _tiny_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        before = model(ids)
    apply_lora(model, LoRAConfig(r=2, target_modules=("q_proj", "v_proj")))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before)  # B = 0 at the start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        model.train()
        loss = model(ids).logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(ids), before)  # the adapters learnt something
    for key, value in model.state_dict().items():  # and the base weights did not move
        plain = key.replace(".base_layer.", ".")
        if plain in base:
            torch.testing.assert_close(value, base[plain], rtol=0, atol=0)


def test_merged_equals_unmerged_and_merging_twice_changes_nothing() -> None:
    model = apply_lora(_tiny_llama(), LoRAConfig(r=4, alpha=4, use_rslora=True))
    _randomise_b(model)
    ids = torch.randint(0, 97, (2, 7))
    q_proj = model.get_submodule("model.layers.0.self_attn.q_proj")
    weight = q_proj.base_layer.weight.clone()
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        merge_lora(model)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
        unmerge_lora(model)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_proj.base_layer.weight, weight)


def test_targets_by_regular_expression() -> None:
    model = apply_lora(_tiny_llama(), LoRAConfig(r=1, target_modules=r"model\.layers\.1\..*_proj"))
    adapted = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert adapted and all(n.startswith("model.layers.1.") for n in adapted)


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"match no linear layer.*its linear layers are named"):
        apply_lora(_tiny_llama(), LoRAConfig(target_modules=("c_attn",)))
    with pytest.raises(ConfigError, match="rank r must be >= 1"):
        LoRAConfig(r=0)
    with pytest.raises(ConfigError, match="larger than the layer"):
        apply_lora(_tiny_llama(), LoRAConfig(r=1000))
    model = apply_lora(_tiny_llama(), LoRAConfig(r=2))
    with pytest.raises(ConfigError, match="already has a LoRA adapter named 'default'"):
        apply_lora(model, LoRAConfig(r=2))
    with pytest.raises(
        ConfigError, match=r"no LoRA adapter named 'nope'; the model has \['default'\]"
    ):
        set_adapter(model, "nope")


def _copy_into_peft(ours: nn.Module, theirs: nn.Module, adapter: str = "default") -> None:
    """Our adapter's weights into peft's layers (``...lora_A.<adapter>.weight``)."""
    state = {}
    for key, value in lora_state_dict(ours, adapter).items():
        module, _, tail = key.partition(".lora_")
        kind, _, rest = tail.partition(".")
        if kind == "magnitude_vector":
            state[f"{module}.lora_magnitude_vector.{adapter}.weight"] = value
        else:
            state[f"{module}.lora_{kind}.{adapter}.{rest}"] = value
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if f".{adapter}." in k]


def test_dora_equals_peft_and_merges() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    ours = _tiny_llama()
    theirs = _tiny_llama()
    targets = ("q_proj", "k_proj", "gate_proj")
    apply_lora(ours, LoRAConfig(r=3, alpha=6, target_modules=targets, use_dora=True))
    _randomise_b(ours)
    torch.manual_seed(3)
    for m in ours.modules():  # a magnitude of its own, not the row norms
        if isinstance(m, LoRALinear):
            nn.init.uniform_(m.lora_magnitude_vector["default"], 0.5, 1.5)
    peft_config = LoraConfig(r=3, lora_alpha=6, target_modules=list(targets), use_dora=True)
    theirs = inject_adapter_in_model(peft_config, theirs)
    _copy_into_peft(ours, theirs)
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        expected = theirs(ids)
        torch.testing.assert_close(ours(ids), expected, rtol=1e-5, atol=1e-5)
    n_theirs = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert trainable_parameters(ours)[0] == n_theirs
    q = ours.get_submodule("model.layers.0.self_attn.q_proj")
    weight = q.base_layer.weight.clone()
    with torch.no_grad():
        merge_lora(ours)
        merge_lora(ours)
        torch.testing.assert_close(ours(ids), expected, rtol=1e-5, atol=1e-5)
        unmerge_lora(ours)
        torch.testing.assert_close(ours(ids), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.base_layer.weight, weight, rtol=1e-5, atol=1e-6)


def test_dora_starts_as_the_base_and_its_gradient_treats_the_norm_as_constant() -> None:
    model = _tiny_llama()
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        before = model(ids)
    apply_lora(model, LoRAConfig(r=2, target_modules=("v_proj",), use_dora=True))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before, rtol=1e-5, atol=1e-5)
    model(ids).sum().backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_named_adapters_add_up_as_peft_and_switch() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    ours = _tiny_llama()
    theirs = _tiny_llama()
    ids = torch.randint(0, 97, (2, 8))
    apply_lora(ours, LoRAConfig(r=2, target_modules=("q_proj", "v_proj")), "a")
    apply_lora(ours, LoRAConfig(r=4, alpha=4, target_modules=("v_proj", "up_proj")), "b")
    assert active_adapters(ours) == ["b"]
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(".b." in n for n in trainable)  # only the active adapter trains
    _randomise_b(ours)
    theirs = inject_adapter_in_model(
        LoraConfig(r=2, lora_alpha=16, target_modules=["q_proj", "v_proj"]), theirs, "a"
    )
    theirs = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=4, target_modules=["v_proj", "up_proj"]), theirs, "b"
    )
    _copy_into_peft(ours, theirs, "a")
    _copy_into_peft(ours, theirs, "b")
    for names in (["a"], ["b"], ["a", "b"]):
        set_adapter(ours, names)
        for m in theirs.modules():
            if hasattr(m, "set_adapter") and hasattr(m, "lora_A"):
                m.set_adapter(names)
        with torch.no_grad():
            torch.testing.assert_close(ours(ids), theirs(ids), rtol=1e-5, atol=1e-5)
    set_adapter(ours, "a")
    delete_adapter(ours, "b")
    up = ours.get_submodule("model.layers.0.mlp.up_proj")
    assert isinstance(up, nn.Linear)  # b was its only adapter: a plain layer again
    with pytest.raises(ConfigError, match="no LoRA adapter named 'b'"):
        delete_adapter(ours, "b")


def test_gpt2_lora_merges_and_training_leaves_the_base_alone() -> None:
    """GPT-2's fused qkv_proj and MLP: merged == unmerged, twice is once, the base does not move."""
    from groundwork.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", vocab_size=97, d_model=48, n_heads=3)).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        before = model(ids)
    apply_lora(model, LoRAConfig(r=2, target_modules=("qkv_proj", "up_proj", "down_proj")))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(ids).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        unmerged = model(ids)
        assert not torch.allclose(unmerged, before, atol=1e-4)  # the adapters learnt something
        merge_lora(model)
        merge_lora(model)
        torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
        unmerge_lora(model)
    for key, value in model.state_dict().items():
        plain = key.replace(".base_layer.", ".")
        if plain in base:
            torch.testing.assert_close(value, base[plain], rtol=1e-5, atol=1e-6)
