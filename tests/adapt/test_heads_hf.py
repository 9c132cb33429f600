"""Parity with Hugging Face ``transformers``' task heads, built offline from a small odd config
with random weights: ``BertForSequenceClassification``, ``BertForTokenClassification``,
``BertForMultipleChoice``, ``GPT2ForSequenceClassification`` and
``LlamaForSequenceClassification`` converted by ``head_from_hf`` give the same logits and the same
gradients (fp32, ``rtol=atol=1e-5``), on a right-padded batch; ``layer_states`` equals
``output_hidden_states=True``. The other way, ``head_to_hf`` and ``export_head_hf`` turn our heads
into those classes (same logits, through ``save_pretrained`` and the ``AutoModelFor*`` classes
too), and import after export gives the same state, key for key."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from groundwork.adapt import (
    HF_HEADS,
    MultipleChoiceClassifier,
    SequenceClassifier,
    TokenClassifier,
    export_head_hf,
    head_for,
    head_from_hf,
    head_from_hf_state_dict,
    head_to_hf,
    hf_head_class,
    hf_head_key_map,
    hf_head_state_dict,
    layer_states,
)
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import config_from_hf_dict, from_hf, hf_adapter
from groundwork.models import (
    GPT,
    Bert,
    BertForMaskedLM,
    BertForPreTraining,
    Llama,
    T5Config,
    T5Encoder,
)

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)
VOCAB, PAD = 1001, 0
NUM_LABELS = 5
HEADS = {
    "BertForSequenceClassification": SequenceClassifier,
    "BertForTokenClassification": TokenClassifier,
    "BertForMultipleChoice": MultipleChoiceClassifier,
    "GPT2ForSequenceClassification": SequenceClassifier,
    "LlamaForSequenceClassification": SequenceClassifier,
}
AUTO = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "choice": "AutoModelForMultipleChoice",
}
"""The ``transformers`` auto class that loads each kind of head."""


def _hf_config(hf_class: str, **overrides: Any) -> Any:
    """Hidden 60, 3 heads, vocabulary 1001, 3 layers, no dropout, pad id 0."""
    common: dict[str, Any] = dict(
        num_labels=NUM_LABELS, pad_token_id=PAD, initializer_range=0.1, attn_implementation="eager"
    )
    if hf_class.startswith("Bert"):
        return transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=60,
            num_attention_heads=3,
            num_hidden_layers=3,
            intermediate_size=97,
            max_position_embeddings=40,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **{**common, **overrides},
        )
    if hf_class.startswith("GPT2"):
        return transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=60,
            n_head=3,
            n_layer=3,
            n_positions=40,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
            **{**common, **overrides},
        )
    return transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=60,
        num_attention_heads=3,
        num_key_value_heads=1,
        num_hidden_layers=3,
        intermediate_size=97,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        **{**common, **overrides},
    )


def _hf_model(hf_class: str, **overrides: Any) -> Any:
    torch.manual_seed(0)
    model = getattr(transformers, hf_class)(_hf_config(hf_class, **overrides)).eval()
    with torch.no_grad():  # the init leaves biases and norms at 0 and 1: move them
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def _batch(T: int = 13) -> dict[str, torch.Tensor]:
    """Three rows, two right-padded with the pad id; no real token is the pad id."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, VOCAB, (3, T), generator=generator)
    attention_mask = torch.ones(3, T, dtype=torch.long)
    attention_mask[1, 9:] = 0
    attention_mask[2, 4:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, PAD)
    return dict(input_ids=input_ids, attention_mask=attention_mask)


def _batch_for(hf_class: str) -> dict[str, torch.Tensor]:
    """:func:`_batch`; for a multiple-choice head, two examples of three candidates
    ``(2, 3, T)`` (the three rows, then the three rows in reverse)."""
    batch = _batch()
    if HF_HEADS[hf_class].kind != "choice":
        return batch
    return {k: torch.stack([v, v.flip(0)]) for k, v in batch.items()}  # (B=2, C=3, T)


