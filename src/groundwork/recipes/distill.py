"""Knowledge distillation: ``groundwork distill --teacher smollm2-135m-instruct``.

A small student, built from scratch with the teacher's tokenizer, learns a text source's
language from the teacher as well as from the text (chapter 18):

1. the teacher: a named pretrained model (``smollm2-135m-instruct``) or a run directory of a
   causal LM, with its tokenizer; run in eval mode without gradients, optionally in bf16 (about
   twice as fast on a CPU with bf16 instructions);
2. the student: an architecture, preset and overridden fields, as ``groundwork pretrain``'s
   ``--model`` (``--student.preset tiny --student.d_model 256``), its ``vocab_size`` the
   teacher's: the two must share a vocabulary;
3. the text: the source's train and held-out (``val``) documents, tokenised with the teacher's
   tokenizer into token shards cached under ``$GROUNDWORK_HOME/shards`` (keyed by source and
   tokenizer), from which the engine draws ``seq_len``-token windows, as pretraining does;
4. training with the engine (:func:`~groundwork.train.loop.train_causal_lm`) and one of
   ``--kd.method``:

   * ``hinton``: :class:`~groundwork.train.distill.HintonDistillationObjective`,
     ``alpha * tau^2 KL(p_T^tau || p_S^tau) + (1 - alpha) * CE`` at every position of the text
     (Hinton et al. 2015);
   * ``sequence``: sequence-level distillation (Kim and Rush 2016): the teacher continues
     ``kd.prompts`` prompts of ``kd.prompt_len`` real tokens greedily (or with beam search),
     :func:`~groundwork.compress.distill_data.teacher_sequences`, and the student is trained
     with the plain cross-entropy on those sequences (kept in the run directory's
     ``teacher_data/``, so ``--resume`` does not generate them again);
   * ``none``: the plain cross-entropy on the text, the same student and steps without a
     teacher: the baseline.

   Validation is always the student's plain next-token loss on the held-out text, in nats per
   token and bits per byte, at every evaluation;
5. after training, the student's bits per byte over the whole held-out split, and (at the
   start) the teacher's over the engine's validation windows, into ``metrics.json``.

The run directory is an ordinary ``kind: lm`` run of the student (its config, weights,
``tokenizer.json``): ``groundwork generate DIR`` and ``groundwork evaluate DIR`` read it; the
teacher is not in it. Chapter 18 (Efficient inference and compression: distillation).

This module is long because one command covers three objectives, resume and the teacher's
sequences.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from groundwork.checks import positive_int
from groundwork.errors import CheckpointError, ConfigError, did_you_mean
from groundwork.fileio import read_json, write_json
from groundwork.models import registry
from groundwork.models.registry import build_model
from groundwork.numerics import loss_to_bits_per_byte
from groundwork.recipes.pretrain import ModelArgs
from groundwork.runs import TOKENIZER_FILE, check_writable, read_config, write_config
from groundwork.runtime import resolve_device
from groundwork.train.config import TrainConfig
from groundwork.train.distill import (
    HintonDistillationObjective,
    check_distillation_settings,
    check_same_vocabulary,
)
from groundwork.train.engine import TrainResult

__all__ = [
    "DEFAULT_KD",
    "DEFAULT_STUDENT",
    "DEFAULT_TRAIN",
    "DistillArgs",
    "DistillResult",
    "distill",
]

METHODS = ("hinton", "sequence", "none")
METRICS_FILE = "metrics.json"
TEACHER_DATA = "teacher_data"
"""The teacher's sequences (sequence-level distillation), inside the run directory."""
SECTION = "distill"
"""``config.yaml``'s section that records how the run was made (read by ``--resume``)."""

DEFAULT_STUDENT = ModelArgs(
    arch="llama",
    preset="tiny",
    d_model=256,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    d_ff=688,
    max_seq_len=256,
)
"""A small Llama: 4 blocks of width 256, 4 query heads over 2 key/value heads (GQA), a SwiGLU
of 688; about 2.9M parameters besides the embedding, which the teacher's vocabulary sets
(49152 x 256 = 12.6M for SmolLM2's, tied with the output head)."""

