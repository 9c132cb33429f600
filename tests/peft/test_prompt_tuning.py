"""Prompt tuning (Lester et al. 2021): the same logits as peft's PROMPT_TUNING on the
transformers twins of our GPT and Llama, adapters that load both ways, a frozen base, peft's text
init, a sequence head on top, and bad input refused by name."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers
from groundwork.adapt.features import hidden_size, last_hidden_state, layer_states
from groundwork.adapt.heads import SequenceClassifier, head_for, pool
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import to_hf
from groundwork.models.bert import Bert, BertConfig
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.peft.lora import trainable_parameters
from groundwork.peft.prompt_tuning import (
    PromptTuned,
    PromptTuningConfig,
    apply_prompt_tuning,
    load_prompt_tuning,
    prompt_init_ids,
    save_prompt_tuning,
)

P = 3
TOL = dict(rtol=1e-5, atol=1e-5)


def _llama(**overrides: Any) -> Llama:
    return helpers.tiny_llama(**overrides)


def _gpt(**overrides: Any) -> GPT:
    return helpers.tiny_gpt(**overrides)


FAMILIES = {"llama": _llama, "gpt": _gpt}


def _ids() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(0, 97, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])  # the second row right-padded
    return ids, mask


def _peft_twin(ours: PromptTuned, make: Callable[[], nn.Module]) -> Any:
    """peft's PROMPT_TUNING on the transformers twin, with our prompt copied in."""
    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model

    config = PeftPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)
    theirs = get_peft_model(to_hf(make()).eval(), config).eval()
    theirs.prompt_encoder["default"].embedding.weight.data.copy_(ours.prompt_embeddings.weight)
    return theirs


@pytest.mark.parity
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_same_logits_as_peft(family: str, padded: bool) -> None:
    make = FAMILIES[family]
    ours = apply_prompt_tuning(make(), PromptTuningConfig(P))  # random N(0, 1) prompt
    theirs = _peft_twin(ours, make)
    ids, mask = _ids()
    m = mask if padded else None
    with torch.no_grad():
        logits = ours(ids, m)
        # peft returns the P prompt positions too; the real tokens are the last T
        torch.testing.assert_close(
            logits, theirs(input_ids=ids, attention_mask=m).logits[:, P:], **TOL
        )
    assert ours.hidden_states(ids, m).shape == (2, 7, 64)


@pytest.mark.parity
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_ours_load_in_peft_and_peft_loads_in_ours(family: str, tmp_path: Path) -> None:
    from peft import PeftModel

    make = FAMILIES[family]
    config = PromptTuningConfig(P)
    ours = apply_prompt_tuning(make(), config)
    save_prompt_tuning(ours, tmp_path / "ours", config, base_model="tiny")
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "PROMPT_TUNING" and saved["token_dim"] == 64
    ids, mask = _ids()
    theirs = PeftModel.from_pretrained(to_hf(make()).eval(), str(tmp_path / "ours")).eval()
    with torch.no_grad():
        expected = ours(ids, mask)
        got = theirs(input_ids=ids, attention_mask=mask).logits[:, P:]
        torch.testing.assert_close(got, expected, **TOL)

    peft_model = _peft_twin(apply_prompt_tuning(make(), config), make)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.normal_()  # a prompt of peft's own
    peft_model.save_pretrained(str(tmp_path / "peft"))
    loaded = load_prompt_tuning(make(), tmp_path / "peft")
    assert loaded.adapter_config == config
    with torch.no_grad():
        expected = peft_model(input_ids=ids, attention_mask=mask).logits[:, P:]
        torch.testing.assert_close(loaded(ids, mask), expected, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_trainable_parameters_as_peft(family: str) -> None:
    ours = apply_prompt_tuning(FAMILIES[family](), PromptTuningConfig(P))
    theirs = _peft_twin(ours, FAMILIES[family])
    assert trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert trainable_parameters(ours)[0] == P * 64


def test_training_moves_the_prompt_only() -> None:
    base = _llama()
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    ours = apply_prompt_tuning(base, PromptTuningConfig(P)).train()
    start = ours.prompt_embeddings.weight.detach().clone()
    ids, mask = _ids()
    with torch.no_grad():
        assert not torch.allclose(ours(ids), base(ids))  # the prompt changes the output
    optimizer = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(5):
        logits = ours(ids, mask)  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(ours.prompt_embeddings.weight, start)
    for k, v in base.state_dict().items():
        assert torch.equal(v, frozen[k]), k


@pytest.mark.parity
def test_text_init_is_the_embeddings_of_the_ids_as_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model

    assert prompt_init_ids([5, 7], 5) == [5, 7, 5, 7, 5]
    assert prompt_init_ids([1, 2, 3, 4], 3) == [1, 2, 3]
    base = _llama()
    ours = apply_prompt_tuning(base, PromptTuningConfig(5, init_text="hi"), init_ids=[5, 7])
    expected = base.model.embed_tokens.weight[[5, 7, 5, 7, 5]]
    torch.testing.assert_close(ours.prompt_embeddings.weight, expected, rtol=0, atol=0)

    class FakeTokenizer:  # peft tokenizes the text itself: give it our ids
        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": [5, 7]}

    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: FakeTokenizer()
    )
    config = PeftPromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=5,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="hi",
        tokenizer_name_or_path="fake",
    )
    theirs = get_peft_model(to_hf(_llama()), config)
    torch.testing.assert_close(
        ours.prompt_embeddings.weight, theirs.prompt_encoder["default"].embedding.weight
    )


