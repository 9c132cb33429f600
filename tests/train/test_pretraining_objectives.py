"""Encoder and encoder-decoder pretraining with stand-in models: the masked-LM, MLM + NSP and
sequence-to-sequence objectives against direct cross-entropies, their call conventions, the
BERT and T5 data units (batch keys, token types, fixed validation that takes nothing from the
engine's generator), real WordPiece whole-word masking on Shakespeare, and short engine runs."""

import doctest
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groundwork import corpus
from groundwork.errors import TrainingError
from groundwork.tokenize import Tokenizer
from groundwork.train import (
    IGNORE_INDEX,
    BertPretrainingData,
    MaskedLMObjective,
    PretrainingObjective,
    Seq2SeqObjective,
    SpanCorruptionData,
    TokenMasker,
    TrainConfig,
    chunk_segments,
    masked_lm_loss,
    restore_spans,
    shift_right,
    train,
    wordpiece_continuation_ids,
)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V = 50


class TinyEncoder(nn.Module):
    """Token + token-type embeddings, a mix with the sequence mean, an MLM head and, with
    ``nsp``, a 2-way head on the mean: returns ``logits`` or ``(mlm_logits, nsp_logits)``."""

    def __init__(self, vocab: int = V, d: int = 16, nsp: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.types = nn.Embedding(2, d)
        self.mix = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, vocab)
        self.nsp = nn.Linear(d, 2) if nsp else None
        self.calls: list[set[str]] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> Any:
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        self.calls.append({"input_ids"} | {k for k, v in given.items() if v is not None})
        h = self.embed(input_ids)  # (B, T, D)
        if token_type_ids is not None:
            h = h + self.types(token_type_ids)
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # (B, D)
        h = torch.tanh(self.mix(torch.cat([h, pooled[:, None].expand_as(h)], dim=-1)))
        logits = self.head(h)  # (B, T, V)
        return logits if self.nsp is None else (logits, self.nsp(pooled))


class TinySeq2Seq(nn.Module):
    """Decoder embeddings plus the mean of the encoder embeddings, a linear head."""

    def __init__(self, vocab: int = V, d: int = 16) -> None:
        super().__init__()
        self.enc = nn.Embedding(vocab, d)
        self.dec = nn.Embedding(vocab, d)
        self.head = nn.Linear(d, vocab)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor,
    ) -> torch.Tensor:
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        memory = (self.enc(input_ids) * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # (B, D)
        return self.head(torch.tanh(self.dec(decoder_input_ids) + memory[:, None]))


def masker() -> TokenMasker:
    return TokenMasker(mask_id=MASK, vocab_size=V, special_ids={PAD, UNK, CLS, SEP})


def documents(n: int, seed: int) -> list[list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randint(5, V, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
         for _ in range(int(torch.randint(2, 6, (1,), generator=g)))]
        for _ in range(n)
    ]  # fmt: skip


def bert_data(nsp: bool = True, **kw: Any) -> BertPretrainingData:
    base: dict[str, Any] = dict(
        batch_size=8, max_len=12, cls_id=CLS, sep_id=SEP, pad_id=PAD, masker=masker(), nsp=nsp
    )
    return BertPretrainingData(documents(20, 0), documents(6, 1), **{**base, **kw})


# --- losses and objectives ---------------------------------------------------------------------


def test_masked_lm_loss_is_cross_entropy_over_labelled_positions() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, V)
    labels = torch.full((3, 7), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[2, 0] = 7, 9, 11
    loss, accuracy, n = masked_lm_loss(logits, labels)
    expected = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected)
    keep = labels != IGNORE_INDEX
    assert n == 3
    assert accuracy == (logits.argmax(-1)[keep] == labels[keep]).float().mean()
    # nothing labelled: a zero loss that still backpropagates, and no items
    logits.requires_grad_(True)
    zero, _, none = masked_lm_loss(logits, torch.full((3, 7), IGNORE_INDEX))
    zero.backward()
    assert zero.item() == 0.0 and none == 0 and logits.grad is not None


def test_masked_lm_objective() -> None:
    torch.manual_seed(0)
    model = TinyEncoder(nsp=False)
    batch = bert_data(nsp=False).next_batch(torch.Generator().manual_seed(0))
    out = MaskedLMObjective()(model, batch)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    labels = batch["labels"]
    expected = F.cross_entropy(logits.view(-1, V), labels.view(-1))  # ignore_index=-100
    torch.testing.assert_close(out.loss, expected)
    assert out.items == int((labels != IGNORE_INDEX).sum()) > 0
    assert out.tokens == int(batch["attention_mask"].sum())
    assert set(out.metrics) == {"mlm_accuracy"}
    assert model.calls[0] == {"input_ids", "attention_mask", "token_type_ids"}
    # token_type_ids is passed only when the batch has it
    MaskedLMObjective()(model, {k: v for k, v in batch.items() if k != "token_type_ids"})
    assert model.calls[-1] == {"input_ids", "attention_mask"}
    # a model with both heads: the first element is the MLM logits
    torch.testing.assert_close(MaskedLMObjective()(TinyEncoder(), batch).loss.isfinite(),
                               torch.tensor(True))  # fmt: skip


