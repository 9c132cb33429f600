"""Task heads without a reference model: pooling ignores padding, ``head_for`` picks each
family's defaults, a multiple-choice head scores every candidate as a sequence and trains through
the sequence objective, and bad input is refused with a ``ConfigError`` that says what to do."""

import pytest
import torch
from torch import nn

from groundwork.adapt import (
    MultipleChoiceClassifier,
    SequenceClassifier,
    TokenClassifier,
    head_for,
    pool,
)
from groundwork.errors import ConfigError, UnknownNameError
from groundwork.models import (
    GPT,
    Bert,
    BertConfig,
    BertForMaskedLM,
    GPTConfig,
    Llama,
    LlamaConfig,
    T5Config,
    T5Encoder,
)


def _backbones() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "gpt": GPT(GPTConfig.from_name("tiny")).eval(),
        "llama": Llama(LlamaConfig.from_name("tiny")).eval(),
        "bert": Bert(BertConfig.from_name("tiny")).eval(),
        "t5": T5Encoder(T5Config.from_name("tiny", dropout=0.0)).eval(),
    }


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 500, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return ids, mask


def test_pool() -> None:
    h = torch.arange(12.0).reshape(2, 3, 2)  # (B=2, T=3, d=2)
    m = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pool(h, m, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool(h, m, "last"), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))


POOLED = [(f, p) for f in ("gpt", "llama", "bert", "t5") for p in ("mean", "last")]


@pytest.mark.parametrize(("family", "pooling"), [*POOLED, ("bert", "cls")])
def test_padding_does_not_change_the_logits(family: str, pooling: str) -> None:
    """Changing the ids at padded positions changes nothing, whatever the pooling."""
    backbone = _backbones()[family]
    head = SequenceClassifier(backbone, 3, pooling, 0.0)  # type: ignore[arg-type]
    token_head = TokenClassifier(backbone, 4, 0.0)
    ids, mask = _padded_batch()
    other = torch.where(mask.bool(), ids, torch.randint_like(ids, 1, 500))
    assert not torch.equal(ids, other)
    with torch.no_grad():
        logits = head(ids, mask)
        assert logits.shape == (3, 3)
        torch.testing.assert_close(head(other, mask), logits, rtol=1e-5, atol=1e-6)
        # Row 2 alone, without its padding, gets the same logits.
        torch.testing.assert_close(head(ids[2:, :2]), logits[2:], rtol=1e-5, atol=1e-6)
        tokens = token_head(ids, mask)
        assert tokens.shape == (3, 9, 4)
        real = mask.bool()
        torch.testing.assert_close(token_head(other, mask)[real], tokens[real])


def test_mean_pooling_is_the_mean_of_the_real_tokens() -> None:
    backbone = _backbones()["llama"]
    head = SequenceClassifier(backbone, 2, "mean", 0.0, bias=False)
    ids, mask = _padded_batch()
    with torch.no_grad():
        hidden = backbone.model(ids, attention_mask=mask, position_ids=None, kv_cache=None)
        expected = torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(3)])
        torch.testing.assert_close(head(ids, mask), head.classifier(expected))


def test_cls_uses_berts_pooler_or_its_own() -> None:
    config = BertConfig.from_name("tiny")
    bert = Bert(config).eval()
    head = SequenceClassifier(bert, 2, "cls", 0.0)
    assert head.pooler is None
    ids, mask = _padded_batch()
    with torch.no_grad():
        hidden = bert(ids, attention_mask=mask)
        torch.testing.assert_close(head(ids, mask), head.classifier(bert.pool(hidden)))
    mlm = BertForMaskedLM(config)
    assert mlm.bert.pooler is None
    own = SequenceClassifier(mlm, 2)  # BERT's default: cls, with a new pooler
    assert own.pooling == "cls" and own.pooler is not None
    assert own(ids, mask).shape == (3, 2)


def test_a_head_trains_its_backbone() -> None:
    backbone = GPT(GPTConfig.from_name("tiny"))
    head = SequenceClassifier(backbone, 2, "last", dropout=0.1)
    assert head.training and backbone.training
    ids, mask = _padded_batch()
    nn.functional.cross_entropy(head(ids, mask), torch.tensor([0, 1, 1])).backward()
    assert backbone.wte.weight.grad is not None and head.classifier.weight.grad is not None
    assert SequenceClassifier(backbone.eval(), 2).training is False  # the backbone's mode


