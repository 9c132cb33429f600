"""Pretraining from a recipe: data (fetch, tokenizer, shards) → model → loop → run directory.

This is what ``groundwork pretrain`` runs, as a Python function. The tokenizer and token shards
a recipe needs are built once and cached under ``$GROUNDWORK_HOME`` (keyed by source, tokenizer
kind and vocabulary size), so a second run starts training at once. The run directory receives
the resolved ``config.yaml`` (enough to rebuild the model), a copy of ``tokenizer.json``, and
everything the training engine writes (see :mod:`groundwork.train.engine`). An existing run is
never replaced silently: continue it with ``--resume`` or replace it with ``--overwrite``.
``--model.arch bert`` and ``--model.arch t5`` pretrain an encoder (masked LM + next-sentence
prediction) or an encoder-decoder (span corruption) instead: see
:mod:`groundwork.recipes.pretrain_encoders`. A mixture of experts (mixtral, switch-gpt) trains
with :class:`~groundwork.train.objectives.MoECausalLMObjective` and its run draws the expert
load. Under ``torchrun`` with ``--parallel.dp N`` (and ``--parallel.zero``) the same command
trains data-parallel (:mod:`groundwork.distributed`): rank 0 prepares the data and writes the
run directory, the others wait for it. The module is long because :class:`ModelArgs` lists
every family's fields that the command line may override. Chapters 8 and 17.
"""

import contextlib
import dataclasses
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from groundwork.checks import positive_int
from groundwork.distributed import ParallelConfig, build_parallelism, close_world
from groundwork.errors import CheckpointError, ConfigError, did_you_mean
from groundwork.impact.tracking import emissions_line, track_emissions
from groundwork.models import registry
from groundwork.models.registry import build_model
from groundwork.numerics import loss_to_bits_per_byte
from groundwork.recipes import pretrain_encoders as encoders
from groundwork.recipes import pretrain_vision as vision
from groundwork.runs import (
    check_writable,
    load_run,
    plain,
    read_config,
    write_config,
    write_run,
)
from groundwork.runtime import resolve_device
from groundwork.train import checkpoint as ckpt
from groundwork.train.loop import (
    TrainConfig,
    TrainResult,
    evaluate_loss,
    load_trainer_state,
    train_causal_lm,
)
from groundwork.train.metrics import plot_expert_load
from groundwork.train.objectives import MoECausalLMObjective
from groundwork.train.parallel import Parallelism

__all__ = [
    "DataConfig",
    "ModelArgs",
    "evaluate_run",
    "load_run",
    "prepare_data",
    "pretrain",
    "resume_pretraining",
    "write_run",
]


