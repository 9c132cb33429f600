"""Continued (domain-adaptive) pretraining: ``groundwork continue-pretraining MODEL --domain D``.

Gururangan et al. (2020), "Don't Stop Pretraining: Adapt Language Models to Domains and Tasks",
show that a pretrained model trained further on unlabelled text of one domain (DAPT) models that
domain better and does better on its tasks, and that it may lose some of what it knew elsewhere
(forgetting). This recipe runs that experiment on one causal LM:

1. the model: a named pretrained one (``smollm2-135m-instruct``) or a run directory of a decoder
   (``runs/shakespeare-tiny``), with its own tokenizer;
2. the domain's text (:mod:`groundwork.corpus.domain`: PubMed abstracts, privacy-policy clauses),
   deduplicated, 10-20% held out; the training part tokenised with the model's tokenizer into
   token shards in the run directory (documents joined by the end-of-text token), from which the
   engine draws ``block_size``-token windows, as pretraining does;
3. **before**: perplexity of held-out domain text and of general text (``wiki-sample``'s held-out
   articles), each a fixed slice of about ``eval_tokens`` tokens spread over its documents
   (:func:`~groundwork.corpus.domain.evaluation_slice`), scored by
   :func:`~groundwork.evaluate.perplexity.perplexity_of_texts`; optionally tasks, zero-shot;
4. training with the engine (:func:`~groundwork.train.loop.train_causal_lm`: AdamW, a short
   warmup and a cosine decay from a small learning rate, the held-out domain loss at each
   evaluation, checkpoints, ``--resume``);
5. **after**: the same measurements, a Markdown table of both, and ``metrics.json``.

The run directory is an ordinary ``kind: lm`` run (the model's config, ``model.safetensors``,
the model's ``tokenizer.json``, whose encodings are checked equal to the model's own), so
``groundwork generate DIR``, ``groundwork evaluate DIR --tasks medqa`` and, on the domain's
held-out text, ``groundwork evaluate DIR`` read it. ``pubmedqa-held-out`` is a domain task made
here: PubMedQA's yes/no/maybe questions on the held-out abstracts only, which training never saw.
Chapter 8 (Training), chapter 11 (Evaluation).
"""

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.checks import positive_int
from groundwork.corpus.documents import Corpus
from groundwork.errors import CheckpointError, ConfigError, TokenizerError, UnknownNameError
from groundwork.errors import did_you_mean as _did_you_mean
from groundwork.fileio import read_json, write_json
from groundwork.runs import TOKENIZER_FILE, check_writable, load_run, read_config, write_config
from groundwork.runs import load_tokenizer as _load_run_tokenizer
from groundwork.runtime import resolve_device
from groundwork.tables import markdown_table
from groundwork.train.config import TrainConfig
from groundwork.train.engine import TrainResult

__all__ = [
    "DEFAULT_TRAIN",
    "DomainAdaptResult",
    "continue_pretraining",
    "evaluation_texts",
    "held_out_task",
    "measure",
    "results_table",
]

DEFAULT_TRAIN = TrainConfig(
    max_steps=150,
    batch_size=4,
    seq_len=256,
    lr=1e-4,
    min_lr=1e-5,
    warmup_steps=10,
    weight_decay=0.01,
    eval_every=50,
    eval_batches=4,
    log_every=5,
)
"""The engine's settings for continued pretraining: a small learning rate (the model is already
trained) with a short warmup; 150 steps of 4 x 256 tokens, about 150k tokens, half an epoch of the
biomedical abstracts."""

DEFAULT_BLOCK = 256
"""Tokens per training sequence when ``block_size`` is not given (or the model's context)."""
EVAL_WINDOW = 1024
"""Perplexity window: the model's context, at most this (a slice's documents fit in one)."""
METRICS_FILE = "metrics.json"
DATA_DIR = "data"
"""The token shards of the domain text, inside the run directory."""
SECTION = "continued_pretraining"
"""``config.yaml``'s section that records how the run was made (read by ``--resume``)."""

