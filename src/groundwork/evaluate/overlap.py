r"""N-gram overlap metrics for generated text: corpus BLEU (Papineni et al. 2002) and chrF / chrF++
(Popović 2015, 2017), written from scratch and equal to sacreBLEU 2.x's defaults
(``sacrebleu.corpus_bleu(hyps, [refs])``, ``sacrebleu.corpus_chrf(hyps, [refs])``) to 1e-9, with
one reference per hypothesis.

**BLEU.** Each segment is right-stripped and tokenized with the ``13a`` tokenizer (the rules of
WMT's ``mteval-v13a.pl``, :func:`tokenize_13a`). With $c_n$ the clipped n-gram matches
(a hypothesis n-gram counts at most as often as it occurs in its reference) and $t_n$ the
hypothesis n-grams, *both summed over the corpus*, $c$ the hypothesis length and $r$ the reference
length (in tokens, summed over the corpus),

$$ p_n = \frac{c_n}{t_n}, \qquad
   \mathrm{BP} = \begin{cases} 1 & c \ge r \\ e^{1 - r/c} & c < r \end{cases}, \qquad
   \mathrm{BLEU} = 100 \cdot \mathrm{BP} \cdot \exp\Big(\frac{1}{N} \sum_{n=1}^{N} \log p_n\Big),
   \quad N = 4. $$

Smoothing is sacreBLEU's default ``exp`` (NIST ``mteval``; method 3 of Chen and Cherry 2014): the
$k$-th order with $c_n = 0$ gets $p_n = 1 / (2^k t_n)$. What is *not* smoothed, as in sacreBLEU:
a corpus with no matching n-gram of any order scores 0 (all precisions reported as 0), and so does
one with no n-gram of some order at all ($t_n = 0$, e.g. every hypothesis shorter than 4 tokens),
as $\log 0 = -\infty$. A corpus of empty hypotheses has $c = 0$ and $\mathrm{BP} = 0$.

**chrF.** Character n-grams of orders $1..6$ from each segment with all whitespace removed (and,
for chrF++, word n-grams of orders $1..2$ from words whose one leading or trailing punctuation
mark is split off). For each order the hypothesis, reference and matching n-gram counts are summed
over the corpus, giving $P_n$ and $R_n$; the orders where both hypothesis and reference have
n-grams are averaged (sacreBLEU's "effective order", its default; not the ``eps_smoothing``
variant that averages per-order F-scores), and

$$ \mathrm{chrF}_\beta = 100 \cdot \frac{(1 + \beta^2)\,\bar P \bar R}{\beta^2 \bar P + \bar R},
   \qquad \beta = 2. $$

One sacreBLEU detail kept for parity: a segment whose reference has no n-gram of some order (a
reference shorter than $n$ characters) adds nothing to that order's hypothesis count either.

**Bad input.** Hypotheses and references must be two sequences of strings of the same length
(:class:`~groundwork.errors.ConfigError` otherwise, naming the counts). An empty corpus raises
:class:`~groundwork.errors.EmptyCorpusError`: a score of nothing is almost always a bug upstream
(sacreBLEU fails on it with an ``IndexError``). Empty *strings* are fine.

References: Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine
Translation"; Post 2018, "A Call for Clarity in Reporting BLEU Scores" (sacreBLEU); Chen and
Cherry 2014, "A Systematic Comparison of Smoothing Techniques for Sentence-Level BLEU"; Popović
2015, "chrF: character n-gram F-score for automatic MT evaluation"; Popović 2017, "chrF++: words
helping character n-grams".

Chapter 11 (Evaluation) scores generated text with these.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from groundwork.errors import ConfigError, EmptyCorpusError

MAX_ORDER = 4
"""BLEU's largest n-gram order $N$."""

# --- the 13a tokenizer ----------------------------------------------------------------------------

# ASCII symbols that always become tokens of their own. Not among them: the apostrophe, and the
# period, comma and dash, which the number-aware rules below handle.
_SYMBOL = re.compile(r"""([ !"#$%&()*+/:;<=>?@\[\\\]^_`{|}~])""")
# A period or comma is split off unless it sits between two digits ("3.14", "1,000" stay whole):
# first where a non-digit comes before it ("end." -> "end ."; ".5" -> ". 5") ...
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")
# ... then where a non-digit comes after it ("1,a" -> "1 , a").
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
# A dash after a digit is split off ("1939-1945" -> "1939 - 1945"; "well-known" is kept).
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")