def _compare(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> None:
    """Equal logits; for token logits, at the real tokens (padding states are not compared)."""
    if got.dim() == 3:
        got, want = got[mask.bool()], want[mask.bool()]
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("hf_class", list(HEADS))
def test_logits_and_gradients_equal_transformers(hf_class: str) -> None:
    hf = _hf_model(hf_class)
    ours = head_from_hf(hf)
    assert type(ours) is HEADS[hf_class] and not ours.training
    assert ours.num_labels == (1 if HF_HEADS[hf_class].kind == "choice" else NUM_LABELS)
    batch = _batch_for(hf_class)
    mask = batch["attention_mask"]

    hf_logits = hf(**batch).logits
    our_logits = ours(batch["input_ids"], batch["attention_mask"])
    _compare(our_logits, hf_logits, mask)

    # Gradients of a loss reading every (real) logit, w.r.t. every parameter.
    torch.manual_seed(2)
    weights = torch.randn_like(our_logits)
    if our_logits.dim() == 3:
        weights = weights * mask.unsqueeze(-1)
    (weights * hf_logits).sum().backward()
    (weights * our_logits).sum().backward()
    theirs = dict(hf.named_parameters())
    key_map = hf_head_key_map(ours, hf_class)
    adapter = hf_adapter(ours.backbone.config)
    compared = 0
    for name, param in ours.named_parameters():
        hf_name = key_map[name]
        hf_grad = theirs[hf_name].grad
        assert param.grad is not None and hf_grad is not None, name
        if adapter.transposed(hf_name):
            hf_grad = hf_grad.t()
        torch.testing.assert_close(param.grad, hf_grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")
        compared += 1
    assert compared == len(theirs)  # every parameter of theirs has one of ours


@pytest.mark.parity
def test_sequence_heads_read_the_last_real_token() -> None:
    """A row's logits do not depend on the padding appended to it."""
    for hf_class in ("GPT2ForSequenceClassification", "LlamaForSequenceClassification"):
        ours = head_from_hf(_hf_model(hf_class))
        batch = _batch()
        with torch.no_grad():
            padded = ours(batch["input_ids"], batch["attention_mask"])
            alone = ours(batch["input_ids"][2:, :4])  # row 2 without its padding, no mask
        torch.testing.assert_close(padded[2:], alone, **TOL)


@pytest.mark.parity
def test_bert_sentence_pairs_and_classifier_dropout() -> None:
    hf = _hf_model("BertForSequenceClassification", classifier_dropout=0.3)
    ours = head_from_hf(hf)
    assert ours.dropout.p == 0.3
    batch = _batch()
    segments = torch.zeros_like(batch["input_ids"])
    segments[0, 6:] = 1
    with torch.no_grad():
        want = hf(**batch, token_type_ids=segments).logits
        got = ours(batch["input_ids"], batch["attention_mask"], token_type_ids=segments)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parity
@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "t5"])
def test_layer_states_equal_output_hidden_states(family: str) -> None:
    torch.manual_seed(0)
    if family == "gpt2":
        hf = transformers.GPT2LMHeadModel(_hf_config("GPT2LMHeadModel"))
        kind: type = GPT
    elif family == "llama":
        hf = transformers.LlamaForCausalLM(_hf_config("LlamaForCausalLM"))
        kind = Llama
    elif family == "bert":
        hf = transformers.BertForMaskedLM(_hf_config("BertForMaskedLM"))
        kind = BertForMaskedLM
    else:
        config = transformers.T5Config(
            vocab_size=VOCAB, d_model=60, d_kv=20, num_heads=3, num_layers=3, d_ff=97
        )
        hf = transformers.T5EncoderModel(config)
        kind = T5Encoder
    hf.eval()
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(0.05 * torch.randn_like(param))
    ours = from_hf(hf)
    assert type(ours) is kind
    batch = _batch()
    valid = batch["attention_mask"].bool()
    with torch.no_grad():
        want = hf(**batch, output_hidden_states=True).hidden_states
        got = layer_states(ours, batch["input_ids"], batch["attention_mask"])
    assert len(got) == len(want) == 4
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == (3, 13, 60)
        torch.testing.assert_close(g[valid], w[valid], **TOL, msg=lambda m, i=i: f"state {i}: {m}")


