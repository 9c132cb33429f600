"""The ``groundwork`` command line.

Every subcommand is a plain typed function in :mod:`groundwork.recipes` whose docstring becomes
its ``--help``; this module only builds the parser from those functions (through jsonargparse) and
dispatches, so everything the CLI does can be done from Python too. Options are spelled with
dashes or underscores (``--vocab-size`` or ``--vocab_size``); a misspelt option is an error that
names the closest valid one.

Errors the user can cause (:class:`groundwork.errors.GroundworkError`) are printed on one line and
exit with status 2; ``--debug`` anywhere on the command line shows the full traceback instead.
"""

import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from groundwork.errors import ConfigError, GroundworkError, did_you_mean
from groundwork.recipes.classify import classify
from groundwork.recipes.data import (
    data_fetch,
    data_list,
    data_prepare,
    data_stats,
    tokenizer_encode,
    tokenizer_train,
)
from groundwork.recipes.evaluate import evaluate
from groundwork.recipes.generate import chat, generate, sample
from groundwork.recipes.models import export, import_, model_info
from groundwork.recipes.ngram import ngram
from groundwork.recipes.pretrain import pretrain_command
from groundwork.recipes.word2vec import word2vec

set_parsing_settings(docstring_parse_attribute_docstrings=True)

# -------------------------------------------------------------------------------------------------
# the command tree and its runner

COMMANDS: dict[str, Callable[..., None] | dict[str, Callable[..., None]]] = {
    "ngram": ngram,
    "word2vec": word2vec,
    "classify": classify,
    "pretrain": pretrain_command,
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