# mteval input is SGML: these four entities stand for characters. Order matters ("&amp;lt;" -> "<").
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(text: str) -> str:
    """Tokenize one segment like WMT's ``mteval-v13a.pl`` (sacreBLEU's default ``13a``).

    Removes ``<skipped>`` markers, joins words hyphenated across a line break (``"-\\n"``), turns
    other newlines into spaces, unescapes ``&quot; &amp; &lt; &gt;``, puts spaces around symbols,
    splits periods and commas off unless they sit between digits, splits a dash off a digit before
    it, and leaves single spaces between tokens. :func:`corpus_bleu` also right-strips each
    segment first; this function does not.

    Example: ``tokenize_13a('Hi, "you" &amp; me: 3.14 and 1939-45.')`` is
    ``'Hi , " you " & me : 3.14 and 1939 - 45 .'``.
    """
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    # The padding lets the period/comma rules see a non-digit at either end of the segment.
    text = f" {text} "
    text = _SYMBOL.sub(r" \1 ", text)
    text = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", text)
    text = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", text)
    return " ".join(text.split())


# --- input checks -------------------------------------------------------------------------------


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, str):
            raise ConfigError(f"{name} must be a sequence of strings (one per segment), got a str")
    if len(hypotheses) != len(references):
        raise ConfigError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; "
            "pass exactly one reference string per hypothesis"
        )
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    if not hypotheses:
        raise EmptyCorpusError("no segments to score (hypotheses and references are empty)")


# --- BLEU -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BleuScore:
    """A corpus BLEU score and its parts (the numbers sacreBLEU prints)."""

    score: float
    """BLEU, from 0 to 100."""
    precisions: tuple[float, ...]
    """The (smoothed) n-gram precisions $p_1..p_4$, in percent."""
    brevity_penalty: float
    """$\\mathrm{BP}$, from 0 to 1."""
    hyp_len: int
    """Hypothesis tokens in the corpus ($c$)."""
    ref_len: int
    """Reference tokens in the corpus ($r$)."""


def _ngram_counts(tokens: Sequence[str], max_order: int) -> Counter[tuple[str, ...]]:
    """All n-grams of orders ``1..max_order``: ``["a", "b", "a"], 2 -> {("a",): 2, ("b",): 1,
    ("a", "b"): 1, ("b", "a"): 1}``."""
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


def _bleu_from_counts(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int
) -> BleuScore:
    # BP = 1 if c >= r else exp(1 - r / c); no hypothesis tokens at all: BP = 0
    if hyp_len >= ref_len:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    order = len(matches)
    if not any(matches):
        return BleuScore(0.0, (0.0,) * order, brevity_penalty, hyp_len, ref_len)
    precisions = []
    doubling = 1.0  # 2^k for the k-th order without matches
    for c_n, t_n in zip(matches, totals, strict=True):
        if t_n == 0:  # no n-grams of this order (nor of any higher one): p_n = 0
            precisions.append(0.0)
        elif c_n == 0:  # 'exp' smoothing: p_n = 1 / (2^k t_n)
            doubling *= 2
            precisions.append(100.0 / (doubling * t_n))
        else:  # p_n = c_n / t_n
            precisions.append(100.0 * c_n / t_n)
    if 0.0 in precisions:  # log 0 = -inf
        score = 0.0
    else:  # BLEU = BP * exp(mean_n log p_n), p_n in percent
        score = brevity_penalty * math.exp(sum(math.log(p) for p in precisions) / order)
    return BleuScore(score, tuple(precisions), brevity_penalty, hyp_len, ref_len)


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False
) -> BleuScore:
    """Corpus BLEU of ``hypotheses`` against one reference each, as sacreBLEU computes by default.

    Args:
        hypotheses: One generated segment per item.
        references: The reference for each hypothesis, in the same order.
        lowercase: Lowercase both sides before tokenizing (sacreBLEU's ``lowercase=True``).

    Returns:
        The score (0 to 100) with its precisions, brevity penalty and lengths.

    Raises:
        ConfigError: The two sequences differ in length or hold something other than strings.
        EmptyCorpusError: There are no segments.

    Example: ``corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]).score`` is
    100 (``100.00000000000004``: exp(log 100), rounded as sacreBLEU rounds it);
    ``corpus_bleu(["the cat"], ["the cat sat"])`` has ``precisions`` 100, 100, 0, 0 and scores 0
    (no 3-grams in the hypothesis).
    """
    _check_corpus(hypotheses, references)
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    hyp_len = ref_len = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        if lowercase:
            hypothesis, reference = hypothesis.lower(), reference.lower()
        hyp_tokens = tokenize_13a(hypothesis.rstrip()).split()
        ref_tokens = tokenize_13a(reference.rstrip()).split()
        hyp_len += len(hyp_tokens)
        ref_len += len(ref_tokens)
        ref_counts = _ngram_counts(ref_tokens, MAX_ORDER)
        for ngram, count in _ngram_counts(hyp_tokens, MAX_ORDER).items():
            totals[len(ngram) - 1] += count
            # clipped: an n-gram matches at most as often as the reference has it
            matches[len(ngram) - 1] += min(count, ref_counts[ngram])
    return _bleu_from_counts(matches, totals, hyp_len, ref_len)