@dataclass(kw_only=True)
class ModelArgs:
    """Which model to train: an architecture, a named preset, and fields of the preset to change.
    ``vocab_size`` always comes from the tokenizer."""

    arch: str = "gpt"
    """Architecture: a registered causal LM (gpt, llama, mixtral, switch-gpt, lstm; `groundwork
    model list`), or bert (masked LM + next-sentence prediction) or t5 (span corruption), or an
    image model on the digits source: vit or image-cnn (classification), clip (contrastive)."""
    preset: str = "tiny"
    """Named config of that architecture (e.g. tiny, gpt2-124m, smollm2-135m)."""
    d_model: int | None = None
    """Width of the residual stream; the embedding size for lstm (None: the preset's)."""
    d_hidden: int | None = None
    """Hidden and cell state size, LSTM only (None: the preset's)."""
    n_layers: int | None = None
    """Number of blocks, or of LSTM layers (None: the preset's)."""
    n_heads: int | None = None
    """Attention heads (None: the preset's)."""
    d_kv: int | None = None
    """Size of one attention head, T5 only (None: the preset's)."""
    n_kv_heads: int | None = None
    """Key/value heads, Llama only (None: the preset's)."""
    d_ff: int | None = None
    """MLP hidden size (None: the preset's)."""
    max_seq_len: int | None = None
    """Longest sequence the model accepts (None: the preset's)."""
    dropout: float | None = None
    """Dropout, GPT and LSTM only (None: the preset's)."""
    rnn_impl: Literal["loop", "fused"] | None = None
    """LSTM only: "fused" (PyTorch's kernel) or "loop" (our cells) (None: the preset's)."""
    n_experts: int | None = None
    """Experts per mixture-of-experts block, mixtral and switch-gpt only (None: the preset's)."""
    top_k: int | None = None
    """Experts each token is routed to, mixtral and switch-gpt (None: the preset's)."""
    router: Literal["switch", "softmax_topk"] | None = None
    """switch-gpt only: "switch" (top-k of the softmax) or "softmax_topk" (renormalised)."""
    moe_every: int | None = None
    """switch-gpt only: every n-th block has experts (None: the preset's)."""
    capacity_factor: float | None = None
    """switch-gpt only: training capacity factor, assignments beyond it dropped."""
    eval_capacity_factor: float | None = None
    """switch-gpt only: the capacity factor in evaluation."""
    router_aux_loss_coef: float | None = None
    """Weight of the load-balancing loss, mixtral and switch-gpt (None: the preset's)."""
    router_aux_loss_per_layer: bool | None = None
    """switch-gpt only: balance each block's experts on its own (else pooled, as transformers)."""
    router_z_loss_coef: float | None = None
    """Weight of the router z-loss, switch-gpt only (None: the preset's)."""
    patch_size: int | None = None
    """Side of an image patch in pixels, vit and clip only (None: the preset's)."""
    projection_dim: int | None = None
    """Size of the joint image-text embedding, clip only (None: the preset's)."""

    def build_config(self, vocab_size: int, **fixed: Any) -> Any:
        """The full model config: the preset, these overrides, ``vocab_size`` and the ``fixed``
        fields the tokenizer decides (an encoder's special ids)."""
        choices = [*registry.names(causal_lm=True), *encoders.KINDS, *vision.VISION_KINDS]
        if self.arch not in choices:
            raise ConfigError(f"model.arch {self.arch!r}: {did_you_mean(self.arch, choices)}")
        arch = registry.get(self.arch)
        names = arch.field_names()
        overrides = {
            k: v for k, v in asdict(self).items() if k not in ("arch", "preset") and v is not None
        }
        for key in overrides:
            if key not in names:
                raise ConfigError(f"model.{key} is not an option of {self.arch} models")
        return arch.config(self.preset, **{**overrides, **fixed}, vocab_size=vocab_size)


@dataclass(kw_only=True)
class DataConfig:
    """Where the tokens come from."""

    source: str = "shakespeare"
    """Data source (see `groundwork data list`); its train/val splits are used."""
    tokenizer: str | None = None
    """A tokenizer.json path, or "gpt2" for GPT-2's own BPE; None trains one on the source."""
    tokenizer_kind: Literal["bpe", "char", "wordpiece"] = "bpe"
    """Kind of tokenizer to train when none is given (bert: with its special tokens)."""
    vocab_size: int = 4096
    """Vocabulary size of the tokenizer to train."""
    shards: Path | None = None
    """Token shards prepared with `groundwork data prepare` (None: prepared and cached here)."""
    whole_word_masking: bool = False
    """BERT only: mask every ``##`` piece of a chosen WordPiece word with it."""
    mlm_probability: float = 0.15
    """BERT only: the fraction of tokens chosen for masked-LM prediction."""
    noise_density: float = 0.15
    """T5 only: the fraction of tokens span corruption drops."""
    mean_noise_span_length: float = 3.0
    """T5 only: the mean length of a dropped span."""
    shift: int = 0
    """Image models only: move each training image by up to this many pixels (augmentation)."""

    def __post_init__(self) -> None:
        positive_int("data.vocab_size", self.vocab_size)
        encoders.check_objective_rates(self)


