r"""CounterFact's metrics for model editing (Meng et al. 2022, section 3 and appendix): did the
edit take, does it generalise, did it stay local, and can the model still write?

**Probabilities.** Every probability metric compares two continuations of one prompt. A target
of several tokens is scored by its mean per-token log-probability, teacher forced
(:func:`target_log_probs`):

.. math:: \ell(t \mid x) = \frac{1}{|t|}\sum_{i=1}^{|t|} \log p(t_i \mid x, t_{<i}),
   \qquad p(t \mid x) := e^{\ell(t \mid x)}

(ROME's ``test_batch_prediction``; :math:`p` is the geometric mean of the token probabilities,
so a long target whose later tokens are predictable, `` J.R.R. Tolkien``, can outscore the
model's greedy answer: 2 of the 262 shipped records before any edit).
The prompt and the target are tokenised separately and concatenated, as the editors do (the
target keeps its leading space, ``" Paris"``). Per record, with :math:`o^*` the new target and
:math:`o^c` the true object:

* **Efficacy score** (ES): :math:`[p(o^* \mid x) > p(o^c \mid x)]` on the rewrite prompt;
  **efficacy magnitude** (EM): :math:`p(o^* \mid x) - p(o^c \mid x)`.
* **Paraphrase score / magnitude** (PS, PM): the same, averaged over the paraphrase prompts.
* **Neighbourhood score / magnitude** (NS, NM): over prompts about *other* subjects,
  :math:`[p(o^c_n \mid x_n) > p(o^* \mid x_n)]` and :math:`p(o^c_n) - p(o^*)`, with
  :math:`o^c_n` the neighbour's own true object: 1 means the edit did not spread.
* **Score** (S): the harmonic mean of the mean ES, PS and NS (ROME, table 4).

**Generation.** The model continues each generation prompt (ROME: 100 tokens, top-5 sampling;
:func:`default_generation`), and the text, prompt included, is scored by

* **Fluency** (GE): :func:`ngram_entropy`, ROME's ``compute_n_gram_entropy``,
  :math:`\tfrac12\left(\tfrac23 H_2 + \tfrac43 H_3\right)` where :math:`H_n` is the entropy in
  bits of the text's word n-gram frequencies; averaged over the record's texts. Repetitive
  text (a broken model's "Paris Paris Paris") scores low. Words are split by a regular
  expression (runs of word characters, and each other non-space character) where ROME uses
  NLTK's ``word_tokenize``; the two differ on contractions (``"n't"``) and inner full stops.
* **Consistency** (RS, reference score): the TF-IDF cosine similarity between the record's
  generated texts (joined) and its reference texts (joined). CounterFact's references are
  Wikipedia snippets about subjects that *truly have* the new object, and its TF-IDF
  statistics come from Wikipedia. We have no per-object Wikipedia text offline, so the
  references are what the *unedited* model writes about subjects whose true object is the new
  target (stored with each record by ``scripts/build_facts.py``), and the IDF is fitted on the
  ``wiki-sample`` articles (:func:`wiki_tfidf`). It measures the same thing -- after "the
  capital of France is Rome", does text about France read like text about Italy -- against a
  weaker, model-written reference, so only differences between methods on the same records
  mean something, not the absolute level. :class:`TfIdf` reproduces scikit-learn's
  ``TfidfVectorizer`` defaults.

:func:`evaluate_edits` runs all of it over records and :func:`summarize` reduces per-record
values to means with a standard deviation and a 95% confidence interval, ready for
:func:`metrics_table`.

References:
    - Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME, CounterFact;
      arXiv 2202.05262).
    - Meng et al. 2023, "Mass-Editing Memory in a Transformer" (MEMIT; the same metrics).
    - Docs: chapter 19, "Model editing".

This module is long because CounterFact's metrics (probabilities, generation, fluency,
consistency) share one record format and one batching routine.
"""

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from groundwork import corpus
from groundwork.corpus.documents import SplitName
from groundwork.edit.facts import FactRecord
from groundwork.edit.request import check_fits
from groundwork.errors import ConfigError, DataError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.decode import generate
from groundwork.models.protocol import max_seq_len
from groundwork.runtime import eval_mode
from groundwork.tables import markdown_table
from groundwork.tokenize.base import Tokenizer