# --- chrF -----------------------------------------------------------------------------------------


def _split_punctuation(text: str) -> list[str]:
    """chrF++'s words: split on whitespace, then split one punctuation mark off the end of a word
    (or else off its start): ``"(hi) there, you" -> ["(hi", ")", "there", ",", "you"]``."""
    words = []
    for word in text.split():
        if len(word) > 1 and word[-1] in string.punctuation:
            words += [word[:-1], word[-1]]
        elif len(word) > 1 and word[0] in string.punctuation:
            words += [word[0], word[1:]]
        else:
            words.append(word)
    return words


def _chrf_ngrams(
    text: str, char_order: int, word_order: int
) -> list[Counter[str | tuple[str, ...]]]:
    """One counter per order: character n-grams ``1..char_order`` (whitespace removed), then word
    n-grams ``1..word_order``."""
    chars = "".join(text.split())
    counts: list[Counter[str | tuple[str, ...]]] = [
        Counter(chars[i : i + n] for i in range(len(chars) - n + 1))
        for n in range(1, char_order + 1)
    ]
    if word_order > 0:
        words = _split_punctuation(text)
        counts += [
            Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
            for n in range(1, word_order + 1)
        ]
    return counts


def _check_chrf_args(char_order: int, word_order: int, beta: float) -> None:
    for name, value in (("char_order", char_order), ("word_order", word_order)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    if char_order + word_order == 0:
        raise ConfigError("char_order and word_order are both 0: there are no n-grams to compare")
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}")


# --8<-- [start:chrf]
def corpus_chrf(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    char_order: int = 6,
    word_order: int = 0,
    beta: float = 2.0,
) -> float:
    """Corpus chrF (``word_order=0``) or chrF++ (``word_order=2``), as sacreBLEU computes it.

    Args:
        hypotheses: One generated segment per item.
        references: The reference for each hypothesis, in the same order.
        char_order: Largest character n-gram order.
        word_order: Largest word n-gram order (0: chrF; 2: chrF++).
        beta: Weight of recall relative to precision.

    Returns:
        The score, from 0 to 100.

    Raises:
        ConfigError: The two sequences differ in length or hold something other than strings, or
            an order or ``beta`` is out of range.
        EmptyCorpusError: There are no segments.

    Example: ``corpus_chrf(["ab"], ["abc"])``: orders 1 and 2 have $P = 1$ with $R = 2/3$ and
    $1/2$; order 3 has no hypothesis n-gram and is left out, so $\\bar P = 1$, $\\bar R = 7/12$
    and chrF2 $= 100 \\cdot 5 \\cdot (7/12) / (4 + 7/12) = 63.6...$.
    """
    _check_corpus(hypotheses, references)
    _check_chrf_args(char_order, word_order, beta)
    order = char_order + word_order
    hyp_totals, ref_totals, match_totals = [0] * order, [0] * order, [0] * order
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp_ngrams = _chrf_ngrams(hypothesis, char_order, word_order)
        ref_ngrams = _chrf_ngrams(reference, char_order, word_order)
        for n, (hyp_counts, ref_counts) in enumerate(zip(hyp_ngrams, ref_ngrams, strict=True)):
            # sacreBLEU: hypothesis n-grams count only where the reference has n-grams of order n
            hyp_totals[n] += hyp_counts.total() if ref_counts else 0
            ref_totals[n] += ref_counts.total()
            match_totals[n] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())

    # average P_n and R_n over the orders where both sides have n-grams
    precision_sum = recall_sum = 0.0
    effective_order = 0
    for hyp_total, ref_total, match_total in zip(hyp_totals, ref_totals, match_totals, strict=True):
        if hyp_total > 0 and ref_total > 0:
            precision_sum += match_total / hyp_total
            recall_sum += match_total / ref_total
            effective_order += 1
    if effective_order == 0:
        return 0.0
    precision, recall = precision_sum / effective_order, recall_sum / effective_order
    if precision + recall == 0:
        return 0.0
    # F_beta = (1 + beta^2) P R / (beta^2 P + R)
    factor = beta**2
    return 100 * ((1 + factor) * precision * recall / (factor * precision + recall))


# --8<-- [end:chrf]


def sentence_chrf(
    hypothesis: str,
    reference: str,
    *,
    char_order: int = 6,
    word_order: int = 0,
    beta: float = 2.0,
) -> float:
    """chrF of one hypothesis against one reference: :func:`corpus_chrf` of a one-segment corpus
    (equal to ``sacrebleu.sentence_chrf(hypothesis, [reference])``)."""
    return corpus_chrf(
        [hypothesis], [reference], char_order=char_order, word_order=word_order, beta=beta
    )