def prepare_data(data: DataConfig, *, progress: bool = True) -> tuple[Path, Path]:
    """Fetch the source, train (or take) the tokenizer, and prepare shards; all cached.

    Returns:
        ``(tokenizer_path, shards_dir)``.
    """
    from groundwork import __version__, corpus, tokenize
    from groundwork.corpus.fetch import sha256_file

    if data.shards is not None:
        return _given_shards(data)
    home = corpus.home()
    tokenizer: tokenize.Tokenizer
    if data.tokenizer == "gpt2":
        tok_path = home / "tokenizers" / "gpt2.json"
        if not tok_path.exists():
            tok_path.parent.mkdir(parents=True, exist_ok=True)
            tokenize.gpt2_tokenizer().save(tok_path)
        tokenizer = tokenize.load_tokenizer(tok_path)
    elif data.tokenizer is not None:
        tok_path = Path(data.tokenizer)
        tokenizer = tokenize.load_tokenizer(tok_path)
    else:
        name = f"{data.source}-{data.tokenizer_kind}-{data.vocab_size}-v{__version__}"
        tok_path = home / "tokenizers" / f"{name}.json"
        if tok_path.exists():
            tokenizer = tokenize.load_tokenizer(tok_path)
        else:
            texts = [d.text for d in corpus.load_documents(data.source, split="train")]
            tokenizer = tokenize.train_tokenizer(
                data.tokenizer_kind, texts, data.vocab_size, show_progress=progress
            )
            tok_path.parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tok_path)
    digest = sha256_file(tok_path)[:12]
    shards = home / "shards" / f"{data.source}-{digest}"
    if not (shards / "meta.json").exists():
        corpus.prepare_source(
            data.source,
            tokenizer.encode,
            tokenizer.vocab_size,
            shards,
            eot_id=tokenizer.eot_id,
            tokenizer_path=tok_path,
            progress=progress,
        )
    return tok_path, shards


def _given_shards(data: DataConfig) -> tuple[Path, Path]:
    """Check prepared shards and their tokenizer against each other."""
    from groundwork import corpus, tokenize
    from groundwork.corpus.fetch import sha256_file

    assert data.shards is not None
    meta = corpus.read_meta(data.shards)
    recorded = meta.get("tokenizer") or {}
    if data.tokenizer is not None:
        tok_path = Path(data.tokenizer)
    elif recorded.get("path"):
        tok_path = Path(recorded["path"])
    else:
        raise ConfigError(
            f"{data.shards}/meta.json names no tokenizer; pass the one used with --data.tokenizer"
        )
    tokenizer = tokenize.load_tokenizer(tok_path)
    if tokenizer.vocab_size != meta["vocab_size"]:
        raise ConfigError(
            f"the tokenizer {tok_path} has {tokenizer.vocab_size} tokens but the shards in "
            f"{data.shards} were prepared for {meta['vocab_size']}; use the tokenizer they were "
            "prepared with, or prepare them again"
        )
    if recorded.get("sha256") and recorded["sha256"] != sha256_file(tok_path):
        raise ConfigError(
            f"the shards in {data.shards} were prepared with a different tokenizer than "
            f"{tok_path}; prepare them again with `groundwork data prepare`"
        )
    return tok_path, Path(data.shards)


def _bytes_per_token(meta: dict[str, Any], split: str) -> float | None:
    info = meta.get("splits", {}).get(split)
    if not info or not info.get("tokens"):
        return None
    return float(info["bytes"]) / float(info["tokens"])


