"""CounterFact's editing metrics: target log-probabilities, the probability scores on a model
whose probabilities we choose, n-gram entropy, TF-IDF consistency and the summaries."""

import math
from typing import Any, cast

import pytest
import torch
from torch import nn

from groundwork.edit.facts import FactRecord, Neighbour
from groundwork.edit.metrics import (
    TfIdf,
    evaluate_edits,
    fluency,
    generation_metrics,
    metrics_table,
    ngram_entropy,
    probability_metrics,
    record_metrics,
    summarize,
    target_log_probs,
    target_token_log_probs,
    word_tokens,
)
from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.models.llama import Llama, LlamaConfig
from groundwork.tokenize.base import Tokenizer
from groundwork.tokenize.char import CharTokenizer

torch.set_num_threads(1)


# --- a tiny random Llama with a character tokenizer ---------------------------------------------

TEXT = "The capital of France is Paris. The capital of Italy is Rome. Madrid, Berlin!"


@pytest.fixture(scope="module")
def tiny() -> tuple[Llama, CharTokenizer]:
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_name("tiny")).eval()
    return model, CharTokenizer.train([TEXT], vocab_size=100)


def manual_log_probs(model: nn.Module, tok: Tokenizer, prompt: str, target: str) -> torch.Tensor:
    """Teacher forcing written out: one unpadded sequence, one position per target token."""
    p, t = tok.encode(prompt), tok.encode(target)
    with torch.no_grad():
        logits = model(torch.tensor([p + t]))[0]  # (T, V), the last position is unused
    lp = torch.log_softmax(logits.float(), dim=-1)
    return torch.stack([lp[len(p) - 1 + j, t[j]] for j in range(len(t))])


def test_target_log_probs_match_manual_teacher_forcing(tiny):
    model, tok = tiny
    prompts = ["The capital of France is", "The capital of Italy is", "Berlin"]
    targets = [" Paris", " Rome", "!"]  # multi-token (characters) and single-token targets
    per_token = target_token_log_probs(model, tok, prompts, targets)
    means = target_log_probs(model, tok, prompts, targets)
    for prompt, target, got, mean in zip(prompts, targets, per_token, means, strict=True):
        want = manual_log_probs(model, tok, prompt, target)
        assert got.shape == (len(tok.encode(target)),)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert mean == pytest.approx(want.mean().item(), abs=1e-5)


def test_target_log_probs_do_not_depend_on_padding_or_batching(tiny):
    model, tok = tiny
    prompts = ["The capital of France is", "Rome", "The capital of Italy is", "Madrid,"]
    targets = [" Paris.", " is", " Rome", " Berlin!"]
    together = target_log_probs(model, tok, prompts, targets, batch_size=4)  # right-padded
    alone = [
        target_log_probs(model, tok, [p], [t], batch_size=1)[0]
        for p, t in zip(prompts, targets, strict=True)
    ]
    assert together == pytest.approx(alone, abs=1e-5)
    # a shorter row next to a long one is padded; the order of inputs is restored
    pair = target_log_probs(model, tok, prompts[:2], targets[:2], batch_size=2)
    assert pair == pytest.approx(alone[:2], abs=1e-5)


def test_target_log_probs_refuse_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="pair them up"):
        target_log_probs(model, tok, ["a", "b"], [" c"])
    with pytest.raises(ConfigError, match="empty"):
        target_log_probs(model, tok, ["The"], [""])
    with pytest.raises(ConfigError, match="context"):
        target_log_probs(model, tok, ["The capital " * 20], [" Paris"])


# --- a model whose next-token probabilities we choose -------------------------------------------


class WordTokenizer:
    """One id per space-separated word (``" Paris"`` is the word ``Paris``)."""

    eot_id = None

    def __init__(self, words: list[str]) -> None:
        self.ids = {w: i for i, w in enumerate(words)}
        self.words = words

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return "".join(" " + self.words[i] for i in ids)