def test_the_state_dict_is_checked() -> None:
    hf = _hf_model("GPT2ForSequenceClassification")
    d, state = hf.config.to_dict(), hf.state_dict()
    with pytest.raises(CheckpointError, match=r"not a head we convert.*BertForSequence"):
        head_from_hf_state_dict(d, state, "GPT2ForTokenClassification")
    cls = "GPT2ForSequenceClassification"
    with pytest.raises(CheckpointError, match=r"missing key 'score\.weight'"):
        head_from_hf_state_dict(d, {k: v for k, v in state.items() if k != "score.weight"}, cls)
    with pytest.raises(CheckpointError, match=r"unexpected key 'score\.bias'"):
        head_from_hf_state_dict(d, {**state, "score.bias": torch.zeros(NUM_LABELS)}, cls)
    with pytest.raises(CheckpointError, match=r"score.weight: expected shape \(3, 60\)"):
        head_from_hf_state_dict({**d, "id2label": {0: "a", 1: "b", 2: "c"}}, state, cls)
    with pytest.raises(CheckpointError, match=r"transformer.h.0.ln_1.weight"):
        broken = {k: v for k, v in state.items() if k != "transformer.h.0.ln_1.weight"}
        head_from_hf_state_dict(d, broken, cls)


@pytest.mark.parity
def test_bert_multiple_choice_with_sentence_pairs() -> None:
    """Segment ids ``(B, C, T)`` are flattened with the candidates, as ``transformers`` does."""
    hf = _hf_model("BertForMultipleChoice", classifier_dropout=0.2)
    ours = head_from_hf(hf)
    assert isinstance(ours, MultipleChoiceClassifier) and ours.dropout.p == 0.2
    batch = _batch_for("BertForMultipleChoice")
    segments = torch.zeros_like(batch["input_ids"])
    segments[..., 3:] = 1
    with torch.no_grad():
        want = hf(**batch, token_type_ids=segments).logits
        got = ours(batch["input_ids"], batch["attention_mask"], token_type_ids=segments)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want, **TOL)


# Export: ours -> transformers ------------------------------------------------------------------


def _our_head(hf_class: str) -> Any:
    """Our head of ``hf_class``'s kind and family, built by ``head_for`` over a backbone of the
    test config, every parameter moved off its initial value; in eval mode."""
    spec = HF_HEADS[hf_class]
    config = config_from_hf_dict(_hf_config(hf_class).to_dict())
    backbone: Any
    if spec.model_type == "bert":
        backbone = Bert(config, pooler=spec.kind != "token")
    elif spec.model_type == "llama":
        backbone = Llama(dataclasses.replace(config, tie_embeddings=True))
    else:
        backbone = GPT(config)
    torch.manual_seed(3)
    head = head_for(backbone, spec.kind, 1 if spec.kind == "choice" else NUM_LABELS)
    with torch.no_grad():
        for param in head.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return head.eval()


def _labels(hf_class: str) -> list[str] | None:
    return None if HF_HEADS[hf_class].kind == "choice" else [f"c{i}" for i in range(NUM_LABELS)]


def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits  # type: ignore[no-any-return]


def _assert_same_state(got: torch.nn.Module, want: torch.nn.Module) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert list(got_state) == list(want_state)
    for key, tensor in want_state.items():
        assert torch.equal(got_state[key], tensor), key


