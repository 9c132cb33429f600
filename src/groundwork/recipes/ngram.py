"""Fitting n-gram language models on a text source and measuring them on its held-out split.

The runner behind ``groundwork ngram``: it loads a text source through the corpus API, cuts it
into token ids, fits :class:`~groundwork.models.ngram.NGramLM` for several orders and smoothing
methods on the training split, and reports the perplexity of each on the validation split as a
Markdown table (and optionally a plot, samples, and the best model as a run directory).

Two ways of cutting the text:

* **Words** (the default): each non-empty line is one sequence; words are found by
  :data:`WORD_PATTERN` (runs of letters with inner apostrophes, runs of digits, single punctuation
  marks), lowercased unless asked otherwise. Words seen fewer than ``min_count`` times in the
  training split become ``<unk>`` (id 0), so the vocabulary is closed (:func:`word_vocabulary`).
  This is the classic setting of the n-gram literature, but it is *lossy* (case, spacing and rare
  words are gone), so no bits per byte are reported for it.
* **A tokenizer** (``tokenizer="gpt2"`` or a ``tokenizer.json`` path): each document is one
  sequence of subword ids. Byte-level BPE is lossless, so the total log-probability of the
  validation text is also reported in bits per UTF-8 byte (the ``</s>`` that ends each document
  is counted in the total), comparable with chapter 8's Transformer.

Chapter 1 of the docs, section 1.6 "n-gram language models".
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import regex

from groundwork import corpus, runs
from groundwork.checks import positive_int
from groundwork.errors import ConfigError, EmptyCorpusError, did_you_mean
from groundwork.fileio import atomic_write, write_json
from groundwork.models.ngram import SMOOTHINGS, NGramConfig, NGramLM, vocab_fingerprint
from groundwork.numerics import bits_per_byte
from groundwork.tables import markdown_table
from groundwork.tokenize import Tokenizer
from groundwork.tokenize.words import UNK, Vocabulary, split_words

# --8<-- [start:words]
#: A word: letters with inner apostrophes ("o'er", "king's"), a number, or one punctuation mark.
WORD_PATTERN = regex.compile(r"\p{L}+(?:['’]\p{L}+)*|\p{N}+|[^\s\p{L}\p{N}]")


def words(text: str, *, lowercase: bool = True) -> list[str]:
    """Split text into words with :data:`WORD_PATTERN`.

    >>> words("O Romeo, Romeo! wherefore art thou Romeo?")
    ['o', 'romeo', ',', 'romeo', '!', 'wherefore', 'art', 'thou', 'romeo', '?']
    """
    return split_words(text, WORD_PATTERN, lowercase=lowercase)


# --8<-- [end:words]


def word_vocabulary(
    sequences: Sequence[Sequence[str]], *, min_count: int = 2, lowercase: bool = True
) -> Vocabulary:
    """The closed vocabulary of the word-level models: ``<unk>`` (id 0), then the words seen at
    least ``min_count`` times by falling count (ties in first-seen order).

    >>> vocab = word_vocabulary([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
    >>> vocab.tokens, vocab.ids(["b", "c", "zebra"]), vocab.decode([1, 0])
    (['<unk>', 'a', 'b'], [2, 0, 0], 'a <unk>')
    """
    return Vocabulary.from_words(
        sequences,
        min_count=min_count,
        specials=(UNK,),
        ties="first-seen",
        pattern=WORD_PATTERN,
        lowercase=lowercase,
    )


@dataclass
class NGramData:
    """A source cut into id sequences for n-gram models."""

    name: str
    """How the text was cut, for the report (e.g. ``"words, lowercased, min count 2"``)."""
    train: list[list[int]]
    val: list[list[int]]
    vocab_size: int
    fingerprint: str
    decode: Callable[[Sequence[int]], str]
    val_bytes: int | None
    """UTF-8 bytes of the validation text when the cut is lossless (else ``None``)."""
    eos_id: int | None = None
    """The tokenizer's end-of-text id, used as both ``<s>`` and ``</s>`` (else reserved ids)."""
    vocab: Vocabulary | Tokenizer | None = None
    """What cut the text into ids: the word vocabulary, or the tokenizer."""


def load_ngram_data(
    source: str = "shakespeare",
    *,
    tokenizer: str | Path | None = None,
    lowercase: bool = True,
    min_count: int = 2,
) -> NGramData:
    """Load ``source``'s train and val splits as id sequences (see the module docstring).

    Raises:
        UnknownNameError: No such source.
        TokenizerError: The tokenizer file is missing or unsupported.
        EmptyCorpusError: The training split holds no words.
    """
    positive_int("min_count", min_count)
    train_docs = corpus.load_documents(source, split="train")
    val_docs = corpus.load_documents(source, split="val")
    if tokenizer is None:

        def lines(docs: list[corpus.Document]) -> list[list[str]]:
            cut = (words(line, lowercase=lowercase) for d in docs for line in d.text.split("\n"))
            return [w for w in cut if w]

        train_words, val_words = lines(train_docs), lines(val_docs)
        if not train_words:
            raise EmptyCorpusError(f"the training split of {source!r} holds no words")
        vocab = word_vocabulary(train_words, min_count=min_count, lowercase=lowercase)
        return NGramData(
            name=f"words{', lowercased' if lowercase else ''}, min count {min_count}, one line "
            "per sequence",
            train=[vocab.ids(s) for s in train_words],
            val=[vocab.ids(s) for s in val_words],
            vocab_size=len(vocab),
            fingerprint=vocab_fingerprint(vocab.tokens),
            decode=vocab.decode,
            val_bytes=None,
            vocab=vocab,
        )
    tok = _load_tokenizer(tokenizer)
    train_ids = [tok.encode(d.text) for d in train_docs]
    if not any(train_ids):
        raise EmptyCorpusError(f"the training split of {source!r} holds no tokens")
    return NGramData(
        name=f"tokenizer {tokenizer}, one document per sequence",
        train=train_ids,
        val=[tok.encode(d.text) for d in val_docs],
        vocab_size=tok.vocab_size,
        fingerprint=vocab_fingerprint(tok.id_to_token(i) for i in range(tok.vocab_size)),
        decode=tok.decode,
        val_bytes=sum(len(d.text.encode("utf-8")) for d in val_docs),
        eos_id=tok.eot_id,
        vocab=tok,
    )


def _load_tokenizer(tokenizer: str | Path) -> Tokenizer:
    """``"gpt2"``: GPT-2's own BPE (the fetched ``gpt2-bpe`` source); else a tokenizer.json."""
    from groundwork import tokenize

    if str(tokenizer) == "gpt2":
        return tokenize.gpt2_tokenizer()
    return tokenize.load_tokenizer(tokenizer)


@dataclass
class NGramResult:
    """The held-out score of one fitted model."""

    order: int
    smoothing: str
    perplexity: float
    bits_per_byte: float | None
    fit_seconds: float
    model: NGramLM


def evaluate_ngrams(
    data: NGramData,
    orders: Sequence[int] = (1, 2, 3, 4, 5),
    smoothing: Sequence[str] = SMOOTHINGS,
    *,
    k: float = 1.0,
    discount: float | None = None,
) -> list[NGramResult]:
    """Fit one model per order and smoothing on ``data.train``; score each on ``data.val``.

    Raises:
        ConfigError: A bad order, smoothing name, ``k`` or ``discount``.
        EmptyCorpusError: The validation split is empty.
    """
    if not data.val:
        raise EmptyCorpusError("the validation split is empty: nothing to measure on")
    results = []
    for order in orders:
        for name in smoothing:
            config = NGramConfig(order=order, smoothing=name, k=k, discount=discount)  # type: ignore[arg-type]
            start = time.perf_counter()
            lm = NGramLM(config).fit(
                data.train,
                data.vocab_size,
                bos_id=data.eos_id,
                eos_id=data.eos_id,
                fingerprint=data.fingerprint,
            )
            seconds = time.perf_counter() - start
            total, n = lm.log_likelihood(data.val)
            bpb = None if data.val_bytes is None else bits_per_byte(-total, data.val_bytes)
            results.append(NGramResult(order, name, math.exp(-total / n), bpb, seconds, lm))
    return results


LABELS = {"add-k": "add-k", "witten-bell": "Witten–Bell", "kneser-ney": "Kneser–Ney"}


def _label(smoothing: str, k: float, discount: float | None) -> str:
    if smoothing == "add-k":
        return "add-one (Laplace)" if k == 1 else f"add-{k:g}"
    if smoothing == "kneser-ney":
        return "Kneser–Ney (modified)" if discount is None else f"Kneser–Ney (D = {discount:g})"
    return LABELS[smoothing]


def results_markdown(
    results: Sequence[NGramResult], *, k: float = 1.0, discount: float | None = None
) -> str:
    """Perplexity (and bits per byte, when known) as Markdown tables: orders × smoothing."""
    orders = sorted({r.order for r in results})
    methods = list(dict.fromkeys(r.smoothing for r in results))
    cell = {(r.order, r.smoothing): r for r in results}
    header = ["order", *(_label(m, k, discount) for m in methods)]

    def table(value: Callable[[NGramResult], str]) -> str:
        return markdown_table(header, [[n, *(value(cell[n, m]) for m in methods)] for n in orders])

    out = "Held-out perplexity per token:\n\n" + table(lambda r: f"{r.perplexity:,.1f}")
    if all(r.bits_per_byte is not None for r in results):
        out += "\nBits per UTF-8 byte of the held-out text:\n\n"
        out += table(lambda r: f"{r.bits_per_byte:.3f}")
    return out


def plot_results(
    results: Sequence[NGramResult],
    path: Path,
    title: str,
    *,
    k: float = 1.0,
    discount: float | None = None,
) -> Path:
    """Held-out perplexity against the order, one line per smoothing method (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r.smoothing for r in results):
        rs = sorted((r for r in results if r.smoothing == method), key=lambda r: r.order)
        label = _label(method, k, discount)
        ax.plot([r.order for r in rs], [r.perplexity for r in rs], "o-", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("order n")
    ax.set_ylabel("held-out perplexity")
    ax.set_xticks(sorted({r.order for r in results}))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ngram(
    source: str = "shakespeare",
    orders: str = "1,2,3,4,5",
    smoothing: str = "add-k,witten-bell,kneser-ney",
    k: float = 1.0,
    discount: float | None = None,
    tokenizer: str | None = None,
    lowercase: bool = True,
    min_count: int = 2,
    markdown: Path | None = None,
    plot: Path | None = None,
    samples: int = 0,
    sample_order: int = 4,
    seed: int = 0,
    out: Path | None = None,
) -> None:
    """Fit n-gram language models on a text source and print their held-out perplexity.

    Args:
        source: A text source (``shakespeare``, ``wiki-sample``, ...); fit on its train split,
            measured on its val split.
        orders: Comma-separated orders n to fit, e.g. 1,2,3,4,5.
        smoothing: Comma-separated smoothing methods among add-k, witten-bell, kneser-ney.
        k: The pseudo-count of add-k smoothing (1 = Laplace).
        discount: Kneser–Ney: one fixed discount in (0, 1); default: estimate D1, D2, D3+.
        tokenizer: Cut into subwords instead of words: ``gpt2`` or a tokenizer.json path
            (lossless, so bits per byte are reported too).
        lowercase: Word level: lowercase the text first.
        min_count: Word level: words seen fewer times in training become <unk>.
        markdown: Write the results table (and samples) to this Markdown file.
        plot: Write a plot of perplexity against order to this PNG file.
        samples: Print this many texts sampled from the Kneser–Ney (else first) model.
        sample_order: The order of the model to sample from (must be among the orders).
        seed: Random seed of the sampling.
        out: Save the model with the lowest held-out perplexity as a run directory here
            (``groundwork.runs.load_run`` reads it back).
    """
    try:
        order_list = [int(o) for o in str(orders).split(",") if o.strip()]
    except ValueError:
        raise ConfigError(f"--orders takes comma-separated integers, got {orders!r}") from None
    methods = [m.strip() for m in str(smoothing).split(",") if m.strip()]
    if not order_list or not methods:
        raise ConfigError("give at least one order (--orders 3) and one smoothing method")
    for name in methods:
        if name not in SMOOTHINGS:
            raise ConfigError(f"unknown smoothing {name!r}: {did_you_mean(name, SMOOTHINGS)}")
    for order in order_list:  # fail before loading any data
        NGramConfig(order=order, k=k, discount=discount)
    if samples and sample_order not in order_list:
        raise ConfigError(f"sample_order {sample_order} is not among the orders {order_list}")
    data = load_ngram_data(source, tokenizer=tokenizer, lowercase=lowercase, min_count=min_count)
    n_train = sum(len(s) for s in data.train)
    n_val = sum(len(s) for s in data.val)
    results = evaluate_ngrams(data, order_list, methods, k=k, discount=discount)
    text = results_markdown(results, k=k, discount=discount)
    text += (
        f"\n{source}: {data.name}; vocabulary {data.vocab_size:,}; {n_train:,} training and "
        f"{n_val:,} held-out tokens (each sequence also predicts its </s>).\n"
    )
    if samples:
        method = "kneser-ney" if "kneser-ney" in methods else methods[0]
        lm = next(r.model for r in results if r.order == sample_order and r.smoothing == method)
        rng = np.random.default_rng(seed)
        drawn = [data.decode(lm.sample(n=60, rng=rng)) for _ in range(samples)]
        text += f"\nSamples from the order-{sample_order} {LABELS[method]} model (seed {seed}):\n"
        text += "\n```text\n" + "\n".join(drawn) + "\n```\n"
    print(text, end="")
    slowest = max(results, key=lambda r: r.fit_seconds)
    print(f"(slowest fit: order {slowest.order} {slowest.smoothing}, {slowest.fit_seconds:.2f} s)")
    if markdown is not None:
        atomic_write(Path(markdown), text.encode("utf-8"))
    if plot is not None:
        plot_results(results, Path(plot), f"{source}, held-out perplexity", k=k, discount=discount)
    if out is not None:
        best = min(results, key=lambda r: r.perplexity)
        data_section = dict(
            source=source, tokenizer=tokenizer, lowercase=lowercase, min_count=min_count
        )
        save_run(best, data, Path(out), data=data_section)
        print(f"wrote {out} (order {best.order} {best.smoothing}, the lowest perplexity)")


def save_run(result: NGramResult, cut: NGramData, out: Path, **sections: object) -> Path:
    """Write ``result``'s model as a run directory: ``config.yaml`` (``kind: ngram``, the
    :class:`~groundwork.models.ngram.NGramConfig` as the model section, ``sections``),
    ``model.npz``, the vocabulary (``vocab.json``) or tokenizer (``tokenizer.json``) that
    ``cut`` the text into ids, and the held-out scores (``metrics.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(out, kind="ngram", model=asdict(result.model.config), **sections)
    result.model.save(out / runs.NGRAM_MODEL_FILE)
    if isinstance(cut.vocab, Vocabulary):
        write_json(out / runs.VOCAB_FILE, cut.vocab.to_json())
    elif cut.vocab is not None:
        cut.vocab.save(out / runs.TOKENIZER_FILE)
    metrics = {"perplexity": result.perplexity, "bits_per_byte": result.bits_per_byte}
    write_json(out / "metrics.json", {**metrics, "cut": cut.name})
    return out


__all__ = [
    "WORD_PATTERN",
    "NGramData",
    "NGramResult",
    "evaluate_ngrams",
    "load_ngram_data",
    "ngram",
    "plot_results",
    "results_markdown",
    "save_run",
    "word_vocabulary",
    "words",
]
