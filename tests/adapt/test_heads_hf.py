"""Parity with Hugging Face ``transformers``' task heads, built offline from a small odd config
with random weights: ``BertForSequenceClassification``, ``BertForTokenClassification``,
``GPT2ForSequenceClassification`` and ``LlamaForSequenceClassification`` converted by
``head_from_hf`` give the same logits and the same gradients (fp32, ``rtol=atol=1e-5``), on a
right-padded batch; and ``layer_states`` equals ``output_hidden_states=True``."""

from typing import Any

import pytest
import torch

from groundwork.adapt import (
    SequenceClassifier,
    TokenClassifier,
    head_from_hf,
    head_from_hf_state_dict,
    hf_head_key_map,
    layer_states,
)
from groundwork.errors import CheckpointError, ConfigError
from groundwork.interop.hf import from_hf, hf_adapter
from groundwork.models import GPT, Bert, BertForMaskedLM, Llama, T5Encoder

transformers = pytest.importorskip("transformers")

TOL = dict(rtol=1e-5, atol=1e-5)
VOCAB, PAD = 1001, 0
NUM_LABELS = 5
HEADS = {
    "BertForSequenceClassification": SequenceClassifier,
    "BertForTokenClassification": TokenClassifier,
    "GPT2ForSequenceClassification": SequenceClassifier,
    "LlamaForSequenceClassification": SequenceClassifier,
}


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
    assert ours.num_labels == NUM_LABELS
    batch = _batch()
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


def test_key_map_needs_the_base_model() -> None:
    from groundwork.models.bert import BertConfig

    head = SequenceClassifier(BertForMaskedLM(BertConfig.from_name("tiny")), 2)
    with pytest.raises(ConfigError, match="backbone must be a Bert encoder"):
        hf_head_key_map(head, "BertForSequenceClassification")
    assert "pooler.weight" in dict(head.named_parameters())  # a pooler of its own
    assert isinstance(SequenceClassifier(Bert(BertConfig.from_name("tiny")), 2).pooler, type(None))