def test_head_for_picks_the_family_defaults() -> None:
    bert = head_for("bert:tiny", "sequence", 3)
    assert isinstance(bert, SequenceClassifier) and isinstance(bert.backbone, Bert)
    assert bert.pooling == "cls" and bert.classifier.bias is not None
    assert bert.dropout.p == BertConfig.from_name("tiny").dropout
    gpt = head_for("gpt:tiny", "sequence", 2)
    assert isinstance(gpt, SequenceClassifier) and gpt.pooling == "last"
    assert gpt.classifier.bias is None and gpt.dropout.p == 0.0
    llama = head_for(Llama(LlamaConfig.from_name("tiny")), "sequence", 2, "mean", dropout=0.2)
    assert isinstance(llama, SequenceClassifier)
    assert llama.pooling == "mean" and llama.dropout.p == 0.2
    t5 = head_for(_backbones()["t5"], "sequence", 2)
    assert isinstance(t5, SequenceClassifier) and t5.pooling == "mean"
    tagger = head_for("bert:tiny", "token", 9)
    assert isinstance(tagger, TokenClassifier) and tagger.num_labels == 9
    ids, mask = _padded_batch()
    assert tagger(ids, mask).shape == (3, 9, 9)


def test_bad_input_is_refused() -> None:
    bert, gpt = _backbones()["bert"], _backbones()["gpt"]
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        SequenceClassifier(bert, 2, "max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown pooling 'lst'.*last"):
        head_for(gpt, "sequence", 2, "lst")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"pooling 'cls' reads BERT's.*use 'last'"):
        SequenceClassifier(gpt, 2, "cls")
    for bad in (1, 0, -3, True, 2.0):
        with pytest.raises(ConfigError, match="num_labels must be an integer >= 2"):
            SequenceClassifier(gpt, bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="num_labels must be an integer >= 2"):
            TokenClassifier(bert, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        TokenClassifier(bert, 2, 1.0)
    with pytest.raises(ConfigError, match="cannot read the hidden states of a Sequential"):
        SequenceClassifier(nn.Sequential(nn.Embedding(10, 4)), 2, "mean")
    with pytest.raises(ConfigError, match=r"unknown task kind 'tokens'.*token"):
        head_for(bert, "tokens", 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pooling applies to sequence labels only"):
        head_for(bert, "token", 2, "mean")
    with pytest.raises(UnknownNameError, match="'bert-tiny' is neither"):
        head_for("bert-tiny", "sequence", 2)
    ids, mask = _padded_batch()
    mask[1] = 0
    with pytest.raises(ConfigError, match="row 1 of the batch is all padding"):
        SequenceClassifier(gpt, 2)(ids, mask)


# Multiple choice -----------------------------------------------------------------------------


def _choice_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two examples of three candidates ``(2, 3, 9)``, some right-padded."""
    ids, mask = _padded_batch()  # (3, 9): full, 6 tokens, 2 tokens
    flipped = mask.flip(0)  # 2 tokens, 6 tokens, full
    return torch.stack([ids, ids.flip(0)]), torch.stack([mask, flipped])  # (B=2, C=3, T=9)


@pytest.mark.parametrize(
    ("family", "pooling"), [("gpt", "last"), ("llama", "mean"), ("t5", "mean"), ("bert", "cls")]
)
def test_a_choice_head_scores_each_candidate_as_a_sequence(family: str, pooling: str) -> None:
    """Candidate ``c`` of example ``b`` gets the score its tokens alone, unpadded, get: the
    ``B * C`` candidates are independent sequences."""
    backbone = _backbones()[family]
    head = MultipleChoiceClassifier(backbone, pooling, 0.0)  # type: ignore[arg-type]
    assert head.num_labels == 1 and head.classifier.out_features == 1
    ids, mask = _choice_batch()
    with torch.no_grad():
        logits = head(ids, mask)
        assert logits.shape == (2, 3)
        for b in range(2):
            for c in range(3):
                n = int(mask[b, c].sum())
                alone = head(ids[b : b + 1, c : c + 1, :n])  # (1, 1, n), no padding
                torch.testing.assert_close(alone[0, 0], logits[b, c], rtol=1e-5, atol=1e-6)


def test_a_bert_choice_head_is_the_classifier_on_the_pooled_candidates() -> None:
    """``BertForMultipleChoice``'s computation, written out: flatten, pool, score, reshape."""
    bert = _backbones()["bert"]
    head = MultipleChoiceClassifier(bert, dropout=0.0)
    assert head.pooling == "cls" and head.pooler is None
    ids, mask = _choice_batch()
    segments = torch.zeros_like(ids)
    segments[..., 4:] = 1
    with torch.no_grad():
        hidden = bert(
            ids.view(6, 9), attention_mask=mask.view(6, 9), token_type_ids=segments.view(6, 9)
        )
        want = head.classifier(bert.pool(hidden)).view(2, 3)  # (B * C, 1) -> (B, C)
        torch.testing.assert_close(head(ids, mask, token_type_ids=segments), want)


def test_a_choice_head_trains_through_the_classification_objective() -> None:
    """The sequence objective, unchanged: a dict batch with ``labels`` ``(B,)``, the index of the
    right candidate; one optimiser step lowers the loss on that batch."""
    from groundwork.train.objectives import ClassificationObjective

    torch.manual_seed(0)
    head = head_for(Bert(BertConfig.from_name("tiny")), "choice", 1, dropout=0.0)
    assert isinstance(head, MultipleChoiceClassifier) and head.training
    ids, mask = _choice_batch()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([2, 0])}
    objective = ClassificationObjective()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    out = objective(head, batch)
    logits = head(ids, mask)
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(logits, batch["labels"]))
    assert out.items == 2 and out.tokens == int(mask.sum())
    assert 0.0 <= float(out.metrics["accuracy"]) <= 1.0
    out.loss.backward()
    assert head.classifier.weight.grad is not None
    assert head.backbone.tok_emb.weight.grad is not None  # the backbone trains too
    optimizer.step()
    with torch.no_grad():
        assert objective(head, batch).loss.item() < out.loss.item()