# --- target log-probabilities ------------------------------------------------------------------


def _encode_pairs(
    model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], targets: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    if len(prompts) != len(targets):
        raise ConfigError(f"{len(prompts)} prompts but {len(targets)} targets: pair them up")
    limit = max_seq_len(model)  # type: ignore[arg-type]
    pairs = []
    for prompt, target in zip(prompts, targets, strict=True):
        prompt_ids, target_ids = tokenizer.encode(prompt), tokenizer.encode(target)
        if not prompt_ids or not target_ids:
            raise ConfigError(f"empty prompt {prompt!r} or target {target!r}: both need tokens")
        check_fits(len(prompt_ids) + len(target_ids) - 1, limit)
        pairs.append((prompt_ids, target_ids))
    return pairs


@torch.no_grad()
def target_token_log_probs(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    r"""Teacher-forced :math:`\log p(t_i \mid x, t_{<i})` of every token of each target.

    The model reads ``prompt_ids + target_ids[:-1]``; the logits at the prompt's last position
    and onwards score the target's tokens. Rows are batched right-padded, longest first: a
    causal model's logits at real positions do not depend on the padding after them.

    Args:
        model: A causal LM (``GPT``, ``Llama``): ids ``(B, T)`` -> logits ``(B, T, V)``.
        tokenizer: Encodes prompts and targets (separately).
        prompts: The contexts, one per target.
        targets: The continuations to score (with their leading space, ``" Paris"``).
        batch_size: Rows per forward pass.

    Returns:
        One float tensor ``(len(target_ids),)`` per pair, in input order, on the CPU.

    Raises:
        ConfigError: unequal numbers of prompts and targets, an empty prompt or target, or a
            pair longer than the model's context.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    pairs = _encode_pairs(model, tokenizer, prompts, targets)
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    results: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            inputs = [pairs[i][0] + pairs[i][1][:-1] for i in rows]
            x = torch.zeros(len(rows), len(inputs[0]), dtype=torch.long)  # (B, T) right-padded
            for r, ids in enumerate(inputs):
                x[r, : len(ids)] = torch.tensor(ids)
            log_probs = torch.log_softmax(model(x.to(device)).float(), dim=-1)  # (B, T, V)
            for r, i in enumerate(rows):
                prompt_ids, target_ids = pairs[i]
                first = len(prompt_ids) - 1  # the position that predicts target_ids[0]
                scored = log_probs[r, first : first + len(target_ids)]  # (n, V)
                target = torch.tensor(target_ids, device=scored.device)
                results[i] = scored.gather(1, target[:, None]).squeeze(1).cpu()  # (n,)
    return results


def target_log_probs(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[float]:
    """Mean per-token log-probability of each target after its prompt (ROME's target score;
    see :func:`target_token_log_probs`)."""
    per_token = target_token_log_probs(model, tokenizer, prompts, targets, batch_size=batch_size)
    return [float(t.mean()) for t in per_token]


# --- probability metrics -----------------------------------------------------------------------


def _pairs(record: FactRecord) -> list[tuple[str, str, str]]:
    """(group, prompt, target) for every probability the record needs, in a fixed order."""
    out = [("rewrite", record.prompt, t) for t in (record.target_new, record.target_true)]
    for prompt in record.paraphrase_prompts:
        out += [("paraphrase", prompt, t) for t in (record.target_new, record.target_true)]
    for n in record.neighbourhood:  # success is the neighbour's true object winning
        out += [("neighbourhood", n.prompt, t) for t in (n.target_true, record.target_new)]
    return out


def _compare(lps: list[float]) -> tuple[float, float]:
    """Mean of [first > second] and of exp(first) - exp(second) over consecutive pairs."""
    firsts, seconds = lps[0::2], lps[1::2]
    wins = [float(a > b) for a, b in zip(firsts, seconds, strict=True)]
    gaps = [math.exp(a) - math.exp(b) for a, b in zip(firsts, seconds, strict=True)]
    return sum(wins) / len(wins), sum(gaps) / len(gaps)


def probability_metrics(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: Sequence[FactRecord],
    *,
    batch_size: int = 32,
) -> list[dict[str, float]]:
    """ES, EM, PS, PM, NS, NM of each record (see the module docstring), in one batched pass.

    Returns:
        Per record: ``efficacy_score`` (0 or 1), ``efficacy_magnitude``, ``paraphrase_score``,
        ``paraphrase_magnitude``, ``neighbourhood_score``, ``neighbourhood_magnitude`` and the
        rewrite prompt's ``logprob_new`` and ``logprob_true`` (mean per token).
    """
    jobs = [(i, *job) for i, record in enumerate(records) for job in _pairs(record)]
    lps = target_log_probs(
        model,
        tokenizer,
        [prompt for _, _, prompt, _ in jobs],
        [target for *_, target in jobs],
        batch_size=batch_size,
    )
    grouped: list[dict[str, list[float]]] = [
        {"rewrite": [], "paraphrase": [], "neighbourhood": []} for _ in records
    ]
    for (i, group, _, _), lp in zip(jobs, lps, strict=True):
        grouped[i][group].append(lp)
    out = []
    for groups in grouped:
        es, em = _compare(groups["rewrite"])
        ps, pm = _compare(groups["paraphrase"])
        ns, nm = _compare(groups["neighbourhood"])
        out.append(
            {
                "efficacy_score": es,
                "efficacy_magnitude": em,
                "paraphrase_score": ps,
                "paraphrase_magnitude": pm,
                "neighbourhood_score": ns,
                "neighbourhood_magnitude": nm,
                "logprob_new": groups["rewrite"][0],
                "logprob_true": groups["rewrite"][1],
            }
        )
    return out


# --- fluency: n-gram entropy -------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Words and punctuation marks (``"Paris, France."`` -> ``Paris , France .``)."""
    return _WORD.findall(text)


def ngram_entropy(
    text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)
) -> float:
    r"""ROME's n-gram entropy of one text: the mean over ``n`` of ``weight_n * H_n``, where
    :math:`H_n = -\sum_g f_g \log_2 f_g` over the relative frequencies :math:`f_g` of its word
    n-grams (0 when the text has fewer than ``n`` words).

    >>> round(ngram_entropy("a b a b"), 4)  # H2 = 0.9183 (ab twice, ba once), H3 = 1
    0.9728
    """
    if len(ns) != len(weights) or not ns:
        raise ConfigError(f"need one weight per n, got ns={list(ns)}, weights={list(weights)}")
    tokens = word_tokens(text)
    terms = []
    for n, weight in zip(ns, weights, strict=True):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        entropy = -sum(c / total * math.log2(c / total) for c in grams.values())
        terms.append(weight * entropy)
    return sum(terms) / len(terms)


