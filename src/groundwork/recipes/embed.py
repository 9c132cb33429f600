"""The `groundwork embed` command: sentence embeddings from a BERT-style encoder, and how alike
the texts are (cosine similarity). Chapter 6 (Pretrained model families: encoders).

Sentence-BERT's recipe (Reimers & Gurevych 2019): encode ``[CLS] text [SEP]``, average the
token states, scale to unit length (:func:`groundwork.evaluate.embeddings.sentence_embeddings`).
"""

import json as _json
from pathlib import Path
from typing import Any

from groundwork.errors import ConfigError, UnknownNameError, did_you_mean


def load_encoder(name: str) -> tuple[Any, Any]:
    """A named pretrained encoder, a run directory or a Hugging Face checkpoint directory:
    ``(encoder, tokenizer)``, the encoder in eval mode. A model with pretraining heads
    (``BertForMaskedLM``, ``BertForPreTraining``) gives its encoder.

    Raises:
        UnknownNameError: ``name`` is none of the three.
        ConfigError: The model is not an encoder of token states.
    """
    from groundwork.interop.hf import import_hf
    from groundwork.models.bert import Bert, BertForMaskedLM, BertForPreTraining
    from groundwork.pretrained import PRETRAINED, load
    from groundwork.runs import is_run, load_run
    from groundwork.tokenize import load_tokenizer

    path = Path(name)
    if name in PRETRAINED:
        pretrained = load(name)
        net, tokenizer = pretrained.model, pretrained.tokenizer
    elif is_run(path):
        net, tokenizer, _ = load_run(path, device="cpu")
    elif (path / "config.json").is_file():
        net, tokenizer = import_hf(path), load_tokenizer(path / "tokenizer.json")
    else:
        raise UnknownNameError(
            f"{name!r} is neither a named pretrained model, a run directory nor a Hugging Face "
            f"checkpoint directory: {did_you_mean(name, PRETRAINED)} (with several texts, give "
            "the model first: groundwork embed all-minilm-l6-v2 TEXT...)"
        )
    if isinstance(net, BertForMaskedLM | BertForPreTraining):
        net = net.bert
    if not isinstance(net, Bert):
        raise ConfigError(
            f"{name} is a {type(net).__name__}, not an encoder: `groundwork embed` needs a BERT "
            "model (e.g. all-minilm-l6-v2)"
        )
    return net.eval(), tokenizer


def embed(
    model: str = "all-minilm-l6-v2",
    *,
    texts: list[str],
    json: bool = False,
    batch_size: int = 32,
    max_length: int | None = 256,
) -> None:
    """Embed texts with a sentence encoder and print how alike they are (cosine similarity).

    Args:
        model: A named pretrained encoder (all-minilm-l6-v2), a run directory or a Hugging Face
            BERT checkpoint directory.
        texts: One or more texts to embed.
        json: Print {"embeddings": [[...]], "similarity": [[...]]} instead of a table.
        batch_size: Texts per forward pass.
        max_length: Longest input in tokens, [CLS] and [SEP] included (longer texts are cut;
            256 as sentence-transformers does for all-MiniLM-L6-v2; none: the model's limit).
    """
    from groundwork.evaluate.embeddings import cosine_similarity_matrix, sentence_embeddings
    from groundwork.tables import markdown_table

    if not texts:
        raise ConfigError("`groundwork embed` needs at least one text to embed")
    encoder, tokenizer = load_encoder(model)
    embeddings = sentence_embeddings(
        encoder, tokenizer, texts, batch_size=batch_size, max_length=max_length
    )  # (N, d), unit rows
    similarity = cosine_similarity_matrix(embeddings)  # (N, N)
    if json:
        print(_json.dumps({"embeddings": embeddings.tolist(), "similarity": similarity.tolist()}))
        return
    labels = [_short(t) for t in texts]
    rows = [
        [label, *(f"{s:.3f}" for s in row)]
        for label, row in zip(labels, similarity.tolist(), strict=True)
    ]
    count = f"{len(texts)} text{'s' if len(texts) > 1 else ''}"
    print(f"{count}, {embeddings.shape[1]} numbers each ({model}); cosine similarity:")
    print(markdown_table(["", *labels], rows, align="l" + "r" * len(labels)), end="")


def _short(text: str, width: int = 24) -> str:
    """A one-line label for a table cell (Markdown's ``|`` escaped)."""
    line = " ".join(text.split()).replace("|", "\\|")
    return line if len(line) <= width else line[: width - 1] + "…"