def test_head_for_builds_a_choice_head_with_the_family_defaults() -> None:
    bert = head_for("bert:tiny", "choice", 1)
    assert isinstance(bert, MultipleChoiceClassifier) and bert.pooling == "cls"
    assert bert.classifier.bias is not None
    assert bert.dropout.p == BertConfig.from_name("tiny").dropout
    gpt = head_for("gpt:tiny", "choice", 1)
    assert isinstance(gpt, MultipleChoiceClassifier) and gpt.pooling == "last"
    assert gpt.classifier.bias is None and gpt.dropout.p == 0.0
    llama = head_for(_backbones()["llama"], "choice", 1, "mean")
    assert isinstance(llama, MultipleChoiceClassifier) and llama.pooling == "mean"


def test_bad_choice_input_is_refused() -> None:
    bert, gpt = _backbones()["bert"], _backbones()["gpt"]
    for bad in (2, 4, 0):
        with pytest.raises(ConfigError, match=r"num_labels must be 1, got " + str(bad)):
            head_for(bert, "choice", bad)
    with pytest.raises(ConfigError, match=r"pooling 'cls' reads BERT's"):
        MultipleChoiceClassifier(gpt, "cls")
    head = MultipleChoiceClassifier(gpt)
    ids, mask = _choice_batch()
    with pytest.raises(
        ConfigError, match=r"input_ids \(batch, num_choices, seq_len\), got shape \(2, 3\)"
    ):
        head(ids[:, :, 0])
    with pytest.raises(ConfigError, match=r"input_ids \(batch, num_choices, seq_len\).*\(6, 9\)"):
        head(ids.view(6, 9), mask.view(6, 9))
    with pytest.raises(ConfigError, match=r"attention_mask must have the shape of input_ids"):
        head(ids, mask[:, :2])
    with pytest.raises(ConfigError, match=r"token_type_ids must have the shape of input_ids"):
        MultipleChoiceClassifier(bert)(
            ids, mask, token_type_ids=torch.zeros(2, 9, dtype=torch.long)
        )
    mask[1, 2] = 0
    with pytest.raises(ConfigError, match="row 5 of the batch is all padding"):
        head(ids, mask)  # candidate (1, 2) is row 1 * 3 + 2 of the flattened batch


def test_docstring_examples() -> None:
    import doctest

    from groundwork.adapt import heads, heads_hf

    for module in (heads, heads_hf):
        assert doctest.testmod(module).failed == 0