def fluency(texts: Iterable[str]) -> float:
    """Mean :func:`ngram_entropy` of ``texts`` (ROME's generation entropy, GE)."""
    values = [ngram_entropy(t) for t in texts]
    if not values:
        raise ConfigError("fluency needs at least one text")
    return sum(values) / len(values)


# --- consistency: TF-IDF similarity ------------------------------------------------------------

_TFIDF_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class TfIdf:
    r"""TF-IDF vectors with scikit-learn's ``TfidfVectorizer`` defaults.

    Lower-cased words of two or more word characters; term frequency = raw count; smoothed
    :math:`\mathrm{idf}(w) = \ln\frac{1 + N}{1 + \mathrm{df}(w)} + 1` over :math:`N` fitted
    documents; each vector scaled to unit length. Words never seen in fitting are ignored.
    """

    def __init__(self, idf: Mapping[str, float]) -> None:
        if not idf:
            raise DataError("a TF-IDF model needs a non-empty vocabulary")
        self.idf = dict(idf)

    @staticmethod
    def tokens(text: str) -> list[str]:
        return _TFIDF_TOKEN.findall(text.lower())

    @classmethod
    def fit(cls, documents: Iterable[str]) -> "TfIdf":
        """Learn the vocabulary and the IDF of each word from ``documents``."""
        df: Counter[str] = Counter()
        n = 0
        for doc in documents:
            df.update(set(cls.tokens(doc)))
            n += 1
        if n == 0 or not df:
            raise DataError("cannot fit TF-IDF statistics on no text")
        return cls({w: math.log((1 + n) / (1 + d)) + 1 for w, d in df.items()})

    def vector(self, text: str) -> dict[str, float]:
        """The unit-length TF-IDF vector of ``text``, as ``{word: weight}`` (empty if it has no
        known word)."""
        counts = Counter(w for w in self.tokens(text) if w in self.idf)
        weights = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in weights.values()))
        return {w: v / norm for w, v in weights.items()} if norm > 0 else {}

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the TF-IDF vectors of ``a`` and ``b`` (0 when either has no
        known word)."""
        va, vb = self.vector(a), self.vector(b)
        if len(va) > len(vb):
            va, vb = vb, va
        return sum(v * vb.get(w, 0.0) for w, v in va.items())


@functools.lru_cache(maxsize=2)
def wiki_tfidf(source: str = "wiki-sample", split: SplitName = "train") -> TfIdf:
    """IDF statistics of a text source's documents (the ``wiki-sample`` Wikipedia articles:
    ROME fits its ``TfidfVectorizer`` on Wikipedia). Cached."""
    docs = corpus.load_documents(source, split=split)
    return TfIdf.fit(d.text for d in docs)


# --- generation metrics ------------------------------------------------------------------------


def default_generation() -> GenerationConfig:
    """ROME's generation setting: 100 new tokens, top-5 sampling (seeded here)."""
    return GenerationConfig(max_new_tokens=100, temperature=1.0, top_k=5, seed=0)