@pytest.mark.parity
@pytest.mark.parametrize("hf_class", list(HEADS))
def test_head_to_hf_gives_our_logits_and_imports_back(hf_class: str) -> None:
    ours = _our_head(hf_class)
    assert hf_head_class(ours) == hf_class
    labels = _labels(hf_class)
    hf = head_to_hf(ours, labels)
    assert type(hf).__name__ == hf_class and not hf.training
    if labels is not None:
        assert hf.config.id2label == dict(enumerate(labels))
        assert hf.config.label2id == {name: i for i, name in enumerate(labels)}
    batch = _batch_for(hf_class)
    with torch.no_grad():
        got = ours(batch["input_ids"], batch["attention_mask"])
    _compare(got, _logits(hf, batch), batch["attention_mask"])
    back = head_from_hf(hf)  # import(export(head)): the same head, key for key
    assert type(back) is type(ours) and not back.training
    assert back.num_labels == ours.num_labels and back.dropout.p == ours.dropout.p
    _assert_same_state(back, ours)
    # and export(import(theirs)) is theirs
    theirs = _hf_model(hf_class)
    again = hf_head_state_dict(head_from_hf(theirs))
    assert set(again) == set(theirs.state_dict())
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(again[key], tensor), key


@pytest.mark.parity
@pytest.mark.parametrize("hf_class", list(HEADS))
def test_export_and_save_pretrained_load_with_the_auto_classes(
    hf_class: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    ours = _our_head(hf_class)
    labels = _labels(hf_class)
    head_to_hf(ours, labels).save_pretrained(tmp_path / "saved")
    export_head_hf(ours, tmp_path / "exported", labels)  # no transformers needed to write
    batch = _batch_for(hf_class)
    with torch.no_grad():
        want = ours(batch["input_ids"], batch["attention_mask"])
    auto = getattr(transformers, AUTO[HF_HEADS[hf_class].kind])
    for directory in ("saved", "exported"):
        hf, info = auto.from_pretrained(
            tmp_path / directory, attn_implementation="eager", output_loading_info=True
        )
        assert type(hf).__name__ == hf_class, directory
        assert not info["missing_keys"] and not info["unexpected_keys"], (directory, info)
        if labels is not None:
            assert hf.config.id2label == dict(enumerate(labels)), directory
        _compare(want, _logits(hf.eval(), batch), batch["attention_mask"])
    directory = tmp_path / "exported"
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == [hf_class]
    back = head_from_hf_state_dict(config, load_file(directory / "model.safetensors"), hf_class)
    _assert_same_state(back, ours)


@pytest.mark.parity
@pytest.mark.parametrize("pretrained", [BertForMaskedLM, BertForPreTraining])
def test_heads_over_a_pretrained_bert_export_the_encoder_and_pooler(pretrained: type) -> None:
    """The pretraining heads are left out; the pooler is the encoder's (``BertForPreTraining``)
    or the head's own (``BertForMaskedLM`` has none)."""
    config = config_from_hf_dict(_hf_config("BertForSequenceClassification").to_dict())
    torch.manual_seed(4)
    backbone = pretrained(config).eval()
    heads = {
        "BertForSequenceClassification": SequenceClassifier(backbone, NUM_LABELS, dropout=0.0),
        "BertForTokenClassification": TokenClassifier(backbone, NUM_LABELS, dropout=0.0),
        "BertForMultipleChoice": MultipleChoiceClassifier(backbone, dropout=0.0),
    }
    for hf_class, head in heads.items():
        with torch.no_grad():
            for param in head.parameters():
                param.add_(0.05 * torch.randn_like(param))
        key_map = hf_head_key_map(head, hf_class)
        assert not [k for k in key_map if k.startswith(("backbone.mlm.", "backbone.nsp."))]
        pooler = {k for k, v in key_map.items() if v.startswith("bert.pooler.")}
        if HF_HEADS[hf_class].kind == "token":
            assert not pooler
        elif pretrained is BertForMaskedLM:
            assert pooler == {"pooler.weight", "pooler.bias"}  # the head's own
        else:
            assert pooler == {"backbone.bert.pooler.weight", "backbone.bert.pooler.bias"}
        hf = head_to_hf(head)
        assert type(hf).__name__ == hf_class
        batch = _batch_for(hf_class)
        with torch.no_grad():
            got = head(batch["input_ids"], batch["attention_mask"])
        _compare(got, _logits(hf, batch), batch["attention_mask"])


def test_heads_transformers_has_no_class_for_are_refused(tmp_path: Path) -> None:
    from groundwork.models import BertConfig, GPTConfig

    gpt, bert = GPT(GPTConfig.from_name("tiny")), Bert(BertConfig.from_name("tiny"))
    refused = {
        r"no head class that mean-pools": SequenceClassifier(bert, 2, "mean"),
        r"no head class that mean-pools.*'last'": SequenceClassifier(gpt, 2, "mean"),
        r"BertForSequenceClassification pools with 'cls', this head with 'last'": (
            SequenceClassifier(bert, 2, "last")
        ),
        r"no transformers class we export holds a token head over a GPT": TokenClassifier(gpt, 2),
        r"holds a choice head over a GPT: we export .*BertForMultipleChoice": (
            MultipleChoiceClassifier(gpt)
        ),
        r"holds a sequence head over a T5Encoder": SequenceClassifier(
            T5Encoder(T5Config.from_name("tiny")), 2, "last"
        ),
        r"score layer has no bias, this head's classifier has one": SequenceClassifier(
            gpt, 2, bias=True
        ),
        r"classifier layer has a bias, this head's classifier has none": TokenClassifier(
            bert, 2, bias=False
        ),
    }
    for message, head in refused.items():
        with pytest.raises(ConfigError, match=message):
            hf_head_class(head)
        with pytest.raises(ConfigError, match=message):
            export_head_hf(head, tmp_path / "out")
        assert not (tmp_path / "out").exists()  # nothing written
    head = SequenceClassifier(bert, 3)
    with pytest.raises(ConfigError, match=r"labels must be 3 distinct names.*\['a', 'b'\]"):
        export_head_hf(head, tmp_path / "out", ["a", "b"])
    with pytest.raises(ConfigError, match=r"labels must be 3 distinct names"):
        head_to_hf(head, ["a", "b", "a"])
    with pytest.raises(ConfigError, match=r"multiple-choice head .* has no label names"):
        head_to_hf(MultipleChoiceClassifier(bert), ["a", "b"])
    assert not (tmp_path / "out").exists()


def test_the_decoders_pad_id() -> None:
    """GPT-2's and Llama's classes find the last token by ``pad_token_id``: 0 unless given."""
    from groundwork.models import GPTConfig

    head = head_for(GPT(GPTConfig.from_name("tiny")), "sequence", 2)
    assert head_to_hf(head).config.pad_token_id == 0
    assert head_to_hf(head, pad_token_id=7).config.pad_token_id == 7
    with pytest.raises(ConfigError, match="pad_token_id 99999 is outside the vocabulary"):
        head_to_hf(head, pad_token_id=99999)


def test_the_key_map_is_checked() -> None:
    from groundwork.models import BertConfig, GPTConfig

    bert, gpt = Bert(BertConfig.from_name("tiny")), GPT(GPTConfig.from_name("tiny"))
    with pytest.raises(ConfigError, match=r"BertForTokenClassification is a token head"):
        hf_head_key_map(SequenceClassifier(bert, 2), "BertForTokenClassification")
    with pytest.raises(ConfigError, match=r"holds a bert model: .* not a GPT"):
        hf_head_key_map(SequenceClassifier(gpt, 2), "BertForSequenceClassification")
    with pytest.raises(ConfigError, match=r"holds a gpt2 model: .* not a Bert"):
        hf_head_key_map(SequenceClassifier(bert, 2), "GPT2ForSequenceClassification")
    with pytest.raises(CheckpointError, match="not a head we convert"):
        hf_head_key_map(SequenceClassifier(bert, 2), "BertForQuestionAnswering")
    # a BERT built without a pooler: the head's own is BERT's pooler
    own = SequenceClassifier(Bert(BertConfig.from_name("tiny"), pooler=False), 2)
    assert own.pooler is not None
    key_map = hf_head_key_map(own, "BertForSequenceClassification")
    assert key_map["pooler.weight"] == "bert.pooler.dense.weight"
    assert SequenceClassifier(bert, 2).pooler is None