PUBMEDQA_ANSWERS = ("yes", "no", "maybe")
DOMAIN_TASKS = {"biomedical": "pubmedqa-held-out"}
"""The task made from a domain's held-out documents."""


@dataclass
class DomainAdaptResult:
    """What :func:`continue_pretraining` returns."""

    run_dir: Path
    model: nn.Module
    """The trained model (in the state saved in ``run_dir``)."""
    tokenizer: Any
    metrics: dict[str, Any]
    """What ``metrics.json`` holds: ``before``, ``after``, ``training``, ..."""
    train_result: TrainResult


# --- the domain task and the texts to score ---------------------------------------------------


def held_out_task(corpus: Corpus) -> Any:
    """``pubmedqa-held-out``: PubMedQA's questions on the held-out abstracts of the
    ``biomedical`` corpus, answered yes, no or maybe (lm-evaluation-harness's prompt)."""
    from groundwork.evaluate.task import Task

    docs = [
        {"abstract": d.text, "question": d.meta["question"], "answer": d.meta["answer"]}
        for d in corpus.splits["val"]
        if d.meta.get("answer") in PUBMEDQA_ANSWERS
    ]
    return Task(
        name=DOMAIN_TASKS["biomedical"],
        about="PubMedQA (Jin et al. 2019) on the held-out abstracts: yes, no or maybe",
        docs=lambda: docs,
        doc_to_text=lambda d: f"Abstract: {d['abstract']}\nQuestion: {d['question']}\nAnswer:",
        doc_to_choices=lambda d: list(PUBMEDQA_ANSWERS),
        doc_to_target=lambda d: PUBMEDQA_ANSWERS.index(d["answer"]),
    )


def _tasks(names: str | None, domain: str, corpus: Corpus | None) -> list[Any]:
    """The tasks ``names`` (comma-separated) asks for: registered ones and the domain's own."""
    from groundwork.evaluate import TASKS

    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    own = DOMAIN_TASKS.get(domain)
    out = []
    for name in wanted:
        if name == own:
            out.append(held_out_task(corpus) if corpus is not None else name)
        elif name in TASKS:
            out.append(TASKS[name])
        elif name in DOMAIN_TASKS.values():
            home = next(d for d, t in DOMAIN_TASKS.items() if t == name)
            raise ConfigError(f"task {name} is made from the held-out text of --domain {home}")
        else:
            known = [*TASKS, *([own] if own else [])]
            raise UnknownNameError(f"unknown task {name!r}: {_did_you_mean(name, known)}")
    return out


def evaluation_texts(
    corpus: Corpus, general: str, tokenizer: Any, eval_tokens: int
) -> dict[str, list[str]]:
    """The fixed slices scored before and after: about ``eval_tokens`` tokens of the domain's
    held-out documents (``"domain"``) and of the ``general`` source's held-out (``val``)
    documents (``"general"``)."""
    from groundwork import corpus as corpora
    from groundwork.corpus.domain import evaluation_slice

    general_docs = corpora.load_documents(general, split="val")
    return {
        "domain": evaluation_slice(
            [d.text for d in corpus.splits["val"]], tokenizer.encode, eval_tokens
        ),
        "general": evaluation_slice([d.text for d in general_docs], tokenizer.encode, eval_tokens),
    }


def eval_window(model: nn.Module) -> int:
    """The perplexity window: the model's context, at most :data:`EVAL_WINDOW`."""
    from groundwork.evaluate.perplexity import model_max_len

    return min(model_max_len(model), EVAL_WINDOW)