def generate_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    *,
    batch_size: int = 32,
) -> list[str]:
    """Continue each prompt; return prompt + continuation (ROME's ``generate_fast`` text).

    A row stops at any special token (an instruct model's ``<|im_end|>``, the end of text),
    which is left out of the text. Prompts are batched (left-padded) in the given order, so a
    seeded config gives the same texts for the same prompts and model.
    """
    config = config or default_generation()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    stops = sorted(set(getattr(tokenizer, "special_tokens", {}).values()))
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    texts = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            out = generate(
                model, [tokenizer.encode(p) for p in chunk], config, pad_id=pad, eos_ids=stops
            )
            for prompt, ids in zip(chunk, out.sequences, strict=True):
                texts.append(prompt + tokenizer.decode([t for t in ids if t not in stops]))
    return texts


def generation_metrics(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: Sequence[FactRecord],
    *,
    config: GenerationConfig | None = None,
    tfidf: TfIdf | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Fluency and consistency of each record's generated text.

    Args:
        config: How to generate (default :func:`default_generation`: ROME's 100 tokens,
            top-5, seeded); a cheaper one (fewer tokens) changes the entropy's scale.
        tfidf: IDF statistics (default :func:`wiki_tfidf`).

    Returns:
        Per record: ``fluency`` (mean n-gram entropy of its texts), ``consistency`` (TF-IDF
        cosine of its texts and its reference texts) and the ``texts`` themselves.
    """
    tfidf = tfidf or wiki_tfidf()
    prompts = [p for r in records for p in r.generation_prompts]
    texts = generate_texts(model, tokenizer, prompts, config, batch_size=batch_size)
    out = []
    start = 0
    for record in records:
        own = texts[start : start + len(record.generation_prompts)]
        start += len(own)
        out.append(
            {
                "fluency": fluency(own),
                "consistency": tfidf.similarity(" ".join(own), " ".join(record.reference_texts)),
                "texts": own,
            }
        )
    return out


# --- everything, and summaries ------------------------------------------------------------------

PROBABILITY_KEYS = (
    "efficacy_score",
    "efficacy_magnitude",
    "paraphrase_score",
    "paraphrase_magnitude",
    "neighbourhood_score",
    "neighbourhood_magnitude",
)
GENERATION_KEYS = ("fluency", "consistency")


def record_metrics(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: Sequence[FactRecord],
    *,
    generation: bool = True,
    config: GenerationConfig | None = None,
    tfidf: TfIdf | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Every metric of every record, as one dict per record (probabilities, and with
    ``generation`` also fluency, consistency and the generated texts). For single-edit
    evaluation call it with ``[record]`` on the model edited with that record."""
    if not records:
        raise ConfigError("no records to evaluate")
    rows = probability_metrics(model, tokenizer, records, batch_size=batch_size)
    if generation:
        extra = generation_metrics(
            model, tokenizer, records, config=config, tfidf=tfidf, batch_size=batch_size
        )
        rows = [{**a, **b} for a, b in zip(rows, extra, strict=True)]
    return [{"case_id": r.case_id, **row} for r, row in zip(records, rows, strict=True)]


def _harmonic(values: Sequence[float]) -> float:
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean, standard deviation (``ddof=1``), 95% confidence half-width (normal,
    :math:`1.96\\,s/\\sqrt{n}`) and count of each metric over records, plus ``score``: the
    harmonic mean of the mean efficacy, paraphrase and neighbourhood scores (no spread)."""
    if not rows:
        raise ConfigError("no per-record metrics to summarize")
    out: dict[str, dict[str, float | None]] = {}
    for key in (*PROBABILITY_KEYS, *GENERATION_KEYS, "logprob_new", "logprob_true"):
        values = [float(r[key]) for r in rows if key in r]
        if not values:
            continue
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        out[key] = {"mean": mean, "std": std, "ci95": 1.96 * std / math.sqrt(n), "n": n}
    parts = [out[k]["mean"] for k in ("efficacy_score", "paraphrase_score", "neighbourhood_score")]
    score = _harmonic([float(p) for p in parts if p is not None])
    out["score"] = {"mean": score, "std": None, "ci95": None, "n": len(rows)}
    return out


def evaluate_edits(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: Sequence[FactRecord],
    *,
    generation: bool = True,
    config: GenerationConfig | None = None,
    tfidf: TfIdf | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, float | None]]:
    """CounterFact's metrics of ``model`` on ``records``, summarised (:func:`summarize`).

    For a batch edit (MEMIT, or the unedited model) pass the edited model and all records; for
    single edits, collect :func:`record_metrics` of each edited model and :func:`summarize`.
    """
    rows = record_metrics(
        model,
        tokenizer,
        records,
        generation=generation,
        config=config,
        tfidf=tfidf,
        batch_size=batch_size,
    )
    return summarize(rows)


TABLE_COLUMNS = (
    ("Score", "score", True),
    ("Efficacy", "efficacy_score", True),
    ("EM", "efficacy_magnitude", True),
    ("Paraphrase", "paraphrase_score", True),
    ("PM", "paraphrase_magnitude", True),
    ("Neighbourhood", "neighbourhood_score", True),
    ("NM", "neighbourhood_magnitude", True),
    ("Fluency", "fluency", False),
    ("Consistency", "consistency", True),
)
"""(header, metric key, shown as a percentage) of :func:`metrics_table`, ROME's table 4 order."""


def metrics_table(results: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> str:
    """A Markdown table, one row per method (``{"ROME": evaluate_edits(...), ...}``): scores and
    magnitudes in percent with their 95% interval, fluency in bits; missing metrics as "-"."""
    rows = []
    for method, summary in results.items():
        row: list[str] = [method]
        for _, key, percent in TABLE_COLUMNS:
            stat = summary.get(key)
            if stat is None or stat.get("mean") is None:
                row.append("-")
                continue
            scale = 100.0 if percent else 1.0
            mean = float(stat["mean"] or 0.0) * scale
            ci = stat.get("ci95")
            row.append(f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {float(ci) * scale:.1f}")
        rows.append(row)
    header = ["Method", *(h for h, _, _ in TABLE_COLUMNS)]
    return markdown_table(header, rows, align="l" + "r" * len(TABLE_COLUMNS))
