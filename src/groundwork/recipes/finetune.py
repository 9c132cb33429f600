r"""Fine-tuning a pretrained encoder-decoder on a text-to-text task: ``groundwork finetune``.

``groundwork finetune RUN --task folio-modern`` starts from a T5 run (``kind: seq2seq``, e.g.
the span-corruption pretraining of ``configs/shakespeare-t5.yaml``) and trains all its weights
with teacher forcing (:class:`~groundwork.train.objectives.Seq2SeqObjective`) on source ->
target pairs (:class:`~groundwork.train.encoder_data.Seq2SeqPairs`), through the same engine as
pretraining: validation loss at every evaluation, the best model kept, checkpoints, ``--resume``.
Then it decodes every test source (greedy, or beam search with ``--num-beams``) and scores the
outputs against the references with chrF and BLEU (:mod:`groundwork.evaluate.overlap`, equal to
sacrebleu), beside the **copy baseline** that outputs the source unchanged: for a task where
source and target are mostly the same text, that is the score to beat.

The task here, ``folio-modern``, is spelling modernisation: a line of a play as the First Folio
printed it (1623) -> the same line in a modern edition (:mod:`groundwork.corpus.parallel`). The
test plays are those the ``shakespeare`` source holds out for validation, so a model pretrained
on its training split has never read them, in either spelling.

Sources and targets are the tokenizer's ids followed by the EOS (the run's ``objective.eos_id``);
ones longer than ``max_tokens`` are cut (keeping the EOS) and counted. The run directory is a
``seq2seq`` run like the one it started from, plus a ``finetune`` section (task, base run,
``max_tokens``) and ``metrics.json``, so ``groundwork generate RUN "text"`` decodes with it.
Chapter 6.
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.errors import CheckpointError, ConfigError, UnknownNameError, did_you_mean
from groundwork.fileio import write_json
from groundwork.runs import TOKENIZER_FILE, check_writable, load_run, read_config, write_config
from groundwork.runtime import eval_mode
from groundwork.tables import markdown_table
from groundwork.train.config import TrainConfig

__all__ = [
    "TASKS",
    "Seq2SeqTask",
    "decode_all",
    "finetune",
    "finetune_seq2seq",
    "score_outputs",
]

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Seq2SeqTask:
    """A text-to-text task: ``pairs(split)`` gives its ``(source, target)`` strings for
    ``train``, ``val`` and ``test``."""

    name: str
    description: str
    pairs: Callable[[str], list[tuple[str, str]]]


@functools.cache
def _folio_modern_all() -> tuple[Any, ...]:
    from groundwork.corpus.parallel import folio_modern_pairs

    return tuple(folio_modern_pairs("all"))  # both editions read and aligned once


def _folio_modern(split: str) -> list[tuple[str, str]]:
    return [(p.folio, p.modern) for p in _folio_modern_all() if p.split == split]


TASKS: dict[str, Seq2SeqTask] = {
    "folio-modern": Seq2SeqTask(
        "folio-modern",
        "Shakespeare's lines in First Folio spelling -> modern spelling (held-out plays)",
        _folio_modern,
    ),
}
"""The text-to-text tasks ``groundwork finetune --task`` knows."""


def get_task(name: str) -> Seq2SeqTask:
    """The task called ``name``, or an error naming the known ones."""
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}: {did_you_mean(name, TASKS)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------------
# encoding, decoding, scoring


def encode_texts(
    tokenizer: Any, texts: Sequence[str], eos_id: int, max_tokens: int
) -> tuple[list[list[int]], int]:
    """Each text's ids + EOS, cut to ``max_tokens`` (the EOS kept); and how many were cut."""
    out, cut = [], 0
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) + 1 > max_tokens:
            ids, cut = ids[: max_tokens - 1], cut + 1
        out.append([*ids, eos_id])
    return out, cut


@torch.no_grad()
def decode_all(
    net: nn.Module,
    tokenizer: Any,
    sources: Sequence[Sequence[int]],
    *,
    eos_id: int,
    max_new_tokens: int,
    batch_size: int = 128,
    num_beams: int = 1,
) -> list[str]:
    """The model's output text for every source (greedy, or beam search with ``num_beams``),
    decoded in batches of similar lengths; returned in the order of ``sources``."""
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.seq2seq import beam_search_seq2seq, generate_seq2seq

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, num_beams=num_beams)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    with eval_mode(net):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs = [list(sources[i]) for i in idx]
            if num_beams > 1:
                rows = [beam[0][0] for beam in beam_search_seq2seq(net, inputs, config)]  # type: ignore[arg-type]
            else:
                rows = generate_seq2seq(net, inputs, config).sequences  # type: ignore[arg-type]
            for i, row in zip(idx, rows, strict=True):
                out[i] = tokenizer.decode([t for t in row if t != eos_id])
    return out