@pytest.mark.parity
def test_text_init_is_saved_as_peft_reads_it(tmp_path: Path) -> None:
    from peft import PeftConfig

    config = PromptTuningConfig(4, init_text="hello")
    ours = apply_prompt_tuning(_gpt(), config, init_ids=[1, 2])
    save_prompt_tuning(ours, tmp_path / "a", config, base_model="gpt2")
    read = PeftConfig.from_pretrained(str(tmp_path / "a"))
    assert (read.prompt_tuning_init, read.prompt_tuning_init_text) == ("TEXT", "hello")
    assert read.tokenizer_name_or_path == "gpt2"
    save_prompt_tuning(ours, tmp_path / "b", config)  # no tokenizer name: peft would refuse TEXT
    assert PeftConfig.from_pretrained(str(tmp_path / "b")).prompt_tuning_init == "RANDOM"
    assert load_prompt_tuning(_gpt(), tmp_path / "b").adapter_config == config


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_a_sequence_head_reads_the_real_tokens(family: str) -> None:
    ours = apply_prompt_tuning(FAMILIES[family](), PromptTuningConfig(P))
    head = head_for(ours, "sequence", 2)
    assert isinstance(head, SequenceClassifier) and head.pooling == "last"
    assert hidden_size(ours) == 64 and ours.config is ours.base_model.config
    ids, mask = _ids()
    with torch.no_grad():
        hidden = ours.hidden_states(ids, mask)  # (B, T, d)
        torch.testing.assert_close(last_hidden_state(ours, ids, mask), hidden)
        expected = head.classifier(hidden[torch.arange(2), torch.tensor([6, 3])])
        torch.testing.assert_close(head(ids, mask), expected)
        torch.testing.assert_close(head(ids, mask), head.classifier(pool(hidden, mask, "last")))
        states = layer_states(ours, ids, mask)
    assert len(states) == 3 and all(s.shape == (2, 7, 64) for s in states)
    torch.testing.assert_close(states[-1], hidden)
    # the embeddings entry: the tokens' own (Llama: no positions added), the prompt dropped
    if family == "llama":
        torch.testing.assert_close(states[0], ours.base_model.model.embed_tokens(ids))


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_inputs_embeds_are_the_token_lookup(family: str) -> None:
    model = FAMILIES[family]()
    ids, mask = _ids()
    table = model.wte if isinstance(model, GPT) else model.model.embed_tokens
    with torch.no_grad():
        torch.testing.assert_close(
            model(None, attention_mask=mask, inputs_embeds=table(ids)),
            model(ids, attention_mask=mask),
            rtol=0,
            atol=0,
        )
    with pytest.raises(ValueError, match="exactly one of them"):
        model(ids, inputs_embeds=table(ids))
    with pytest.raises(ValueError, match="exactly one of them"):
        model(None)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    for bad in (0, -2):
        with pytest.raises(
            ConfigError, match=f"num_virtual_tokens must be an integer >= 1, got {bad}"
        ):
            PromptTuningConfig(bad)
    with pytest.raises(ConfigError, match="init_text is set but init_ids is not"):
        apply_prompt_tuning(_llama(), PromptTuningConfig(P, init_text="hi"))
    with pytest.raises(ConfigError, match=r"init_ids holds 97, outside the vocabulary 0\.\.96"):
        apply_prompt_tuning(_llama(), PromptTuningConfig(P), init_ids=[1, 97])
    with pytest.raises(ConfigError, match="init_ids is empty"):
        apply_prompt_tuning(_llama(), PromptTuningConfig(P), init_ids=[])
    bert = Bert(BertConfig.from_name("tiny"))
    with pytest.raises(ConfigError, match="not a Bert"):
        apply_prompt_tuning(bert, PromptTuningConfig(P))
    ours = apply_prompt_tuning(_llama(), PromptTuningConfig(P))
    ids, mask = _ids()
    with pytest.raises(ConfigError, match=r"attention_mask must have the shape of idx \(2, 7\)"):
        ours(ids, mask[:, :5])
    with pytest.raises(ConfigError, match="config has num_virtual_tokens=4, the model's prompt 3"):
        save_prompt_tuning(ours, tmp_path / "x", PromptTuningConfig(4))
    with pytest.raises(ConfigError, match="writes a PromptTuned model"):
        save_prompt_tuning(_llama(), tmp_path / "x", PromptTuningConfig(P))

    adapter = save_prompt_tuning(ours, tmp_path / "a", PromptTuningConfig(P))
    with pytest.raises(
        CheckpointError,
        match=r"prompt_embeddings has shape \(3, 64\), the model needs \(3, 128\)",
    ):
        load_prompt_tuning(_llama(d_model=128), adapter)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ConfigError, match="'PREFIX_TUNING' adapter; load_prompt_tuning reads"):
        load_prompt_tuning(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "num_transformer_submodules": 2}))
    with pytest.raises(ConfigError, match="num_transformer_submodules=2"):
        load_prompt_tuning(_llama(), adapter)
    config_file.write_text(json.dumps({**config, "task_type": "SEQ_CLS"}))
    with pytest.raises(ConfigError, match="task_type 'SEQ_CLS'"):
        load_prompt_tuning(_llama(), adapter)
    with pytest.raises(CheckpointError, match="not a peft adapter directory"):
        load_prompt_tuning(_llama(), tmp_path / "nothing")
