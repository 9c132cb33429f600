"""``layer_states`` and ``last_hidden_state`` on every family (transformers parity is in
``test_heads_hf.py``): how many states, their shapes, the last one is what the output head reads,
the hooks are gone afterwards, and bad input is refused with a clear error."""

import itertools

import pytest
import torch
from torch import nn

from groundwork.adapt import hidden_size, last_hidden_state, layer_states, num_layer_states
from groundwork.errors import ConfigError
from groundwork.models import (
    GPT,
    T5,
    Bert,
    BertConfig,
    BertForPreTraining,
    GPTConfig,
    Llama,
    LlamaConfig,
    T5Config,
    T5Encoder,
    TextCNN,
    TextCNNConfig,
)


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    t5 = T5Config.from_name("tiny", dropout=0.0)
    return {
        "gpt": GPT(GPTConfig.from_name("tiny", n_layers=3)),
        "llama": Llama(LlamaConfig.from_name("tiny")),
        "bert": Bert(BertConfig.from_name("tiny")),
        "bert_pretraining": BertForPreTraining(BertConfig.from_name("tiny")),
        "t5_encoder": T5Encoder(t5),
        "t5": T5(t5),
    }


MODELS = _models()


def _blocks(model: nn.Module) -> nn.ModuleList:
    for name in ("blocks", "model.layers", "bert.blocks", "encoder.blocks"):
        try:
            found = model.get_submodule(name)
        except AttributeError:
            continue
        assert isinstance(found, nn.ModuleList)
        return found
    raise AssertionError(type(model).__name__)


@pytest.mark.parametrize("name", list(MODELS))
def test_one_state_per_block_plus_embeddings(name: str) -> None:
    model = MODELS[name].eval()
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        states = layer_states(model, ids, mask)
        final = last_hidden_state(model, ids, mask)
    n_blocks = len(_blocks(model))
    assert len(states) == n_blocks + 1 == num_layer_states(model)
    d = hidden_size(model)
    assert all(s.shape == (2, 7, d) for s in states)
    torch.testing.assert_close(states[-1], final, rtol=0, atol=0)
    assert not any(torch.equal(a, b) for a, b in itertools.pairwise(states))
    for block in _blocks(model):  # the hooks are removed
        assert not block._forward_hooks and not block._forward_pre_hooks


def test_the_last_state_is_what_the_lm_head_reads() -> None:
    for name in ("gpt", "llama"):
        model = MODELS[name].eval()
        ids = torch.randint(0, 100, (2, 6))
        with torch.no_grad():
            head = model.get_submodule("lm_head")
            torch.testing.assert_close(head(layer_states(model, ids)[-1]), model(ids))


def test_states_stay_in_the_graph() -> None:
    model = MODELS["bert"].train()
    ids = torch.randint(1, 100, (2, 5))
    states = layer_states(model, ids)
    states[1].sum().backward()
    emb = model.get_submodule("tok_emb")
    assert isinstance(emb, nn.Embedding) and emb.weight.grad is not None
    model.zero_grad()


def test_bert_segments() -> None:
    model = MODELS["bert"].eval()
    ids = torch.randint(1, 100, (1, 6))
    segments = torch.tensor([[0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        plain = last_hidden_state(model, ids)
        paired = last_hidden_state(model, ids, token_type_ids=segments)
        assert torch.equal(paired, model(ids, token_type_ids=segments))
    assert not torch.allclose(plain, paired)


def test_bad_input_is_refused() -> None:
    ids = torch.randint(1, 100, (2, 5))
    with pytest.raises(ConfigError, match="cannot read the hidden states of a Linear"):
        layer_states(nn.Linear(3, 3), ids)
    with pytest.raises(ConfigError, match="TextCNN"):
        hidden_size(TextCNN(TextCNNConfig(vocab_size=100)))
    with pytest.raises(ConfigError, match=r"input_ids must be \(batch, seq_len\)"):
        layer_states(MODELS["gpt"], ids[0])
    with pytest.raises(ConfigError, match="attention_mask must have the shape"):
        layer_states(MODELS["llama"], ids, torch.ones(2, 4))
    with pytest.raises(ConfigError, match="a GPT has none"):
        last_hidden_state(MODELS["gpt"], ids, token_type_ids=torch.zeros_like(ids))
    gpt = MODELS["gpt"]
    with pytest.raises(ValueError, match="max_seq_len"):  # the model's own check
        layer_states(gpt, torch.zeros(1, 500, dtype=torch.long))
    assert not any(b._forward_hooks or b._forward_pre_hooks for b in _blocks(gpt))
