"""BERT: config validation and presets, shapes, heads and tying, padding, math == SDPA, bad
inputs, parameter counts. Parity with ``transformers`` is in tests/interop/test_hf_bert.py."""

from dataclasses import asdict

import pytest
import torch

from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import build_model, info, registry
from groundwork.models.bert import (
    Bert,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    parameter_counts,
)


def test_presets_have_the_published_sizes() -> None:
    sizes = {
        name: (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_ff, c.max_seq_len)
        for name in ("bert-base", "bert-large", "minilm-l6")
        for c in [BertConfig.from_name(name)]
    }
    assert sizes == {
        "bert-base": (30522, 768, 12, 12, 3072, 512),
        "bert-large": (30522, 1024, 24, 16, 4096, 512),
        "minilm-l6": (30522, 384, 6, 12, 1536, 512),
    }
    tiny = BertConfig.from_name("tiny", n_layers=3)
    assert (tiny.n_layers, tiny.d_ff, tiny.type_vocab_size, tiny.hidden_act) == (3, 256, 2, "gelu")


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'bert-base'"):
        BertConfig.from_name("bert-bas")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(d_model=65), "d_model"),
        (dict(n_heads=0), "n_heads"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(type_vocab_size=0), "type_vocab_size"),
        (dict(max_seq_len=0), "max_seq_len"),
        (dict(d_ff=0), "d_ff"),
        (dict(hidden_act="relu"), "hidden_act"),
        (dict(attn_impl="flash"), "attn_impl"),
        (dict(dropout=1.0), "dropout"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(pad_id=512), "pad_id"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        BertConfig.from_name("tiny", **overrides)


def _batch(
    config: BertConfig, B: int = 2, T: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (B, T), generator=generator)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0  # right padding in the second row
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 4:] = 1  # sentence B from the fifth token on
    return ids, mask, types


def test_shapes_of_the_three_classes_and_the_tied_head() -> None:
    torch.manual_seed(0)
    c = BertConfig.from_name("tiny")
    ids, mask, types = _batch(c)
    encoder = build_model(c)
    assert isinstance(encoder, Bert)
    hidden = encoder(ids, attention_mask=mask, token_type_ids=types)
    assert hidden.shape == (2, 10, 64)
    assert encoder.pool(hidden).shape == (2, 64)
    mlm = BertForMaskedLM(c)
    assert mlm.bert.pooler is None
    assert mlm(ids, attention_mask=mask).shape == (2, 10, 512)
    assert mlm.mlm.decoder.weight is mlm.bert.tok_emb.weight
    pre = BertForPreTraining(c)
    out = pre(ids, attention_mask=mask, token_type_ids=types)
    assert out.mlm.shape == (2, 10, 512) and out.nsp.shape == (2, 2)
    untied = BertForMaskedLM(BertConfig.from_name("tiny", tie_embeddings=False))
    assert untied.mlm.decoder.weight is not untied.bert.tok_emb.weight
    with pytest.raises(ConfigError, match="no pooler"):
        mlm.bert.pool(hidden)


def test_padding_does_not_change_the_tokens() -> None:
    """A padded row gives its tokens the states they have alone (bidirectional, masked keys)."""
    torch.manual_seed(0)
    model = Bert(BertConfig.from_name("tiny")).eval()
    ids, mask, _ = _batch(model.config)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask)[1, :6]
        alone = model(ids[1:, :6])[0]
        unmasked = model(ids)[1, :6]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)  # the padding would be seen otherwise