def test_pretraining_objective_is_mlm_plus_nsp() -> None:
    torch.manual_seed(0)
    model = TinyEncoder()
    batch = bert_data().next_batch(torch.Generator().manual_seed(0))
    out = PretrainingObjective()(model, batch)
    mlm, nsp = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mlm_loss = F.cross_entropy(mlm.view(-1, V), batch["labels"].view(-1))
    nsp_loss = F.cross_entropy(nsp, batch["next_sentence_label"])
    torch.testing.assert_close(out.loss, mlm_loss + nsp_loss)  # as BertForPreTraining's loss
    torch.testing.assert_close(out.metrics["mlm_loss"], mlm_loss.detach())
    torch.testing.assert_close(out.metrics["nsp_loss"], nsp_loss.detach())
    nsp_acc = (nsp.argmax(-1) == batch["next_sentence_label"]).float().mean()
    torch.testing.assert_close(out.metrics["nsp_accuracy"], nsp_acc)
    assert set(out.metrics) == {"mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"}
    assert out.items == int((batch["labels"] != IGNORE_INDEX).sum())
    with pytest.raises(TrainingError, match="nsp_logits"):
        PretrainingObjective()(TinyEncoder(nsp=False), batch)
    with pytest.raises(TrainingError, match="tensor or a tuple"):
        PretrainingObjective()(lambda *a, **k: {"logits": 1}, batch)  # type: ignore[arg-type]