def measure(
    model: nn.Module,
    tokenizer: Any,
    texts: dict[str, list[str]],
    tasks: list[Any],
    *,
    task_limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Perplexity of each slice of ``texts`` and zero-shot accuracy on each task.

    Returns:
        ``{"domain": {perplexity, nats_per_token, bits_per_byte, tokens, bytes}, "general":
        {...}, "tasks": {name: {acc, acc_norm, n}}}``.
    """
    from groundwork.evaluate import evaluate_task, perplexity_of_texts

    window = eval_window(model)
    out: dict[str, Any] = {}
    for name, slice_ in texts.items():
        start = time.perf_counter()
        r = perplexity_of_texts(model, tokenizer, slice_, window=window)
        out[name] = {
            "perplexity": r.perplexity,
            "nats_per_token": r.nats_per_token,
            "bits_per_byte": r.bits_per_byte,
            "tokens": r.tokens,
            "bytes": r.bytes,
            "window": window,
        }
        if progress:
            took = time.perf_counter() - start
            print(
                f"  {name} text: perplexity {r.perplexity:.3f} ({r.tokens:,} tokens, {took:.0f} s)"
            )
    out["tasks"] = {}
    for task in tasks:
        row = evaluate_task(model, tokenizer, task, 0, limit=task_limit, progress=progress)
        out["tasks"][row["task"]] = {k: row[k] for k in ("acc", "acc_norm", "n") if k in row}
    return out


# --- the report --------------------------------------------------------------------------------


def _change(before: float, after: float | None) -> str:
    return "" if after is None or before == 0 else f"{100 * (after - before) / before:+.1f}%"


def results_table(metrics: dict[str, Any]) -> str:
    """``before``, ``after`` and the relative change of every measurement, as Markdown."""
    before, after = metrics["before"], metrics.get("after") or {}
    labels = {
        "domain": f"{metrics['domain']} held-out",
        "general": f"general ({metrics['general']})",
    }
    rows = []
    for key, label in labels.items():
        for metric, what in (("perplexity", "perplexity"), ("bits_per_byte", "bits per byte")):
            b, a = before[key][metric], after.get(key, {}).get(metric)
            rows.append(
                [f"{label} {what}", f"{b:.3f}", "" if a is None else f"{a:.3f}", _change(b, a)]
            )
    for task, scores in before.get("tasks", {}).items():
        for metric in ("acc", "acc_norm"):
            b, a = scores[metric], after.get("tasks", {}).get(task, {}).get(metric)
            label = f"{task} {metric} (n={scores['n']}, 0-shot)"
            rows.append([label, f"{b:.3f}", "" if a is None else f"{a:.3f}", _change(b, a)])
    return markdown_table(["measurement", "before", "after", "change"], rows, align="lrrr")


# --- the program -------------------------------------------------------------------------------


def _block(model: nn.Module, block_size: int | None) -> int:
    """``block_size``, checked to fit the model's context; by default 256 or the context."""
    from groundwork.evaluate.perplexity import model_max_len

    limit = model_max_len(model)
    if block_size is None:
        return min(DEFAULT_BLOCK, limit)
    positive_int("block_size", block_size)
    if block_size > limit:
        raise ConfigError(
            f"block_size {block_size} is longer than the model's context ({limit} tokens); "
            f"give --block-size {limit} or less"
        )
    return block_size


def _save_tokenizer(tokenizer: Any, out: Path, samples: list[str]) -> None:
    """Save ``tokenizer`` as the run's ``tokenizer.json`` and check that the run reads back one
    that encodes ``samples`` exactly as it does."""
    tokenizer.save(out / TOKENIZER_FILE)
    reread = _load_run_tokenizer(out)
    for text in samples:
        if reread.encode(text) != tokenizer.encode(text):
            raise TokenizerError(
                f"the model's tokenizer, saved to {out / TOKENIZER_FILE}, reads back as a "
                f"{type(reread).__name__} that encodes {text[:40]!r}... differently"
            )


def _prepare_shards(corpus: Corpus, tokenizer: Any, vocab_size: int, out: Path) -> Path:
    """The domain's train and held-out (``val``) token shards, in ``out/data``."""
    from groundwork.corpus import prepare_shards

    data = out / DATA_DIR
    shutil.rmtree(data, ignore_errors=True)
    prepare_shards(
        {"train": corpus.splits["train"], "val": corpus.splits["val"]},
        tokenizer.encode,
        vocab_size,
        data,
        eot_id=tokenizer.eot_id,
        source=f"domain:{corpus.name}",
        tokenizer_path=out / TOKENIZER_FILE,
        progress=False,
    )
    return data.resolve()


def _changed(train: TrainConfig) -> dict[str, Any]:
    """The fields of ``train`` that differ from :data:`DEFAULT_TRAIN` (given on the command
    line: they override a resumed run's), but ``seq_len``: the run's block size stays."""
    defaults = dataclasses.asdict(DEFAULT_TRAIN)
    fields = dataclasses.asdict(train).items()
    return {k: v for k, v in fields if v != defaults[k] and k != "seq_len"}


def continue_pretraining(
    model: str,
    *,
    domain: str = "biomedical",
    general: str = "wiki-sample",
    train: TrainConfig = DEFAULT_TRAIN,
    out: Path = Path("runs/continued"),
    block_size: int | None = None,
    eval_tokens: int = 20_000,
    tasks: str | None = None,
    task_limit: int | None = 100,
    overwrite: bool = False,
    resume: bool = False,
) -> DomainAdaptResult:
    """Continue pretraining a model on a domain's text; report perplexity before and after on
    held-out domain text and on general text (forgetting), and optionally tasks.

    Domain-adaptive pretraining (Gururangan et al. 2020). Writes a run directory (a causal LM
    that generate and evaluate read) with metrics.json. Use --config RECIPE.yaml
    (configs/smollm2-biomedical.yaml) and override any field, e.g. --train.max-steps 300.
    Ctrl-C saves a checkpoint; continue with --resume.

    Args:
        model: A named pretrained model (smollm2-135m-instruct) or a run directory of a
            decoder (e.g. runs/shakespeare-tiny).
        domain: biomedical (PubMed abstracts) or legal (privacy-policy clauses).
        general: The text source whose held-out documents measure forgetting.
        train: Steps, batch, optimizer, schedule, evaluation (train.seq_len is set to
            --block-size).
        out: Run directory to write.
        block_size: Tokens per training sequence (default 256, or the model's context if
            shorter).
        eval_tokens: Score at most this many tokens of each text, before and after.
        tasks: Comma-separated tasks scored zero-shot before and after (pubmedqa-held-out:
            PubMedQA's questions on the held-out abstracts; or any of `groundwork evaluate`'s).
        task_limit: Score only the first this many examples of each task.
        overwrite: Replace an existing run in --out.
        resume: Continue the run in --out from its last checkpoint (train options given here
            override the run's).
    """
    from groundwork.corpus import TokenShards, get_source
    from groundwork.corpus.domain import get_domain, load_domain
    from groundwork.recipes.generate import load_model
    from groundwork.train.loop import train_causal_lm

    start = time.perf_counter()
    out = Path(out)
    positive_int("eval_tokens", eval_tokens)
    if task_limit is not None:
        positive_int("task_limit", task_limit)
    if resume:
        config = read_config(out)
        made = config.get(SECTION)
        if not made:
            raise CheckpointError(f"{out} is not a continue-pretraining run: nothing to resume")
        model, domain, general = made["model"], made["domain"], made["general"]
        eval_tokens, tasks, task_limit = made["eval_tokens"], made["tasks"], made["task_limit"]
        cfg = TrainConfig(**{**config["train"], **_changed(train)})
    else:
        check_writable(out, overwrite=overwrite)
        cfg = train
    get_domain(domain)  # fail on a typo before any work
    if get_source(general).documents is None:
        raise ConfigError(f"--general {general} is not a text source (see `groundwork data list`)")
    _tasks(tasks, domain, None)

    def say(line: str) -> None:
        if cfg.progress:
            print(line)

    corpus = load_domain(domain)
    if resume:
        net, tokenizer, _ = load_run(out, device=cfg.device, weights=False)  # the engine loads
        before = read_json(out / METRICS_FILE)["before"]
        shards = Path(read_config(out)["data"]["shards"])
        if not (shards / "meta.json").is_file():
            shards = _prepare_shards(corpus, tokenizer, net.config.vocab_size, out)
    else:
        net, tokenizer, _ = load_model(model)
        cfg = dataclasses.replace(cfg, seq_len=_block(net, block_size))
        out.mkdir(parents=True, exist_ok=True)
        _save_tokenizer(tokenizer, out, [d.text for d in corpus.splits["val"][:20]])
        shards = _prepare_shards(corpus, tokenizer, net.config.vocab_size, out)
    texts = evaluation_texts(corpus, general, tokenizer, eval_tokens)
    task_list = _tasks(tasks, domain, corpus)
    meta = TokenShards(shards, "train").meta
    metrics: dict[str, Any] = {
        "model": model,
        "domain": domain,
        "general": general,
        "data": {
            "train_documents": len(corpus.splits["train"]),
            "held_out_documents": len(corpus.splits["val"]),
            "train_tokens": meta["splits"]["train"]["tokens"],
            "held_out_tokens": meta["splits"]["val"]["tokens"],
            "exact_duplicates": len(corpus.exact_duplicates),
            "near_duplicates": len(corpus.near_duplicates),
        },
        "block_size": cfg.seq_len,
        "eval_tokens": eval_tokens,
    }
    if not resume:
        write_config(
            out,
            model=net.config,
            data={"domain": domain, "shards": str(shards), **metrics["data"]},
            train=cfg,
            continued_pretraining={
                "model": model,
                "domain": domain,
                "general": general,
                "eval_tokens": eval_tokens,
                "tasks": tasks,
                "task_limit": task_limit,
            },
        )
        net.to(resolve_device(cfg.device))
        say(f"before training ({model}):")
        before = measure(
            net, tokenizer, texts, task_list, task_limit=task_limit, progress=cfg.progress
        )
        write_json(out / METRICS_FILE, {**metrics, "before": before, "after": None})

    params = sum(p.numel() for p in net.parameters())
    say(
        f"continued pretraining of {model} ({params:,} parameters) on {domain} text "
        f"({metrics['data']['train_tokens']:,} tokens in {len(corpus.splits['train']):,} "
        f"documents): steps -> {cfg.max_steps} of {cfg.tokens_per_step:,} tokens; "
        f"run directory {out}"
    )
    torch.manual_seed(cfg.seed)
    net.train()
    result = train_causal_lm(
        net,
        TokenShards(shards, "train"),
        TokenShards(shards, "val"),
        cfg,
        out,
        resume=resume,
        bytes_per_token=meta["splits"]["val"]["bytes"] / meta["splits"]["val"]["tokens"],
    )
    state = result.state
    metrics["training"] = {
        "steps": state.step,
        "tokens_trained": state.tokens_seen,
        "train_seconds": state.elapsed_seconds,
        "stopped": result.stopped,
        "summary": result.summary(),
    }
    after = None
    if result.stopped not in ("signal", "time"):
        say("after training:")
        after = measure(
            net, tokenizer, texts, task_list, task_limit=task_limit, progress=cfg.progress
        )
    metrics["wall_seconds"] = time.perf_counter() - start
    metrics.update(before=before, after=after)
    write_json(out / METRICS_FILE, metrics)
    print(f"{result.summary()} ({state.tokens_seen:,} tokens, {state.elapsed_seconds:.0f} s)")
    if after is None:
        print(
            "checkpoint saved; continue with: "
            f"groundwork continue-pretraining {model} --out {out} --resume"
        )
    print(results_table(metrics), end="")
    print(f"run directory: {out} (metrics.json; loss plot: {out / 'plots' / 'loss.png'})")
    return DomainAdaptResult(out, net, tokenizer, metrics, result)