def test_attention_is_bidirectional_and_segments_matter() -> None:
    torch.manual_seed(0)
    model = Bert(BertConfig.from_name("tiny")).eval()
    ids, _, types = _batch(model.config)
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % model.config.vocab_size
    with torch.no_grad():
        # The first token sees the last one: no causal mask.
        assert not torch.allclose(model(ids)[:, 0], model(changed)[:, 0], atol=1e-4)
        assert not torch.allclose(model(ids), model(ids, token_type_ids=types), atol=1e-4)
        torch.testing.assert_close(model(ids), model(ids, token_type_ids=torch.zeros_like(ids)))


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_tanh"])
def test_math_and_sdpa_paths_agree(hidden_act: str) -> None:
    torch.manual_seed(0)
    sdpa = BertForPreTraining(BertConfig.from_name("tiny", hidden_act=hidden_act)).eval()
    math = BertForPreTraining(
        BertConfig.from_name("tiny", hidden_act=hidden_act, attn_impl="math")
    ).eval()
    math.load_state_dict(sdpa.state_dict())
    ids, mask, types = _batch(sdpa.config)
    with torch.no_grad():
        a = sdpa(ids, attention_mask=mask, token_type_ids=types)
        b = math(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(a.mlm, b.mlm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.nsp, b.nsp, rtol=1e-5, atol=1e-5)


def test_init_and_padding_row() -> None:
    torch.manual_seed(0)
    model = Bert(BertConfig.from_name("tiny", d_model=256, n_heads=4))
    assert model.tok_emb.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.tok_emb.weight[0].abs().sum() == 0  # pad_id 0
    assert model.blocks[0].mlp.up_proj.bias.abs().sum() == 0
    # The padding row gets no gradient from the lookup.
    model(torch.tensor([[0, 5, 0]])).sum().backward()
    assert model.tok_emb.weight.grad is not None
    assert model.tok_emb.weight.grad[0].abs().sum() == 0
    assert model.tok_emb.weight.grad[5].abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_ids=torch.zeros(2, 129, dtype=torch.long)), "129 tokens > max_seq_len 128"),
        (dict(input_ids=torch.full((1, 4), 512)), r"input_ids must lie in 0\.\.511.*got 512"),
        (dict(input_ids=torch.full((1, 4), -1)), r"input_ids .*got -1"),
        (dict(input_ids=torch.zeros(4, dtype=torch.long)), r"\(batch, seq_len\)"),
        (
            dict(
                input_ids=torch.zeros(1, 4, dtype=torch.long), token_type_ids=torch.full((1, 4), 2)
            ),
            r"token_type_ids must lie in 0\.\.1 \(type_vocab_size 2\), got 2",
        ),
        (
            dict(input_ids=torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5)),
            "attention_mask must have the shape of input_ids",
        ),
        (
            dict(
                input_ids=torch.zeros(1, 4, dtype=torch.long),
                position_ids=torch.tensor([[0, 1, 2, 128]]),
            ),
            r"position_ids must lie in 0\.\.127",
        ),
    ],
)
def test_bad_inputs_raise_before_torch(kwargs: dict, message: str) -> None:
    model = Bert(BertConfig.from_name("tiny"))
    ids = kwargs.pop("input_ids")
    with pytest.raises(ConfigError, match=message):
        model(ids, **kwargs)


def test_parameter_counts_match_the_encoder_and_the_registry() -> None:
    for preset in ("tiny", "minilm-l6"):
        config = BertConfig.from_name(preset)
        with torch.device("meta"):
            model = Bert(config)
        counts = parameter_counts(config)
        assert counts["total"] == sum(p.numel() for p in model.parameters())
        assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    arch = registry.get("bert")
    assert arch.causal_lm is False and arch.hf is not None and arch.model_cls is Bert
    report = info(BertConfig.from_name("bert-base"))
    assert report["architecture"] == "bert"
    assert report["parameters"]["total"] == 109_482_240  # bert-base-uncased's BertModel
    assert asdict(registry.config_from_dict(registry.config_to_dict(BertConfig()))) == asdict(
        BertConfig()
    )


@pytest.mark.parity
def test_parameter_counts_equal_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    for preset in ("bert-base", "minilm-l6"):
        c = BertConfig.from_name(preset)
        hf_config = transformers.BertConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.d_model,
            num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads,
            intermediate_size=c.d_ff,
        )
        with torch.device("meta"):
            hf = transformers.BertModel(hf_config)
        assert parameter_counts(c)["total"] == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize(
    "module",
    ["groundwork.models.bert", "groundwork.models.bert_hf", "groundwork.evaluate.embeddings"],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
