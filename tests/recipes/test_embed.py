"""Sentence embeddings (``groundwork.evaluate.embeddings``) and the `groundwork embed` command:
all-MiniLM-L6-v2 through our BERT and WordPiece equals transformers + mean pooling and
sentence-transformers; the command end to end and its bad inputs."""

import json
import re
from pathlib import Path

import pytest
import torch

import groundwork
from groundwork import cli, corpus
from groundwork.errors import ConfigError
from groundwork.evaluate.embeddings import (
    cosine_similarity_matrix,
    mean_pool,
    sentence_embeddings,
)
from groundwork.pretrained import Pretrained

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def minilm() -> Pretrained:
    return groundwork.load("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """About twenty Shakespeare sentences of different lengths (so batches are padded)."""
    text = corpus.load_documents("shakespeare", split="all")[0].text
    found = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    picked = [s for s in found[200:] if 3 <= len(s.split()) <= 60][:20]
    assert len(picked) == 20
    return picked


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [50.0, 60.0]], [[1.0, 1.0], [0, 0], [0, 0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [1.0, 1.0]]))


def test_embeddings_are_unit_and_batching_does_not_change_them(
    minilm: Pretrained, sentences: list[str]
) -> None:
    one_batch = sentence_embeddings(minilm.model, minilm.tokenizer, sentences)
    assert one_batch.shape == (20, 384)
    torch.testing.assert_close(one_batch.norm(dim=1), torch.ones(20), **TOL)
    small = sentence_embeddings(minilm.model, minilm.tokenizer, sentences, batch_size=3)
    torch.testing.assert_close(small, one_batch, **TOL)
    raw = sentence_embeddings(minilm.model, minilm.tokenizer, sentences[:2], normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    similarity = cosine_similarity_matrix(one_batch)
    torch.testing.assert_close(similarity, one_batch @ one_batch.T, **TOL)


def test_long_texts_are_cut_to_max_length(minilm: Pretrained) -> None:
    words = ["to", "be", "or", "not", "to", "be"] * 200  # one token per word
    cut = sentence_embeddings(minilm.model, minilm.tokenizer, [" ".join(words)], max_length=16)
    first = sentence_embeddings(minilm.model, minilm.tokenizer, [" ".join(words[:14])])
    torch.testing.assert_close(cut, first, **TOL)  # [CLS] + 14 tokens + [SEP]
    whole = sentence_embeddings(minilm.model, minilm.tokenizer, [" ".join(words)])  # 512 tokens
    assert whole.isfinite().all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(texts=[]), "no texts"),
        (dict(texts=["a"], batch_size=0), "batch_size"),
        (dict(texts=["a"], max_length=1), "max_length must be at least 2"),
    ],
)
def test_bad_arguments(minilm: Pretrained, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sentence_embeddings(minilm.model, minilm.tokenizer, **kwargs)


def test_a_tokenizer_without_cls_is_refused(minilm: Pretrained) -> None:
    from groundwork.tokenize import train_tokenizer

    char = train_tokenizer("char", ["to be or not to be"], 64)
    with pytest.raises(ConfigError, match=r"no \[CLS\] or \[SEP\]"):
        sentence_embeddings(minilm.model, char, ["to be"])


@pytest.mark.parity
def test_equal_to_transformers_with_mean_pooling(
    minilm: Pretrained, sentences: list[str], offline: None
) -> None:
    transformers = pytest.importorskip("transformers")
    folder = minilm.path
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    got = sentence_embeddings(minilm.model, minilm.tokenizer, sentences, batch_size=8)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parity
def test_equal_to_sentence_transformers(
    minilm: Pretrained, sentences: list[str], offline: None
) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.path), device="cpu")
    expected = model.encode(sentences, normalize_embeddings=True, convert_to_tensor=True)
    got = sentence_embeddings(minilm.model, minilm.tokenizer, sentences, max_length=256)
    torch.testing.assert_close(got, expected.cpu(), **TOL)


# ----------------------------------------------------------------------------------------------
# The command


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_embed_json(minilm: Pretrained, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "embed", "all-minilm-l6-v2", "a cat", "a dog", "--json")
    assert code == 0, err
    result = json.loads(out)
    embeddings = torch.tensor(result["embeddings"])
    expected = sentence_embeddings(minilm.model, minilm.tokenizer, ["a cat", "a dog"])
    torch.testing.assert_close(embeddings, expected, **TOL)
    similarity = torch.tensor(result["similarity"])
    assert similarity.shape == (2, 2)
    torch.testing.assert_close(similarity.diagonal(), torch.ones(2), **TOL)


def test_embed_table(capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["The cat sat.", "A dog ran.", "Stocks fell."]
    code, out, err = _run(capsys, "embed", "all-minilm-l6-v2", *texts)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("3 texts, 384 numbers each (all-minilm-l6-v2)")
    assert lines[1] == "|  | The cat sat. | A dog ran. | Stocks fell. |"
    cells = [line.split("|")[2:-1] for line in lines[3:]]
    similarity = [[float(c) for c in row] for row in cells]
    assert [similarity[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert similarity[0][1] > similarity[0][2]  # the cat is nearer the dog than the stocks


def test_embed_one_text_with_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "embed", "a cat")
    assert code == 0, err
    assert out.startswith("1 text, 384 numbers each (all-minilm-l6-v2)")


def test_embed_bad_inputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from groundwork.interop.hf import export_hf
    from groundwork.models import GPT, GPTConfig
    from groundwork.tokenize import train_tokenizer

    export_hf(GPT(GPTConfig.from_name("tiny")), tmp_path / "gpt")
    train_tokenizer("char", ["to be or not to be"], 64).save(tmp_path / "gpt" / "tokenizer.json")
    cases = [
        (["embed", "all-minilm", "a", "b"], "did you mean 'all-minilm-l6-v2'"),
        (["embed", "a cat", "a dog"], "give the model first"),
        (["embed", str(tmp_path / "gpt"), "a"], "not an encoder"),
        (["embed", "all-minilm-l6-v2", "a", "--max-length", "1"], "max_length"),
        (["embed"], "needs TEXTS"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and message in err, err


def test_generate_refuses_an_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "all-minilm-l6-v2", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a causal language model" in err