class ChosenProbabilities(nn.Module):
    """After a listed prompt, the next token has the listed probabilities (the rest of the mass
    is spread evenly over the other tokens); after anything else, a uniform distribution."""

    def __init__(self, tok: WordTokenizer, table: dict[str, dict[str, float]]) -> None:
        super().__init__()
        self.config = LlamaConfig.from_name("tiny", vocab_size=len(tok.words))
        self.weight = nn.Parameter(torch.zeros(1))  # gives the model a device
        V = len(tok.words)
        self.table: dict[tuple[int, ...], torch.Tensor] = {}
        for prompt, probs in table.items():
            p = torch.full((V,), (1 - sum(probs.values())) / (V - len(probs)))
            for word, prob in probs.items():
                p[tok.ids[word]] = prob
            self.table[tuple(tok.encode(prompt))] = p.log()

    def forward(self, idx: torch.Tensor, **_: Any) -> torch.Tensor:
        B, T = idx.shape
        logits = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            for t in range(T):
                key = tuple(idx[b, : t + 1].tolist())
                if key in self.table:
                    logits[b, t] = self.table[key]
        return logits


WORDS = "The capital of France Italy Spain Germany is city has its in Paris Rome Madrid Berlin"

RECORD = FactRecord(
    case_id=7,
    relation="capital",
    subject="France",
    prompt="The capital of France is",
    target_new=" Rome",
    target_true=" Paris",
    model_answer="Paris",
    paraphrase_prompts=("The capital city of France is", "France has its capital in"),
    neighbourhood=(
        Neighbour("Spain", "The capital of Spain is", " Madrid"),
        Neighbour("Germany", "The capital of Germany is", " Berlin"),
    ),
    generation_prompts=("France is",),
    reference_texts=("Italy is a country. Rome is its capital.",),
)


def chosen_model(rewrite: dict[str, float]) -> tuple[ChosenProbabilities, WordTokenizer]:
    tok = WordTokenizer(WORDS.split())
    table = {
        "The capital of France is": rewrite,
        "The capital city of France is": {"Rome": 0.5, "Paris": 0.2},  # the edit generalised
        "France has its capital in": {"Rome": 0.1, "Paris": 0.4},  # here it did not
        "The capital of Spain is": {"Madrid": 0.7, "Rome": 0.1},  # the neighbour kept its fact
        "The capital of Germany is": {"Berlin": 0.2, "Rome": 0.5},  # the edit spread here
    }
    return ChosenProbabilities(tok, table), tok


def test_probability_metrics_follow_counterfact_definitions():
    model, tok = chosen_model({"Rome": 0.6, "Paris": 0.3})
    [m] = probability_metrics(model, cast(Tokenizer, tok), [RECORD])
    assert m["efficacy_score"] == 1.0
    assert m["efficacy_magnitude"] == pytest.approx(0.6 - 0.3, abs=1e-6)
    assert m["logprob_new"] == pytest.approx(math.log(0.6), abs=1e-6)
    assert m["logprob_true"] == pytest.approx(math.log(0.3), abs=1e-6)
    assert m["paraphrase_score"] == 0.5
    assert m["paraphrase_magnitude"] == pytest.approx(((0.5 - 0.2) + (0.1 - 0.4)) / 2, abs=1e-6)
    assert m["neighbourhood_score"] == 0.5  # Spain kept Madrid; Germany now prefers Rome
    assert m["neighbourhood_magnitude"] == pytest.approx(((0.7 - 0.1) + (0.2 - 0.5)) / 2, abs=1e-6)


def test_an_edit_that_did_not_take_has_zero_efficacy():
    model, tok = chosen_model({"Rome": 0.05, "Paris": 0.8})
    [m] = probability_metrics(model, cast(Tokenizer, tok), [RECORD, RECORD])[:1]
    assert m["efficacy_score"] == 0.0
    assert m["efficacy_magnitude"] == pytest.approx(0.05 - 0.8, abs=1e-6)


def test_summary_and_score():
    model, tok = chosen_model({"Rome": 0.6, "Paris": 0.3})
    rows = record_metrics(model, cast(Tokenizer, tok), [RECORD], generation=False)
    assert rows[0]["case_id"] == 7
    rows.append({**rows[0], "efficacy_score": 0.0})  # a second record whose edit failed
    s = summarize(rows)
    assert s["efficacy_score"]["mean"] == 0.5
    assert s["efficacy_score"]["std"] == pytest.approx(math.sqrt(0.5))  # ddof=1
    assert s["efficacy_score"]["ci95"] == pytest.approx(1.96 * math.sqrt(0.5) / math.sqrt(2))
    assert s["efficacy_score"]["n"] == 2
    assert s["score"]["mean"] == pytest.approx(3 / (1 / 0.5 + 1 / 0.5 + 1 / 0.5))  # harmonic
    assert "fluency" not in s
    table = metrics_table({"unedited": s})
    assert table.splitlines()[0].startswith("| Method | Score | Efficacy |")
    assert "| unedited | 50.0 | 50.0 ± 98.0 |" in table
    assert table.splitlines()[2].endswith("| - | - |")  # no generation metrics