def pretrain(
    *,
    model: ModelArgs | None = None,
    data: DataConfig | None = None,
    train_config: TrainConfig | None = None,
    out: Path = Path("runs/pretrain"),
    overwrite: bool = False,
    parallel: Parallelism | None = None,
) -> TrainResult:
    """Train a language model from scratch and write a run directory.

    Args:
        model: Architecture, preset and overrides (default: the tiny GPT).
        data: Source and tokenizer (default: Shakespeare with a 4096-token BPE).
        train_config: The engine's settings.
        out: The run directory (continue a run there with :func:`resume_pretraining`).
        overwrite: Replace a run that ``out`` already holds.
        parallel: The ranks of a ``torchrun`` launch
            (:func:`groundwork.distributed.build_parallelism`; default: one process).

    Raises:
        ConfigError: ``out`` holds a run and ``overwrite`` is not set.
    """
    from groundwork import corpus

    out = Path(out)
    par = parallel or Parallelism()
    check_writable(out, overwrite=overwrite)
    par.barrier()  # every rank has checked before rank 0 writes
    model = model or ModelArgs()
    data = data or DataConfig()
    cfg = train_config or TrainConfig()
    encoders.check_objective_fields(data, model.arch)
    if model.arch in vision.VISION_KINDS:
        return _pretrain_vision(model, data, cfg, out)
    if data.shift:
        raise ConfigError(
            f"data.shift is for image models (vit, image-cnn, clip), not {model.arch}"
        )
    if model.arch in encoders.KINDS:
        if par.world_size > 1:
            raise ConfigError(
                f"data-parallel pretraining covers the causal LMs; {model.arch} trains in one "
                "process (drop --parallel.dp)"
            )
        return _pretrain_encoder(model, data, cfg, out)
    tok_path, shards = _prepare_on_main_first(data, cfg, par)
    meta = corpus.read_meta(shards)
    model_config = model.build_config(meta["vocab_size"])
    if cfg.seq_len > model_config.max_seq_len:
        raise ConfigError(
            f"train.seq_len ({cfg.seq_len}) is longer than the model's max_seq_len "
            f"({model_config.max_seq_len}); lower train.seq_len or raise model.max_seq_len"
        )
    if par.is_main:
        out.mkdir(parents=True, exist_ok=True)  # the engine removes an overwritten run's files
        if tok_path.resolve() != (out / "tokenizer.json").resolve():
            shutil.copyfile(tok_path, out / "tokenizer.json")
        write_config(
            out,
            model=model_config,
            data={**_data_section(data), "shards": str(shards)},
            train=cfg,
        )
    torch.manual_seed(cfg.seed)
    net = build_model(model_config)
    return _run(net, shards, cfg, out, resume=False, parallel=par)


def _prepare_on_main_first(
    data: DataConfig, cfg: TrainConfig, par: Parallelism
) -> tuple[Path, Path]:
    """:func:`prepare_data` on rank 0 first (it may fetch and tokenize), then on the other
    ranks, which find it cached."""
    if par.is_main:
        prepared = prepare_data(data, progress=cfg.progress)
    par.barrier()
    if not par.is_main:
        prepared = prepare_data(data, progress=False)
    return prepared


def _data_section(data: DataConfig) -> dict[str, Any]:
    """``config.yaml``'s data section of a causal LM run (without the BERT-only field)."""
    return {k: v for k, v in plain(data).items() if k not in encoders.OBJECTIVE_FIELDS}


def _pretrain_vision(
    model: ModelArgs, data: DataConfig, cfg: TrainConfig, out: Path
) -> TrainResult:
    """:func:`pretrain` for the image models (:mod:`groundwork.recipes.pretrain_vision`)."""
    defaults = DataConfig()
    for name in ("tokenizer", "shards", *encoders.OBJECTIVE_FIELDS):
        if getattr(data, name) != getattr(defaults, name):
            raise ConfigError(f"data.{name} is not an option of image models ({model.arch})")
    overrides = {
        k: v for k, v in asdict(model).items() if k not in ("arch", "preset") and v is not None
    }
    return vision.pretrain_vision(model.arch, model.preset, overrides, data, cfg, out)