def score_outputs(outputs: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """chrF, BLEU (sacrebleu's defaults) and the exact-match rate of ``outputs``, in percent."""
    from groundwork.evaluate.overlap import corpus_bleu, corpus_chrf

    exact = sum(o == r for o, r in zip(outputs, references, strict=True))
    return {
        "chrf": corpus_chrf(outputs, references),
        "bleu": corpus_bleu(outputs, references).score,
        "exact_match": 100.0 * exact / max(len(references), 1),
    }


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class FinetuneResult:
    """What :func:`finetune_seq2seq` measured: the test scores of the model and the baseline."""

    run_dir: Path
    stopped: str
    summary: str
    model_scores: dict[str, float]
    copy_scores: dict[str, float]
    test_pairs: int
    examples: list[tuple[str, str, str]]  # (source, output, reference)


def finetune_seq2seq(
    base: Path,
    *,
    task: str = "folio-modern",
    train_config: TrainConfig,
    out: Path,
    overwrite: bool = False,
    resume: bool = False,
    max_tokens: int = 64,
    test_limit: int | None = None,
    num_beams: int = 1,
) -> FinetuneResult:
    """Fine-tune the T5 run ``base`` on ``task`` into the run directory ``out`` (or, with
    ``resume``, continue the fine-tuning run in ``out``), then score it on the task's test
    split (its first ``test_limit`` pairs if given) against the copy baseline."""
    from groundwork.recipes.pretrain_encoders import t5_metrics
    from groundwork.train.encoder_data import Seq2SeqPairs
    from groundwork.train.engine import train
    from groundwork.train.objectives import Seq2SeqObjective

    if max_tokens < 2:
        raise ConfigError(f"max_tokens must be >= 2 (a token and the EOS), got {max_tokens}")
    if resume:
        previous = read_config(out).get("finetune")
        if not previous:
            raise CheckpointError(f"{out} is not a finetune run: nothing to resume")
        task, base, max_tokens = previous["task"], Path(previous["base"]), previous["max_tokens"]
    else:
        check_writable(out, overwrite=overwrite)
    the_task = get_task(task)
    kind = read_config(out if resume else base).get("kind", "unknown")
    if kind != "seq2seq":
        raise ConfigError(
            f"{base} is a {kind} run; --task {task} fine-tunes an encoder-decoder: give a T5 "
            f"run (kind seq2seq, e.g. from configs/shakespeare-t5.yaml)"
        )
    net, tokenizer, config = load_run(out if resume else base, device="cpu")
    objective = config["objective"]
    eos, pad, start = (int(objective[k]) for k in ("eos_id", "pad_id", "decoder_start_id"))
    texts: dict[str, list[tuple[str, str]]] = {}
    encoded: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
    cut = 0
    for split in ("train", "val", "test"):
        texts[split] = the_task.pairs(split)
        if split == "test" and test_limit is not None:
            texts[split] = texts[split][:test_limit]
        src, n_src = encode_texts(tokenizer, [s for s, _ in texts[split]], eos, max_tokens)
        tgt, n_tgt = encode_texts(tokenizer, [t for _, t in texts[split]], eos, max_tokens)
        encoded[split] = (src, tgt)
        cut += n_src + n_tgt
    if not encoded["train"][0]:
        raise ConfigError(f"task {task} has no training pairs")
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        (out / TOKENIZER_FILE).write_bytes((base / TOKENIZER_FILE).read_bytes())
        write_config(
            out,
            kind="seq2seq",
            model=net.config,
            model_class=config.get("model_class", "T5"),
            task=task,
            objective=objective,
            finetune={"task": task, "base": str(base), "max_tokens": max_tokens},
            train=train_config,
        )
    data = Seq2SeqPairs(
        *encoded["train"],
        batch_size=train_config.batch_size,
        val_sources=encoded["val"][0],
        val_targets=encoded["val"][1],
        pad_id=pad,
        decoder_start_token_id=start,
    )

    def evaluate(model: nn.Module) -> dict[str, float]:
        found = t5_metrics(model, data.val_batches(), train_config.precision)
        return {k: v for k, v in found.items() if k != "val_windows"}

    if train_config.progress:
        params = sum(p.numel() for p in net.parameters())
        print(
            f"fine-tuning {base} ({params:,} parameters) on {task}: "
            f"{len(encoded['train'][0]):,} train / {len(encoded['val'][0]):,} val / "
            f"{len(encoded['test'][0]):,} test pairs ({cut:,} texts cut to {max_tokens} tokens)"
        )
    net.train()
    result = train(
        net, data, Seq2SeqObjective(), train_config, out, resume=resume, evaluate=evaluate
    )
    pairs = texts["test"]
    references = [t for _, t in pairs]
    outputs = decode_all(
        net,
        tokenizer,
        encoded["test"][0],
        eos_id=eos,
        max_new_tokens=max_tokens,
        num_beams=num_beams,
    )
    model_scores = score_outputs(outputs, references)
    copy_scores = score_outputs([s for s, _ in pairs], references)
    write_json(
        out / METRICS_FILE,
        {
            "task": task,
            "test_pairs": len(references),
            "decoding": "greedy" if num_beams == 1 else f"beam search, {num_beams} beams",
            "model": model_scores,
            "copy_baseline": copy_scores,
            "training": result.summary(),
        },
    )
    examples = [(pairs[i][0], outputs[i], references[i]) for i in range(min(5, len(pairs)))]
    return FinetuneResult(
        out, result.stopped, result.summary(), model_scores, copy_scores, len(pairs), examples
    )


def results_table(result: FinetuneResult, base: str) -> str:
    """The test scores as a markdown table: the copy baseline, then the fine-tuned model."""
    rows = [
        [
            "copy the input",
            *(f"{result.copy_scores[k]:.1f}" for k in ("chrf", "bleu", "exact_match")),
        ],
        [
            f"{base} fine-tuned",
            *(f"{result.model_scores[k]:.1f}" for k in ("chrf", "bleu", "exact_match")),
        ],
    ]
    return markdown_table(["system", "chrF", "BLEU", "exact match %"], rows)


# ---------------------------------------------------------------------------------------------
# the command


def _print_head_run(summary: str, sizes: dict[str, int], what: str, table: str, out: Path) -> None:
    print(summary)
    print(f"test split ({', '.join(f'{n:,} {s}' for s, n in sizes.items())} {what}):")
    print(table)
    print(f"run directory: {out} (loss plot: {Path(out) / 'plots' / 'loss.png'})")


def finetune(
    model: str,
    *,
    task: str = "folio-modern",
    train: TrainConfig,
    out: Path = Path("runs/finetune"),
    overwrite: bool = False,
    resume: bool = False,
    max_tokens: int | None = None,
    test_limit: int | None = None,
    num_beams: int = 1,
    pooling: str | None = None,
    train_file: Path | None = None,
    test_file: Path | None = None,
    text_field: str = "text",
    label_field: str = "label",
    method: str = "full",
    peft: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a pretrained model on a task, then score it on the task's test split.

    Use --config RECIPE.yaml (configs/shakespeare-modernize.yaml, configs/dreaddit-minilm.yaml)
    and override any field. Text-to-text tasks (folio-modern) fine-tune a T5 run and print chrF,
    BLEU and exact matches beside copying the input; classification tasks (dreaddit, sms-spam)
    put a classification head on the model and print accuracy and F1 beside a bag-of-words
    logistic regression; labelling tasks (conll-ner) put a token head on it and print entity
    precision, recall and F1 beside each word's most frequent tag; multiple-choice tasks (medqa)
    score each option with a head and print accuracy beside random and longest-option guesses.
    Writes a run directory (the model, its training log, metrics.json).

    Args:
        model: What to start from: a T5 run (text-to-text tasks), or a named pretrained model
            (all-minilm-l6-v2, smollm2-135m-instruct) or run directory (classification).
        task: folio-modern (First Folio -> modern spelling), dreaddit (stress), sms-spam,
            privacy-qa (is a privacy-policy clause relevant to a question), conll-ner (named
            entities of the CoNLL sample), medqa (medical exam questions, five options).
        train: Steps, batch, optimizer, schedule, evaluation.
        out: Run directory to write.
        overwrite: Replace an existing run in --out.
        resume: Text-to-text: continue the fine-tuning run in --out from its last checkpoint.
        max_tokens: Cut texts to this many tokens (text-to-text: EOS included; default 64, 128
            for classification, 256 for each question-option pair; labelling refuses longer
            sentences, default 256).
        test_limit: Text-to-text: score only the first this many test pairs.
        num_beams: Text-to-text: decode the test sources with beam search (1: greedy).
        pooling: Classification and multiple choice: cls, mean or last (default: the model
            family's).
        train_file: Classification on your own data: a CSV, TSV or JSON-lines file with a text
            and a label per row; needs --test-file. --task names the task (default: the
            file's name).
        test_file: The labelled test examples, in the same format (every label must occur in
            --train-file).
        text_field: With --train-file: the column or field holding the text.
        label_field: With --train-file: the column or field holding the label.
        method: Classification: which weights train: full (all), or a parameter-efficient
            method (chapter 13): lora, qlora (LoRA over a 4-bit NF4 base), adapter (Houlsby
            bottleneck adapters), prefix, prompt, ia3 or bitfit. The head always trains.
        peft: Options of --method as JSON, e.g. '{"r": 16, "alpha": 32}' for lora or
            '{"num_virtual_tokens": 20}' for prompt (the fields of its config class).
    """
    from groundwork.recipes import finetune_choice as fch
    from groundwork.recipes import finetune_classify as fc
    from groundwork.recipes import finetune_label as fl

    own_task = None
    if train_file is not None or test_file is not None:
        from groundwork.recipes.task_files import task_from_files

        if train_file is None or test_file is None:
            raise ConfigError("a task of your own needs both --train-file and --test-file")
        own_task = task_from_files(
            Path(train_file),
            Path(test_file),
            text_field=text_field,
            label_field=label_field,
            name=None if task in TASKS or task in fc.CLASSIFICATION_TASKS else task,
        )
    if own_task is not None or task in fc.CLASSIFICATION_TASKS:
        files = {"train_file": str(train_file), "test_file": str(test_file)} if own_task else None
        found = fc.finetune_classifier(
            model,
            task=own_task or task,
            task_files=files,
            train_config=train,
            out=Path(out),
            overwrite=overwrite,
            max_tokens=max_tokens or 128,
            pooling=pooling,
            method=method,
            peft=peft,
        )
        _print_head_run(found.summary, found.sizes, "examples", fc.results_table(found, model), out)
        return
    if method != "full" or peft:
        raise ConfigError(
            f"--method {method} is for classification tasks ({', '.join(fc.CLASSIFICATION_TASKS)}"
            " or --train-file); the other tasks fine-tune every weight"
        )
    if task in fl.LABELLING_TASKS:
        labelled = fl.finetune_labeller(
            model,
            task=task,
            train_config=train,
            out=Path(out),
            overwrite=overwrite,
            max_tokens=max_tokens or 256,
        )
        what = "sentences; entity-level scores, as seqeval"
        _print_head_run(
            labelled.summary, labelled.sizes, what, fl.results_table(labelled, model), out
        )
        return
    if task in fch.CHOICE_TASKS:
        chosen = fch.finetune_choice(
            model,
            task=task,
            train_config=train,
            out=Path(out),
            overwrite=overwrite,
            max_tokens=max_tokens or 256,
            pooling=pooling,
        )
        what = "questions"
        _print_head_run(chosen.summary, chosen.sizes, what, fch.results_table(chosen, model), out)
        return
    if task not in TASKS:
        known = [*TASKS, *fc.CLASSIFICATION_TASKS, *fl.LABELLING_TASKS, *fch.CHOICE_TASKS]
        raise UnknownNameError(f"unknown task {task!r}: {did_you_mean(task, known)}")
    result = finetune_seq2seq(
        Path(model),
        task=task,
        train_config=train,
        out=Path(out),
        overwrite=overwrite,
        resume=resume,
        max_tokens=max_tokens or 64,
        test_limit=test_limit,
        num_beams=num_beams,
    )
    print(result.summary)
    if result.stopped in ("signal", "time"):
        print(f"checkpoint saved; continue with: groundwork finetune {model} --out {out} --resume")
    print(f"test split ({result.test_pairs:,} pairs of held-out plays):")
    print(results_table(result, Path(model).name))
    for source, output, reference in result.examples:
        print(f"  {source!r}\n    -> {output!r}\n    (reference {reference!r})")
    print(f"run directory: {out} (loss plot: {Path(out) / 'plots' / 'loss.png'})")