def test_seq2seq_objective_and_shift_right() -> None:
    labels = torch.tensor([[5, 6, 7, 1], [8, 1, IGNORE_INDEX, IGNORE_INDEX]])
    dec = shift_right(labels, decoder_start_token_id=0, pad_id=0)
    assert dec.tolist() == [[0, 5, 6, 7], [0, 8, 1, 0]]
    torch.manual_seed(0)
    model = TinySeq2Seq()
    batch = {
        "input_ids": torch.tensor([[9, 10, 11], [12, 13, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "decoder_input_ids": dec,
        "labels": labels,
    }
    out = Seq2SeqObjective()(model, batch)
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=dec)  # fmt: skip
    expected = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, expected)
    assert out.items == 6 and out.tokens == 5 + 6
    assert set(out.metrics) == {"token_accuracy"}


# --- BERT data ---------------------------------------------------------------------------------


def test_bert_batches() -> None:
    data = bert_data()
    batch = data.next_batch(torch.Generator().manual_seed(0))
    assert set(batch) == {
        "input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"
    }  # fmt: skip
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert ids.shape == mask.shape == types.shape == batch["labels"].shape
    assert ids.shape[0] == 8 and ids.shape[1] <= 12 and ids.dtype == torch.long
    labels = batch["labels"]
    original = torch.where(labels != IGNORE_INDEX, labels, ids)
    for i in range(8):
        n = int(mask[i].sum())
        row = original[i, :n].tolist()
        seps = [j for j, t in enumerate(row) if t == SEP]
        assert row[0] == CLS and len(seps) == 2 and seps[1] == n - 1
        assert types[i].tolist() == [0] * (seps[0] + 1) + [1] * (n - seps[0] - 1) + [0] * (
            ids.shape[1] - n
        )
        assert (ids[i, n:] == PAD).all() and (labels[i, n:] == IGNORE_INDEX).all()
        assert labels[i, [0, *seps]].eq(IGNORE_INDEX).all()  # special tokens never masked
    assert set(batch["next_sentence_label"].tolist()) <= {0, 1}


def test_bert_batches_without_nsp() -> None:
    batch = bert_data(nsp=False).next_batch(torch.Generator().manual_seed(0))
    assert "next_sentence_label" not in batch and (batch["token_type_ids"] == 0).all()
    original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
    assert (original[:, 0] == CLS).all()


def test_bert_data_is_deterministic_and_validation_fixed() -> None:
    data = bert_data()
    a = data.next_batch(torch.Generator().manual_seed(3))
    b = data.next_batch(torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    g = torch.Generator().manual_seed(9)
    before = g.get_state()
    first, second = list(data.val_batches()), list(data.val_batches())
    assert torch.equal(g.get_state(), before)
    assert len(first) == 2  # the validation documents have 9 segments with a successor
    assert all(torch.equal(x[k], y[k]) for x, y in zip(first, second, strict=True) for k in x)
    assert len(list(bert_data(eval_batches=1).val_batches())) == 1


def test_whole_word_masking_on_shakespeare_with_minilm_wordpiece(minilm_dir: Path) -> None:
    wp = Tokenizer.load(minilm_dir / "tokenizer.json")
    vocab = wp.vocab  # type: ignore[attr-defined]
    docs = corpus.load_documents("shakespeare", split="val")[:3]
    encoded = [chunk_segments([wp.encode(line) for line in d.text.split("\n")[:300]], 40)
               for d in docs]  # fmt: skip
    special = set(wp.special_tokens.values())  # type: ignore[attr-defined]
    data = BertPretrainingData(
        encoded,
        batch_size=32,
        max_len=64,
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        pad_id=vocab["[PAD]"],
        masker=TokenMasker(mask_id=vocab["[MASK]"], vocab_size=wp.vocab_size, special_ids=special),
        continuation_ids=wordpiece_continuation_ids(vocab),
    )
    continuation = torch.tensor(sorted(wordpiece_continuation_ids(vocab)))
    g = torch.Generator().manual_seed(0)
    pieces_seen = 0
    for _ in range(10):
        batch = data.next_batch(g)
        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        original = torch.where(chosen, labels, batch["input_ids"])
        is_cont = torch.isin(original, continuation)
        # a continuation piece is chosen exactly when the piece before it is (unless that is
        # [CLS] or [SEP]: a segment cut at the front may start with a "##" piece)
        follows = is_cont[:, 1:] & ~torch.isin(original[:, :-1], torch.tensor(sorted(special)))
        pieces_seen += int(follows.sum())
        assert torch.equal(chosen[:, 1:][follows], chosen[:, :-1][follows])
    assert pieces_seen > 50


# --- T5 data -----------------------------------------------------------------------------------


class Stream:
    """An in-memory token stream with ``TokenShards``' reading methods."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def random_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - seq_len, (batch_size,), generator=generator)
        rows = torch.stack([self.tokens[s : s + seq_len + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def sequential_batches(
        self, batch_size: int, seq_len: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = (len(self.tokens) - 1) // seq_len
        for first in range(0, n, batch_size):
            rows = torch.stack(
                [self.tokens[k * seq_len : k * seq_len + seq_len + 1]
                 for k in range(first, min(first + batch_size, n))]
            )  # fmt: skip
            yield rows[:, :-1], rows[:, 1:]


def t5_data(**kw: Any) -> SpanCorruptionData:
    g = torch.Generator().manual_seed(0)
    base: dict[str, Any] = dict(
        batch_size=4, inputs_length=32, eos_id=1, sentinel_start=V - 1, num_sentinels=10
    )
    return SpanCorruptionData(
        Stream(torch.randint(2, V - 10, (2000,), generator=g)),
        Stream(torch.randint(2, V - 10, (400,), generator=g)),
        **{**base, **kw},
    )


def test_span_corruption_batches_fit_exactly() -> None:
    data = t5_data()
    assert (data.tokens_length, data.targets_length) == (34, 8)  # 5 noise tokens, 2 spans
    g = torch.Generator().manual_seed(0)
    windows, _ = data.train.random_batch(4, 34, torch.Generator().set_state(g.get_state()))
    batch = data.next_batch(g)
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4, 8)
    assert (batch["attention_mask"] == 1).all() and (batch["labels"] != IGNORE_INDEX).all()
    assert torch.equal(batch["decoder_input_ids"], shift_right(batch["labels"]))
    for i in range(4):
        rebuilt = restore_spans(batch["input_ids"][i].tolist(), batch["labels"][i].tolist(),
                                sentinel_start=V - 1, num_sentinels=10, eos_id=1)  # fmt: skip
        assert rebuilt == windows[i].tolist()


def test_span_corruption_validation_is_fixed() -> None:
    data = t5_data(eval_batches=2)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    first, second = list(data.val_batches()), list(data.val_batches())
    assert len(first) == 2 and torch.equal(g.get_state(), before)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(first, second, strict=True) for k in x)


def test_span_corruption_data_errors() -> None:
    with pytest.raises(Exception, match="sentinels"):
        t5_data(inputs_length=400, num_sentinels=10)
    with pytest.raises(Exception, match="training split"):
        t5_data(inputs_length=1900, num_sentinels=1000)


# --- the engine --------------------------------------------------------------------------------


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        max_steps=16, lr=1e-2, min_lr=1e-2, warmup_steps=0, schedule="constant",
        eval_every=8, log_every=4, progress=False, tensorboard=False, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_engine_trains_bert_pretraining_deterministically(tmp_path: Path) -> None:
    results, weights = [], []
    for run in ("a", "b"):
        torch.manual_seed(0)
        model = TinyEncoder()
        results.append(train(model, bert_data(), PretrainingObjective(), config(), tmp_path / run))
        weights.append(model.head.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    evals = results[0].evals
    assert [e["step"] for e in evals] == [8, 16] and evals == results[1].evals
    assert all(torch.isfinite(torch.tensor(e["val_loss"])) for e in evals)


def test_engine_trains_span_corruption(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinySeq2Seq()
    data = t5_data(eval_batches=2)
    result = train(model, data, Seq2SeqObjective(), config(max_steps=30, eval_every=30), tmp_path)
    assert result.stopped == "finished"
    (final,) = result.evals
    # sentinels and EOS are predictable: far below a uniform guess over the vocabulary
    assert final["val_loss"] < 0.9 * torch.log(torch.tensor(float(V))).item()


@pytest.mark.parametrize("name", ["masking", "pairs", "span_corruption", "objectives", "data"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"groundwork.train.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