def _pretrain_encoder(
    model: ModelArgs, data: DataConfig, cfg: TrainConfig, out: Path
) -> TrainResult:
    """:func:`pretrain` for bert and t5 (:mod:`groundwork.recipes.pretrain_encoders`)."""
    from groundwork import tokenize

    shards: Path | None = None
    if model.arch == "bert":
        if data.shards is not None:
            raise ConfigError(
                "bert reads the source's documents, not token shards: drop data.shards "
                "(give its tokenizer with data.tokenizer)"
            )
        tok_path = encoders.bert_tokenizer(
            data.source,
            tokenizer=data.tokenizer,
            kind=data.tokenizer_kind,
            vocab_size=data.vocab_size,
            progress=cfg.progress,
        )
    else:
        tok_path, shards = prepare_data(data, progress=cfg.progress)
    tokenizer = tokenize.load_tokenizer(tok_path)
    model_config = model.build_config(**encoders.encoder_fields(model.arch, tokenizer))
    if cfg.seq_len > model_config.max_seq_len:
        raise ConfigError(
            f"train.seq_len ({cfg.seq_len}) is longer than the model's max_seq_len "
            f"({model_config.max_seq_len}); lower train.seq_len or raise model.max_seq_len"
        )
    out.mkdir(parents=True, exist_ok=True)
    if tok_path.resolve() != (out / "tokenizer.json").resolve():
        shutil.copyfile(tok_path, out / "tokenizer.json")
    write_config(
        out,
        kind=encoders.KINDS[model.arch],
        model=model_config,
        **encoders.run_sections(model.arch, tokenizer, data),
        data={**plain(data), "shards": None if shards is None else str(shards)},
        train=cfg,
    )
    torch.manual_seed(cfg.seed)
    net, _, run_config = load_run(out, device="cpu", weights=False)  # the class the run names
    net.train()
    if cfg.progress:
        print(_start_summary(net, cfg, out, 0))
    return encoders.train_encoder(net, run_config, cfg, out, resume=False)


