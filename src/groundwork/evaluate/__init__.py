"""Evaluation: perplexity and bits per byte, and a few-shot log-likelihood task harness.

* :mod:`~groundwork.evaluate.perplexity`: sliding-window perplexity of a text or a source.
* :mod:`~groundwork.evaluate.task`: what a task is (documents, prompt, answers) and the registry
  of tasks by name.
* :mod:`~groundwork.evaluate.harness`: GPT-3-style zero/few-shot evaluation (Brown et al. 2020;
  Gao et al., lm-evaluation-harness): multiple choice by log-likelihood, generation by greedy
  decoding and exact match.
* :mod:`~groundwork.evaluate.classification`: accuracy, precision, recall, F1 and the confusion
  matrix of a classifier.
* :mod:`~groundwork.evaluate.overlap`: n-gram overlap of generated text with references: corpus
  BLEU (Papineni et al. 2002) and chrF / chrF++ (Popović 2015), equal to sacreBLEU's defaults.
* :mod:`~groundwork.evaluate.word_vectors`: word analogies (3CosAdd) and word similarity
  (Spearman's rho) of word vectors.
* :mod:`~groundwork.evaluate.report`: several models side by side with a random-guess baseline
  (a Markdown table, and a plot of accuracy against the number of shots).
* :mod:`~groundwork.evaluate.tasks`: real tasks (PIQA, BoolQ, MMLU, ...) and a LAMBADA-style
  Shakespeare task (Paperno et al. 2016); importing this package registers them (no I/O until a
  task's documents are read): the one place that imports them, above both the registry and the
  harness.
* :mod:`~groundwork.evaluate.bias`, :mod:`~groundwork.evaluate.bias_tasks` and
  :mod:`~groundwork.evaluate.truthfulqa`: harms (chapter 21): CrowS-Pairs and StereoSet,
  WinoBias and BBQ, TruthfulQA MC1/MC2; the tasks ``crows-pairs``, ``winobias``, ``bbq``,
  ``truthfulqa-mc1`` and ``truthfulqa-mc2`` are registered here too (TruthfulQA's
  multiple-choice rows ship in no package: its tasks say where to put them).

Chapter 1 (Language models) defines perplexity; chapter 11 (Evaluation) builds the harness.
"""

from groundwork.evaluate import tasks as _tasks  # noqa: F401  (registers the real tasks)
from groundwork.evaluate.bias import register_bias_tasks
from groundwork.evaluate.bias_tasks import register_bias_task_set
from groundwork.evaluate.classification import classification_report
from groundwork.evaluate.harness import (
    build_examples,
    evaluate_task,
    evaluate_tasks,
    format_markdown,
    loglikelihoods,
    sample_shots,
)
from groundwork.evaluate.overlap import (
    BleuScore,
    corpus_bleu,
    corpus_chrf,
    sentence_chrf,
    tokenize_13a,
)
from groundwork.evaluate.perplexity import (
    PerplexityResult,
    perplexity,
    perplexity_of_source,
    perplexity_of_texts,
    sliding_windows,
)
from groundwork.evaluate.report import compare_markdown, plot_accuracy_vs_shots, random_baseline
from groundwork.evaluate.task import (
    TASKS,
    Example,
    Task,
    get_task,
    normalize_answer,
    read_jsonl,
    register_task,
)
from groundwork.evaluate.truthfulqa import register_truthfulqa_tasks
from groundwork.evaluate.word_vectors import evaluate_analogies, evaluate_similarity
from groundwork.evaluate.zero_shot import recall_at_k, zero_shot_classifier, zero_shot_predict

__all__ = [
    "TASKS",
    "BleuScore",
    "Example",
    "PerplexityResult",
    "Task",
    "build_examples",
    "classification_report",
    "compare_markdown",
    "corpus_bleu",
    "corpus_chrf",
    "evaluate_analogies",
    "evaluate_similarity",
    "evaluate_task",
    "evaluate_tasks",
    "format_markdown",
    "get_task",
    "loglikelihoods",
    "normalize_answer",
    "perplexity",
    "perplexity_of_source",
    "perplexity_of_texts",
    "plot_accuracy_vs_shots",
    "random_baseline",
    "read_jsonl",
    "recall_at_k",
    "register_task",
    "sample_shots",
    "sentence_chrf",
    "sliding_windows",
    "tokenize_13a",
    "zero_shot_classifier",
    "zero_shot_predict",
]

register_bias_tasks()  # crows-pairs, beside the tasks of evaluate.tasks
register_bias_task_set()  # winobias, bbq
register_truthfulqa_tasks()  # truthfulqa-mc1, truthfulqa-mc2 (their data may be missing)
