"""Parity with Hugging Face ``transformers``: BERT's three classes built offline from a small odd
config, and the real all-MiniLM-L6-v2 checkpoint.

For each of ``BertModel``, ``BertForMaskedLM`` and ``BertForPreTraining``: ``from_hf`` gives the
matching class of ours with equal outputs (padding and segment ids included) and equal gradients,
``to_hf`` gives the matching ``transformers`` class back, and ``export_hf``/``import_hf`` go
through ``from_pretrained`` and ``save_pretrained``.
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
from groundwork.models.bert import Bert, BertConfig, BertForMaskedLM, BertForPreTraining
from groundwork.models.bert_hf import bert_key_map

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)
CLASSES = {
    "BertModel": Bert,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
}


def _hf_config(**overrides: Any) -> Any:
    kwargs = dict(
        vocab_size=1001,
        hidden_size=60,
        num_attention_heads=3,
        num_hidden_layers=3,
        intermediate_size=97,
        type_vocab_size=2,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.1,
        attn_implementation="eager",
    )
    return transformers.BertConfig(**{**kwargs, **overrides})


def _hf_model(name: str, **overrides: Any) -> Any:
    torch.manual_seed(0)
    model = getattr(transformers, name)(_hf_config(**overrides)).eval()
    with torch.no_grad():  # the init leaves biases and LayerNorms at 0 and 1: move them
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _batch(T: int = 13) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 1001, (3, T), generator=generator)
    attention_mask = torch.ones(3, T, dtype=torch.long)
    attention_mask[1, 9:] = 0  # right padding
    attention_mask[2, 4:] = 0
    token_type_ids = torch.zeros(3, T, dtype=torch.long)
    token_type_ids[0, 6:] = 1  # sentence B
    token_type_ids[1, 5:9] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def _hf_outputs(name: str, out: Any) -> list[torch.Tensor]:
    if name == "BertModel":
        return [out.last_hidden_state, out.pooler_output]
    if name == "BertForMaskedLM":
        return [out.logits]
    return [out.prediction_logits, out.seq_relationship_logits]


def _our_outputs(model: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    ids = batch["input_ids"]
    kwargs = {k: v for k, v in batch.items() if k != "input_ids"}
    if isinstance(model, Bert):
        hidden = model(ids, **kwargs)
        return [hidden, model.pool(hidden)]
    if isinstance(model, BertForMaskedLM):
        return [model(ids, **kwargs)]
    out = model(ids, **kwargs)
    return [out.mlm, out.nsp]


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_from_hf_and_to_hf_give_the_same_outputs(name: str) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    assert type(ours) is CLASSES[name] and not ours.training
    assert hf_class_name(ours) == name
    batch = _batch()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(**batch))
        for got, want in zip(_our_outputs(ours, batch), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        back = to_hf(ours)
        assert type(back).__name__ == name
        for got, want in zip(_hf_outputs(name, back(**batch)), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        # Without a mask or segment ids, and with explicit positions (one document).
        ids = batch["input_ids"]
        positions = torch.arange(3, 16).unsqueeze(0)
        plain = _hf_outputs(name, hf(input_ids=ids, position_ids=positions))
        ours_plain = _our_outputs(ours, dict(input_ids=ids, position_ids=positions))
        for got, want in zip(ours_plain, plain, strict=True):
            torch.testing.assert_close(got, want, **TOL)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


@pytest.mark.parity
@pytest.mark.skipif(
    _version(transformers.__version__) < (5, 25),
    reason="transformers reads packed documents from BERT's position ids from 5.25 on",
)
def test_restarting_positions_are_packed_documents_as_in_transformers() -> None:
    """Position ids that restart inside a row, without an attention mask: transformers' mask
    keeps each packed document to itself, and so does ours (and a row's documents equal the
    documents scored alone)."""
    hf = _hf_model("BertModel")
    ours = from_hf(hf)
    ids = _batch()["input_ids"]  # (2, 13)
    positions = torch.cat([torch.arange(5), torch.arange(8)]).unsqueeze(0)  # two documents
    with torch.no_grad():
        want = hf(input_ids=ids, position_ids=positions).last_hidden_state
        got = ours(ids, position_ids=positions)
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got[:, 5:], ours(ids[:, 5:]), **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_gradients_equal_transformers(name: str) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    batch = _batch()
    torch.manual_seed(2)
    weights = [torch.randn_like(t) for t in _our_outputs(ours, batch)]

    def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor:
        """A weighted mean of every output (a scalar that depends on all of them)."""
        terms = [(w * o).mean() for w, o in zip(weights, outputs, strict=True)]
        return torch.stack(terms).sum()

    loss_hf = loss_of(_hf_outputs(name, hf(**batch)))
    loss_ours = loss_of(_our_outputs(ours, batch))
    torch.testing.assert_close(loss_ours, loss_hf, **TOL)
    loss_hf.backward()
    loss_ours.backward()
    hf_params = dict(hf.named_parameters())
    key_map = bert_key_map(ours.config)
    compared = 0
    for key, p in ours.named_parameters():
        hf_grad = hf_params[key_map[key]].grad
        assert p.grad is not None and hf_grad is not None, key
        torch.testing.assert_close(p.grad, hf_grad, **TOL)
        compared += 1
    assert compared == len(hf_params)


@pytest.mark.parity
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("name", ["BertForMaskedLM", "BertForPreTraining"])
def test_tied_and_untied_output_layers(name: str, tie: bool) -> None:
    hf = _hf_model(name, tie_word_embeddings=tie)
    ours = from_hf(hf)
    assert (ours.mlm.decoder.weight is ours.bert.tok_emb.weight) == tie
    batch = _batch()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(**batch))[0]
        torch.testing.assert_close(_our_outputs(ours, batch)[0], expected, **TOL)
        torch.testing.assert_close(_hf_outputs(name, to_hf(ours)(**batch))[0], expected, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CLASSES))
def test_export_hf_loads_in_from_pretrained_and_import_hf(name: str, tmp_path: Path) -> None:
    hf = _hf_model(name)
    ours = from_hf(hf)
    export_hf(ours, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == [name] and written["model_type"] == "bert"
    loaded = getattr(transformers, name).from_pretrained(tmp_path, attn_implementation="eager")
    back = import_hf(tmp_path)
    assert type(back) is CLASSES[name]
    batch = _batch()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(**batch))
        for got, want in zip(_hf_outputs(name, loaded.eval()(**batch)), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        for got, want in zip(_our_outputs(back.eval(), batch), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["BertForMaskedLM", "BertForPreTraining"])
def test_import_hf_reads_save_pretrained_output(name: str, tmp_path: Path) -> None:
    hf = _hf_model(name)
    hf.save_pretrained(tmp_path)
    ours = import_hf(tmp_path).eval()
    assert type(ours) is CLASSES[name]
    batch = _batch()
    with torch.no_grad():
        expected = _hf_outputs(name, hf(**batch))
        for got, want in zip(_our_outputs(ours, batch), expected, strict=True):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parity
def test_real_minilm_equals_transformers(minilm_dir: Path) -> None:
    from groundwork.tokenize import load_tokenizer

    ours = import_hf(minilm_dir).eval()
    assert isinstance(ours, Bert)
    hf = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    tokenizer = load_tokenizer(minilm_dir / "tokenizer.json")
    texts = ["To be, or not to be, that is the question.", "Friends, Romans, countrymen!"]
    rows = [[101, *tokenizer.encode(t), 102] for t in texts]  # [CLS] ... [SEP]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask)
        hidden = ours(ids, attention_mask=mask)
        torch.testing.assert_close(hidden, out.last_hidden_state, **TOL)
        torch.testing.assert_close(ours.pool(hidden), out.pooler_output, **TOL)


# ----------------------------------------------------------------------------------------------
# Adapter, config and errors


def test_the_adapter_maps_every_key_of_every_class() -> None:
    arch = registry.get("bert")
    assert arch.hf is not None and dict(arch.hf.hf_classes) == CLASSES
    for overrides in ({}, {"tie_embeddings": False}, {"n_layers": 3}):
        config = arch.config("tiny", **overrides)
        key_map = bert_key_map(config)
        assert len(set(key_map.values())) == len(key_map), "two keys map to one"
        for cls in CLASSES.values():
            with torch.device("meta"):
                model = cls(config)
            assert set(model.state_dict()) <= set(key_map), cls.__name__
        assert config_from_hf_dict(hf_config_dict(config)) == config


def test_hf_config_dict_names_the_class() -> None:
    config = BertConfig.from_name("tiny")
    d = hf_config_dict(config)
    assert d["architectures"] == ["BertModel"] and d["model_type"] == "bert"
    assert hf_config_dict(config, hf_class="BertForMaskedLM")["architectures"] == [
        "BertForMaskedLM"
    ]
    assert (d["hidden_act"], d["pad_token_id"], d["max_position_embeddings"]) == ("gelu", 0, 128)


def test_unsupported_classes_and_options_are_refused(tmp_path: Path) -> None:
    classifier = transformers.BertForSequenceClassification(_hf_config())
    with pytest.raises(
        CheckpointError,
        match=r"BertForSequenceClassification is not supported.*"
        r"BertModel, BertForMaskedLM, BertForPreTraining",
    ):
        from_hf(classifier)
    with pytest.raises(CheckpointError, match="position_embedding_type 'relative_key'"):
        from_hf(transformers.BertModel(_hf_config(position_embedding_type="relative_key")))
    with pytest.raises(CheckpointError, match="is_decoder"):
        config_from_hf_dict({**hf_config_dict(BertConfig.from_name("tiny")), "is_decoder": True})
    with pytest.raises(CheckpointError, match="hidden_act 'relu'"):
        config_from_hf_dict({**hf_config_dict(BertConfig.from_name("tiny")), "hidden_act": "relu"})
    # A checkpoint of one class does not load as another: the keys say which it is.
    export_hf(BertForPreTraining(BertConfig.from_name("tiny")), tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**written, "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match=r"missing key 'embeddings\.word_embeddings\.weight'"):
        import_hf(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({**written, "architectures": ["BertForMaskedLM"]})
    )
    with pytest.raises(CheckpointError, match=r"unexpected key 'bert\.pooler\.dense"):
        import_hf(tmp_path)