def resume_pretraining(
    run_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
    parallel: Parallelism | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint (optionally with some ``train``
    settings changed, e.g. ``{"max_steps": 2000}``), at any world size: the checkpoint holds
    the whole model and optimizer state, and the data order does not depend on the ranks."""
    run_dir = Path(run_dir)
    par = parallel or Parallelism()
    if not (run_dir / ckpt.STATE_FILE).exists():
        raise CheckpointError(
            f"cannot resume {run_dir}: no {ckpt.STATE_FILE} there (is it a run directory?)"
        )
    config = read_config(run_dir)
    train_fields = {**config["train"], **(overrides or {})}
    cfg = TrainConfig(**train_fields)
    if config.get("kind") in vision.VISION_KINDS.values():
        return vision.resume_vision(run_dir, config, cfg)
    if config.get("kind") in encoders.KINDS.values():
        if par.world_size > 1:
            raise ConfigError("a bert or t5 run resumes in one process (drop --parallel.dp)")
        return _resume_encoder(run_dir, config, cfg)
    net = build_model(registry.config_from_dict(config["model"]))
    shards = Path(config["data"]["shards"])
    if not (shards / "meta.json").exists():
        data = DataConfig(**{k: v for k, v in config["data"].items() if k != "shards"})
        _, shards = _prepare_on_main_first(data, cfg, par)
    return _run(net, shards, cfg, run_dir, resume=True, parallel=par)


def _resume_encoder(run_dir: Path, config: dict[str, Any], cfg: TrainConfig) -> TrainResult:
    """:func:`resume_pretraining` for a bert (``mlm``) or t5 (``seq2seq``) run."""
    data = config["data"]
    if data.get("shards") and not (Path(data["shards"]) / "meta.json").exists():
        fields = {k: v for k, v in data.items() if k != "shards"}
        _, shards = prepare_data(DataConfig(**fields), progress=cfg.progress)
        config = {**config, "data": {**data, "shards": str(shards)}}
    net, _, _ = load_run(run_dir, device="cpu", weights=False)  # the engine loads the weights
    net.train()
    if cfg.progress:
        print(_start_summary(net, cfg, run_dir, load_trainer_state(run_dir).step))
    return encoders.train_encoder(net, config, cfg, run_dir, resume=True)


def _run(
    net: nn.Module,
    shards: Path,
    cfg: TrainConfig,
    out: Path,
    *,
    resume: bool,
    parallel: Parallelism,
) -> TrainResult:
    from groundwork import corpus

    meta = corpus.read_meta(shards)
    train_data = corpus.TokenShards(shards, "train")
    val_data = corpus.TokenShards(shards, "val") if "val" in meta["splits"] else None
    if cfg.progress and parallel.is_main:
        print(_start_summary(net, cfg, out, load_trainer_state(out).step if resume else 0))
        if parallel.world_size > 1:
            print(f"parallelism: {parallel.describe()}")
    moe = hasattr(net, "router_outputs")  # a mixture of experts: add the routers' losses
    result = train_causal_lm(
        net,
        train_data,
        val_data,
        cfg,
        out,
        resume=resume,
        bytes_per_token=_bytes_per_token(meta, "val"),
        objective=MoECausalLMObjective() if moe else None,
        parallel=parallel,
    )
    if moe and parallel.is_main:
        plot_expert_load(out / "metrics.jsonl", out / "plots" / "expert_load.png")
    return result


def _start_summary(net: nn.Module, cfg: TrainConfig, out: Path, step: int) -> str:
    """``pretraining gpt (1,234,567 parameters) on cpu: steps 0 -> 800 of 4,096 tokens ...``."""
    arch = registry.arch_of(net.config).name if hasattr(net, "config") else type(net).__name__
    params = sum(p.numel() for p in net.parameters())
    return (
        f"pretraining {arch} ({params:,} parameters) on {resolve_device(cfg.device)}: "
        f"steps {step} -> {cfg.max_steps} of {cfg.tokens_per_step:,} tokens each "
        f"(batch {cfg.batch_size} x {cfg.seq_len} tokens x {cfg.grad_accum} accumulated); "
        f"run directory {out}"
    )


def evaluate_run(
    run_dir: Path, *, split: str = "val", batch_size: int = 16, device: str = "auto"
) -> dict[str, float | int | str]:
    """Loss, perplexity and bits per byte of a run's model over a whole split of its data."""
    from groundwork import corpus

    net, _, config = load_run(run_dir, device=device)
    shards = Path(config["data"]["shards"])
    meta = corpus.read_meta(shards)
    if split not in meta["splits"]:
        raise ConfigError(f"split {split!r} not in {shards}: it has {sorted(meta['splits'])}")
    data = corpus.TokenShards(shards, split)
    seq_len = int(config["train"]["seq_len"])
    total, count = evaluate_loss(
        net,
        data,
        batch_size=batch_size,
        seq_len=seq_len,
        device=next(net.parameters()).device,
    )
    loss = total / count
    bpb = loss_to_bits_per_byte(loss, _bytes_per_token(meta, split))
    return {
        "split": split,
        "tokens": count,
        "loss_nats_per_token": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": float("nan") if bpb is None else bpb,
    }


# --------------------------------------------------------------------------------------------
# the command
NO_PARALLELISM = ParallelConfig()


def pretrain_command(
    *,
    model: ModelArgs,
    data: DataConfig,
    train: TrainConfig,
    out: Path = Path("runs/pretrain"),
    resume: Path | None = None,
    overwrite: bool = False,
    samples: int = 0,
    parallel: ParallelConfig = NO_PARALLELISM,
    emissions: bool = True,
    country: str = "FRA",
) -> None:
    """Train a language model from scratch on a data source; writes a run directory.

    Use --config RECIPE.yaml (see configs/) and override any field, e.g. --train.lr 3e-4.
    Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits;
    continue with --resume RUN_DIR.

    Args:
        model: Architecture, preset and overridden fields.
        data: Data source and tokenizer.
        train: Steps, batch, optimizer, schedule, precision, evaluation.
        out: Run directory to write.
        resume: Continue the run in this directory from its last checkpoint instead (train
            options given on the command line, e.g. --train.max-steps, override the run's).
        overwrite: Replace an existing run in --out.
        samples: Print this many samples from the model at the end.
        parallel: Data parallelism under torchrun, e.g. `torchrun --nproc-per-node 2 -m
            groundwork pretrain ... --parallel.dp 2` (--parallel.zero 1 or 2 shards the
            optimizer state); a run resumes at any number of processes.
        emissions: Measure the run's energy and emissions with codecarbon's offline tracker
            into RUN/emissions.json (chapter 23; skipped with a warning if codecarbon is not
            installed).
        country: Three-letter ISO code of the grid whose carbon intensity applies (codecarbon
            cannot locate an offline machine; the default, France, is BLOOM's grid).
    """
    par = build_parallelism(parallel, train.device)
    try:
        if resume is None:
            check_writable(Path(out), overwrite=overwrite)  # before the tracker clears old files
        run_dir = Path(resume) if resume is not None else Path(out)
        tracker: Any = contextlib.nullcontext()
        if emissions and par.is_main:  # every rank would measure the whole machine
            tracker = track_emissions(run_dir, country_iso_code=country, resume=resume is not None)
        with tracker as tracking:
            _pretrain_and_report(model, data, train, out, resume, overwrite, samples, par)
        if tracking is not None and tracking.result:
            print(emissions_line(tracking.result, run_dir))
    finally:
        close_world()


def _pretrain_and_report(
    model: ModelArgs,
    data: DataConfig,
    train: TrainConfig,
    out: Path,
    resume: Path | None,
    overwrite: bool,
    samples: int,
    par: Parallelism,
) -> None:
    if resume is not None:
        defaults = dataclasses.asdict(TrainConfig())
        changed = {k: v for k, v in dataclasses.asdict(train).items() if v != defaults[k]}
        result = resume_pretraining(resume, overrides=changed, parallel=par)
    else:
        result = pretrain(
            model=model, data=data, train_config=train, out=out, overwrite=overwrite, parallel=par
        )
    if not par.is_main:  # rank 0 reports
        return
    state, run = result.state, result.run_dir
    done = f"{result.summary()} ({state.tokens_seen:,} tokens, {state.elapsed_seconds:.0f} s)"
    if result.stopped in ("signal", "time"):
        print(f"{done}; checkpoint saved in {run}. Resume with: groundwork pretrain --resume {run}")
    else:
        print(done)
    if result.stopped == "signal":
        return
    arch = str(read_config(run)["model"].get("arch", "gpt"))
    if arch in vision.VISION_KINDS:
        scores = vision.read_scores(run)
        if scores:
            print(vision.summary_line(scores))
        print(f"run directory: {run} (loss plot: {run / 'plots' / 'loss.png'})")
        return
    if arch in encoders.KINDS:
        print(encoders.summary_line(arch, encoders.evaluate_encoder_run(run, device="auto")))
        print(f"run directory: {run} (loss plot: {run / 'plots' / 'loss.png'})")
        if samples:
            print(f"(no samples: a {arch} model is not a causal language model)")
        return
    summary = evaluate_run(run, device="auto")
    print(
        f"full validation split ({summary['tokens']:,} tokens): "
        f"loss {summary['loss_nats_per_token']:.4f} nats/token, "
        f"perplexity {summary['perplexity']:.2f}, {summary['bits_per_byte']:.3f} bits per byte"
    )
    print(f"run directory: {run} (loss plot: {run / 'plots' / 'loss.png'})")
    from groundwork.recipes.generate import sample

    for i in range(samples):
        print(f"--- sample {i + 1} ---")
        sample(run, prompt="\n", max_new_tokens=200, seed=i)