def test_evaluate_edits_refuses_no_records():
    model, tok = chosen_model({"Rome": 0.6, "Paris": 0.3})
    with pytest.raises(ConfigError):
        evaluate_edits(model, cast(Tokenizer, tok), [], generation=False)


# --- fluency -----------------------------------------------------------------------------------


def test_ngram_entropy_by_hand():
    # words a b a b a: bigrams ab ba ab ba -> H2 = 1 bit; trigrams aba bab aba -> H3 = H(2/3, 1/3)
    h2 = 1.0
    h3 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b a") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("a b a b a", ns=(2,), weights=(1.0,)) == pytest.approx(1.0)
    assert ngram_entropy("one") == 0.0  # no bigram at all
    assert ngram_entropy("Paris Paris Paris Paris") == 0.0  # one repeated n-gram
    assert word_tokens("Paris, France.") == ["Paris", ",", "France", "."]
    varied = "The city has a river, an old castle and a famous university."
    assert fluency([varied]) > fluency(["the city the city the city the city the city"])
    with pytest.raises(ConfigError):
        ngram_entropy("a b", ns=(2, 3), weights=(1.0,))


# --- consistency -------------------------------------------------------------------------------

DOCS = [
    "Paris is the capital of France.",
    "Rome is the capital of Italy, and Rome is old.",
    "The Tiber flows through Rome.",
]


def test_tfidf_by_hand():
    tfidf = TfIdf.fit(DOCS)
    n = len(DOCS)
    assert tfidf.idf["rome"] == pytest.approx(math.log((1 + n) / (1 + 2)) + 1)
    assert tfidf.idf["tiber"] == pytest.approx(math.log((1 + n) / (1 + 1)) + 1)
    assert "a" not in tfidf.idf  # one-letter words are not tokens
    v = tfidf.vector("Rome rome Tiber unknownword")
    w_rome, w_tiber = 2 * tfidf.idf["rome"], tfidf.idf["tiber"]
    norm = math.hypot(w_rome, w_tiber)
    assert v == pytest.approx({"rome": w_rome / norm, "tiber": w_tiber / norm})
    assert tfidf.similarity("Rome", "rome ROME") == pytest.approx(1.0)
    assert tfidf.similarity("Rome", "Paris") == 0.0
    assert tfidf.similarity("zzz", "Rome") == 0.0  # no known word


def test_tfidf_matches_scikit_learn():
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    ours = TfIdf.fit(DOCS)
    theirs = sklearn_text.TfidfVectorizer().fit(DOCS)
    vocab = theirs.vocabulary_
    assert set(vocab) == set(ours.idf)
    for word, j in vocab.items():
        assert ours.idf[word] == pytest.approx(theirs.idf_[j])
    a, b = "Rome is the capital of Italy", "The capital of France is Paris, not Rome"
    m = theirs.transform([a, b]).toarray()
    assert ours.similarity(a, b) == pytest.approx(float(m[0] @ m[1]))


def test_generation_metrics_on_a_tiny_model(tiny):
    model, tok = tiny
    record = FactRecord(
        case_id=0,
        relation="capital",
        subject="France",
        prompt="The capital of France is",
        target_new=" Rome",
        target_true=" Paris",
        model_answer="Paris",
        paraphrase_prompts=("The capital of France is",),
        neighbourhood=(Neighbour("Italy", "The capital of Italy is", " Rome"),),
        generation_prompts=("France is", "The capital of France is"),
        reference_texts=("The capital of Italy is Rome.",),
    )
    config = GenerationConfig(max_new_tokens=6, temperature=0.0)
    [g] = generation_metrics(model, tok, [record], config=config, tfidf=TfIdf.fit(DOCS))
    for text, prompt in zip(g["texts"], record.generation_prompts, strict=True):
        assert text.startswith(prompt) and len(text) > len(prompt)
    assert g["fluency"] == pytest.approx(fluency(g["texts"]))
    assert 0.0 <= g["consistency"] <= 1.0 + 1e-9
    summary = evaluate_edits(model, tok, [record], config=config, tfidf=TfIdf.fit(DOCS))
    assert summary["fluency"]["mean"] == pytest.approx(g["fluency"])
    assert set(summary) >= {"efficacy_score", "neighbourhood_score", "consistency", "score"}