DEFAULT_TRAIN = TrainConfig(
    max_steps=300,
    batch_size=8,
    seq_len=64,
    lr=2e-3,
    min_lr=2e-4,
    warmup_steps=30,
    eval_every=50,
    eval_batches=16,
    log_every=10,
)
"""300 steps of 8 x 64 tokens (154k tokens): sized for a CPU, where each step also runs the
135M-parameter teacher on the batch."""


@dataclass(kw_only=True)
class DistillArgs:
    """How the student learns from the teacher."""

    method: Literal["hinton", "sequence", "none"] = "hinton"
    """hinton: match the teacher's softened distributions on the text (plus the cross-entropy);
    sequence: cross-entropy on the teacher's generated continuations; none: cross-entropy on the
    text, no teacher (the baseline)."""
    temperature: float = 2.0
    """hinton: the temperature tau softening both distributions."""
    alpha: float = 0.5
    """hinton: the weight of the soft loss (tau^2 KL); 1 - alpha weighs the cross-entropy."""
    teacher_dtype: Literal["fp32", "bf16"] = "fp32"
    """The teacher's weights: fp32, or bf16 (faster on CPUs with bf16 instructions)."""
    prompts: int = 256
    """sequence: how many prompts the teacher continues."""
    prompt_len: int = 16
    """sequence: tokens of real text in each prompt (random windows of the training split)."""
    max_new_tokens: int = 112
    """sequence: tokens the teacher generates after each prompt (at most)."""
    num_beams: int = 1
    """sequence: 1 for greedy decoding, more for beam search (much slower)."""
    generation_batch: int = 32
    """sequence: prompts decoded together (greedy)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"kd.method {self.method!r}: {did_you_mean(self.method, METHODS)}")
        if self.teacher_dtype not in ("fp32", "bf16"):
            raise ConfigError(f"kd.teacher_dtype must be fp32 or bf16, got {self.teacher_dtype!r}")
        check_distillation_settings(self.temperature, self.alpha)
        for name in ("prompts", "prompt_len", "max_new_tokens", "num_beams", "generation_batch"):
            positive_int(f"kd.{name}", getattr(self, name))


DEFAULT_KD = DistillArgs()
"""Hinton distillation at temperature 2, half soft loss, half cross-entropy."""


@dataclass
class DistillResult:
    """What :func:`distill` returns."""

    run_dir: Path
    model: nn.Module
    """The trained student (in the state saved in ``run_dir``)."""
    tokenizer: Any
    metrics: dict[str, Any]
    """What ``metrics.json`` holds: ``teacher``, ``student``, ``training``, ..."""
    train_result: TrainResult


# --- the pieces --------------------------------------------------------------------------------


def load_teacher(name: str, dtype: str, device: torch.device) -> tuple[nn.Module, Any]:
    """The teacher (a named pretrained model or a causal LM run) and its tokenizer, in eval mode
    without gradients, in ``dtype`` on ``device``."""
    from groundwork.recipes.generate import load_model

    net, tokenizer, _ = load_model(name)
    if tokenizer is None:
        raise ConfigError(f"the teacher {name} has no tokenizer: the student needs its tokenizer")
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    net = net.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    return net, tokenizer


def student_config(student: ModelArgs, vocab_size: int) -> Any:
    """The student's model config, with the teacher's ``vocab_size``; causal LMs only."""
    choices = registry.names(causal_lm=True)
    if student.arch not in choices:
        raise ConfigError(
            f"student.arch {student.arch!r}: the student must be a causal LM, "
            f"{did_you_mean(student.arch, choices)}"
        )
    return student.build_config(vocab_size)


def text_shards(source: str, tokenizer: Any, tokenizer_path: Path, progress: bool) -> Path:
    """The source's train/val token shards in the teacher's tokenizer, cached under
    ``$GROUNDWORK_HOME/shards/<source>-<tokenizer sha256>``."""
    from groundwork import corpus
    from groundwork.corpus.fetch import sha256_file

    shards = corpus.home() / "shards" / f"{source}-{sha256_file(tokenizer_path)[:12]}"
    if not (shards / "meta.json").is_file():
        corpus.prepare_source(
            source,
            tokenizer.encode,
            tokenizer.vocab_size,
            shards,
            eot_id=tokenizer.eot_id,
            tokenizer_path=tokenizer_path,
            progress=progress,
        )
    return shards


def make_teacher_data(
    teacher: nn.Module,
    tokenizer: Any,
    shards: Path,
    kd: DistillArgs,
    out: Path,
    *,
    vocab_size: int,
    seed: int,
    progress: bool,
) -> Path:
    """Sequence-level distillation's training data: the teacher's continuations of
    ``kd.prompts`` random windows of the training text, written to ``out/teacher_data``."""
    from groundwork.compress.distill_data import sample_prompts, teacher_sequences, write_sequences
    from groundwork.corpus import TokenShards
    from groundwork.generate.stream import end_of_turn_ids

    prompts = sample_prompts(TokenShards(shards, "train"), kd.prompts, kd.prompt_len, seed=seed)
    sequences = teacher_sequences(
        teacher,
        prompts,
        kd.max_new_tokens,
        num_beams=kd.num_beams,
        batch_size=kd.generation_batch,
        eos_ids=end_of_turn_ids(tokenizer),
        progress=progress,
    )
    n_bytes = sum(len(tokenizer.decode(s).encode("utf-8")) for s in sequences)
    data = out / TEACHER_DATA
    write_sequences(
        sequences,
        data,
        vocab_size=vocab_size,
        eot_id=tokenizer.eot_id,
        n_bytes=n_bytes,
        source=f"teacher continuations of {shards.name}",
        tokenizer_path=out / TOKENIZER_FILE,
    )
    return data


@torch.no_grad()
def teacher_validation(
    teacher: nn.Module, val: Any, cfg: TrainConfig, bytes_per_token: float | None
) -> dict[str, Any]:
    """The teacher's loss and bits per byte on the engine's validation windows (the first
    ``cfg.eval_batches`` batches of ``cfg.batch_size x cfg.seq_len`` tokens)."""
    import itertools

    from groundwork.train.engine import validation_loss
    from groundwork.train.objectives import CausalLMObjective

    windows = itertools.islice(
        val.sequential_batches(cfg.batch_size, cfg.seq_len), cfg.eval_batches
    )
    device = next(teacher.parameters()).device
    total, count = validation_loss(teacher, CausalLMObjective(), windows, device=device)
    loss = total / count
    return {
        "val_loss": loss,
        "val_bpb": loss_to_bits_per_byte(loss, bytes_per_token),
        "tokens": count,
    }


def _bytes_per_token(meta: dict[str, Any], split: str) -> float | None:
    info = meta.get("splits", {}).get(split) or {}
    if not info.get("tokens") or not info.get("bytes"):
        return None
    return float(info["bytes"]) / float(info["tokens"])


def _changed(train: TrainConfig) -> dict[str, Any]:
    """The fields of ``train`` that differ from :data:`DEFAULT_TRAIN` (given on the command
    line: they override a resumed run's)."""
    defaults = dataclasses.asdict(DEFAULT_TRAIN)
    return {k: v for k, v in dataclasses.asdict(train).items() if v != defaults[k]}


# --- the program -------------------------------------------------------------------------------


def distill(
    *,
    teacher: str = "smollm2-135m-instruct",
    student: ModelArgs = DEFAULT_STUDENT,
    kd: DistillArgs = DEFAULT_KD,
    source: str = "wiki-sample",
    train: TrainConfig = DEFAULT_TRAIN,
    out: Path = Path("runs/distill"),
    eval_tokens: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> DistillResult:
    """Distil a teacher into a small student trained from scratch on a text source; writes a
    run directory of the student.

    Hinton logit distillation (--kd.method hinton, the default), sequence-level distillation on
    the teacher's greedy outputs (--kd.method sequence), or no teacher at all (--kd.method
    none, the baseline with the same student, data and steps). Reports validation bits per
    byte of the student (and the teacher's) in metrics.json. Ctrl-C saves a checkpoint;
    continue with --resume.

    Args:
        teacher: A named pretrained model (smollm2-135m-instruct) or a run directory of a causal
            LM; the student uses its tokenizer.
        student: Architecture, preset and overridden fields of the student (its vocab_size is
            the teacher's).
        kd: The method and its settings (temperature, alpha, the teacher's dtype, the
            sequence-level data).
        source: The text source (see `groundwork data list`): its train split is learned, its
            held-out (val) split measures the student.
        train: Steps, batch, optimizer, schedule, evaluation.
        out: Run directory to write.
        eval_tokens: At the end, score the student on about this many tokens from the start
            of the held-out split (None: all of it).
        overwrite: Replace an existing run in --out.
        resume: Continue the run in --out from its last checkpoint (train options given here
            override the run's).
    """
    from groundwork import corpus
    from groundwork.train.loop import evaluate_loss, train_causal_lm

    start = time.perf_counter()
    out = Path(out)
    if eval_tokens is not None:
        positive_int("eval_tokens", eval_tokens)
    if resume:
        config = read_config(out)
        made = config.get(SECTION)
        if not made:
            raise CheckpointError(f"{out} is not a distillation run: nothing to resume")
        teacher, source = made["teacher"], made["source"]
        kd = DistillArgs(**made["kd"])
        cfg = TrainConfig(**{**config["train"], **_changed(train)})
        model_config = registry.config_from_dict(config["model"])
    else:
        check_writable(out, overwrite=overwrite, resume_hint=False)
        cfg = train
        model_config = None
    if corpus.get_source(source).documents is None:
        raise ConfigError(f"--source {source} is not a text source (see `groundwork data list`)")
    device = resolve_device(cfg.device)

    def say(line: str) -> None:
        if cfg.progress:
            print(line, flush=True)

    teacher_net, tokenizer = load_teacher(teacher, kd.teacher_dtype, device)
    teacher_config: Any = getattr(teacher_net, "config", None)
    vocab = int(teacher_config.vocab_size)
    if tokenizer.vocab_size > vocab:
        raise ConfigError(
            f"the teacher's tokenizer has {tokenizer.vocab_size} tokens but the teacher only "
            f"{vocab} token ids"
        )
    if model_config is None:
        model_config = student_config(student, vocab)
    check_same_vocabulary(vocab, int(model_config.vocab_size))
    if cfg.seq_len > model_config.max_seq_len:
        raise ConfigError(
            f"train.seq_len ({cfg.seq_len}) is longer than the student's max_seq_len "
            f"({model_config.max_seq_len}); lower train.seq_len or raise student.max_seq_len"
        )
    if kd.method == "hinton" and cfg.seq_len > int(teacher_config.max_seq_len):
        raise ConfigError(
            f"train.seq_len ({cfg.seq_len}) is longer than the teacher's context "
            f"({teacher_config.max_seq_len} tokens); lower train.seq_len"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        tokenizer.save(out / TOKENIZER_FILE)
    shards = text_shards(source, tokenizer, out / TOKENIZER_FILE, cfg.progress)
    meta = corpus.read_meta(shards)
    val = corpus.TokenShards(shards, "val")
    bytes_per_token = _bytes_per_token(meta, "val")
    train_data = corpus.TokenShards(shards, "train")
    generation: dict[str, Any] | None = None
    if kd.method == "sequence":
        data_dir = out / TEACHER_DATA
        if not (resume and (data_dir / "meta.json").is_file()):
            say(
                f"the teacher continues {kd.prompts} prompts of {kd.prompt_len} tokens by "
                f"{kd.max_new_tokens} tokens ({'greedy' if kd.num_beams == 1 else 'beam'})"
            )
            tick = time.perf_counter()
            data_dir = make_teacher_data(
                teacher_net,
                tokenizer,
                shards,
                kd,
                out,
                vocab_size=vocab,
                seed=cfg.seed,
                progress=cfg.progress,
            )
            generated = time.perf_counter() - tick
            generation = {"sequences": kd.prompts, "seconds": generated}
            say(f"  {generated:.0f} s")
        train_data = corpus.TokenShards(data_dir, "train")
    torch.manual_seed(cfg.seed)
    net = build_model(model_config)
    metrics: dict[str, Any] = {
        "teacher": teacher,
        "source": source,
        "kd": dataclasses.asdict(kd),
        "student_params": sum(p.numel() for p in net.parameters()),
        "data": {
            "train_tokens": len(train_data),
            "val_tokens": len(val),
            "bytes_per_token": bytes_per_token,
        },
    }
    if resume:
        kept = ("teacher_val", "teacher_data")
        metrics.update({k: v for k, v in read_json(out / METRICS_FILE).items() if k in kept})
    else:
        write_config(
            out,
            model=model_config,
            data={
                "source": source,
                "shards": str(shards),
                "train_shards": str(train_data.directory),
            },
            train=cfg,
            distill={"teacher": teacher, "source": source, "kd": kd},
        )
        say(f"scoring the teacher ({teacher}) on the validation windows")
        metrics["teacher_val"] = teacher_validation(teacher_net, val, cfg, bytes_per_token)
    if generation is not None:
        metrics["teacher_data"] = generation
    write_json(out / METRICS_FILE, metrics)

    objective = None
    if kd.method == "hinton":
        objective = HintonDistillationObjective(teacher_net, kd.temperature, kd.alpha)
    else:
        del teacher_net  # sequence: its data is written; none: never used
    say(
        f"distilling {teacher} into a {registry.arch_of(model_config).name} of "
        f"{metrics['student_params']:,} parameters ({kd.method}): steps -> {cfg.max_steps} of "
        f"{cfg.tokens_per_step:,} tokens; run directory {out}"
    )
    net.train()
    result = train_causal_lm(
        net,
        train_data,
        val,
        cfg,
        out,
        resume=resume,
        bytes_per_token=bytes_per_token,
        objective=objective,
    )
    state = result.state
    metrics["training"] = {
        "steps": state.step,
        "tokens_trained": state.tokens_seen,
        "train_seconds": state.elapsed_seconds,
        "stopped": result.stopped,
        "summary": result.summary(),
    }
    if result.stopped not in ("signal", "time"):
        per_batch = cfg.batch_size * cfg.seq_len
        batches = None if eval_tokens is None else -(-eval_tokens // per_batch)  # ceil
        total, count = evaluate_loss(
            net,
            val,
            batch_size=cfg.batch_size,
            seq_len=cfg.seq_len,
            max_batches=batches,
            device=device,
        )
        loss = total / count
        metrics["student_val"] = {
            "val_loss": loss,
            "val_bpb": loss_to_bits_per_byte(loss, bytes_per_token),
            "tokens": count,
            "split": "whole val split" if batches is None else f"first {count} val tokens",
        }
    metrics["wall_seconds"] = time.perf_counter() - start
    write_json(out / METRICS_FILE, metrics)
    print(f"{result.summary()} ({state.tokens_seen:,} tokens, {state.elapsed_seconds:.0f} s)")
    if "student_val" in metrics:
        s, t = metrics["student_val"], metrics.get("teacher_val") or {}
        if s["val_bpb"] is not None:
            print(f"student: {s['val_bpb']:.3f} bits per byte ({s['split']})")
        if t.get("val_bpb") is not None:
            print(f"teacher: {t['val_bpb']:.3f} bits per byte on the validation windows")
    else:
        print(f"checkpoint saved; continue with: groundwork distill --out {out} --resume")
    print(f"run directory: {out} (metrics.json; loss plot: {out / 'plots' / 'loss.png'})")
    return DistillResult(out, net, tokenizer, metrics, result)
