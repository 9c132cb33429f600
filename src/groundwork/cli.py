"""The ``groundwork`` command line.

Every subcommand is a plain typed function in :mod:`groundwork.recipes` whose docstring becomes
its ``--help``; this module only builds the parser from those functions (through jsonargparse) and
dispatches, so everything the CLI does can be done from Python too. The conventions, the same
for every command:

* what the command acts on comes first, as a positional argument (``groundwork chat MODEL``,
  ``groundwork sample RUN``); everything else is an option;
* options are spelled with dashes or underscores (``--vocab-size`` or ``--vocab_size``);
* an option that takes a list takes ``a,b`` as well as ``[a, b]``;
* a boolean option may stand alone (``--json`` means ``--json true``);
* a misspelt command, option or config key is an error that names the closest valid one, and a
  value of the wrong type says what the option takes.

Errors the user can cause (:class:`groundwork.errors.GroundworkError`) are printed on one line and
exit with status 2; ``--debug`` anywhere on the command line shows the full traceback instead.
"""

import dataclasses
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from groundwork.errors import ConfigError, GroundworkError, did_you_mean
from groundwork.recipes.align import align_sft
from groundwork.recipes.align_preference import align_dpo, align_reward
from groundwork.recipes.align_rl import align_grpo, align_ppo
from groundwork.recipes.classify import classify
from groundwork.recipes.classify_image import classify_image
from groundwork.recipes.data import (
    data_fetch,
    data_licences,
    data_list,
    data_prepare,
    data_stats,
    tokenizer_encode,
    tokenizer_train,
)
from groundwork.recipes.distill import distill
from groundwork.recipes.domain_adapt import continue_pretraining
from groundwork.recipes.edit import edit, trace
from groundwork.recipes.embed import embed
from groundwork.recipes.evaluate import evaluate
from groundwork.recipes.finetune import finetune
from groundwork.recipes.generate import chat, generate, sample
from groundwork.recipes.impact import impact_estimate, impact_published
from groundwork.recipes.models import export, import_, model_info, model_list
from groundwork.recipes.ngram import ngram
from groundwork.recipes.plan import model_plan
from groundwork.recipes.predict import predict
from groundwork.recipes.pretrain import pretrain_command
from groundwork.recipes.probe import probe
from groundwork.recipes.retrieve import agent, rag, retrieve
from groundwork.recipes.scaling import scaling_fit, scaling_optimal
from groundwork.recipes.scaling_sweep import scaling_sweep
from groundwork.recipes.serve import serve
from groundwork.recipes.word2vec import word2vec

set_parsing_settings(docstring_parse_attribute_docstrings=True)

# -------------------------------------------------------------------------------------------------
# the command tree and its runner

COMMANDS: dict[str, Callable[..., None] | dict[str, Callable[..., None]]] = {
    "ngram": ngram,
    "word2vec": word2vec,
    "classify": classify,
    "classify-image": classify_image,
    "pretrain": pretrain_command,
    # returns its result for code that calls it; the command prints it
    "continue-pretraining": typing.cast(Callable[..., None], continue_pretraining),
    "finetune": finetune,
    "distill": typing.cast(Callable[..., None], distill),  # returns its result for callers
    "predict": predict,
    "probe": probe,
    "sample": sample,
    "evaluate": evaluate,
    "embed": embed,
    "model": {"info": model_info, "plan": model_plan, "list": model_list},
    "generate": generate,
    "chat": chat,
    "serve": serve,
    "retrieve": retrieve,
    "rag": rag,
    "agent": agent,
    "export": export,
    "import": import_,
    "edit": edit,
    "trace": trace,
    "scaling": {"sweep": scaling_sweep, "fit": scaling_fit, "optimal": scaling_optimal},
    "impact": {"estimate": impact_estimate, "published": impact_published},
    "data": {
        "list": data_list,
        "licences": data_licences,
        "fetch": data_fetch,
        "stats": data_stats,
        "prepare": data_prepare,
    },
    "align": {
        "sft": align_sft,
        "reward": align_reward,
        "dpo": align_dpo,
        "ppo": align_ppo,
        "grpo": align_grpo,
    },
    "tokenizer": {
        "train": tokenizer_train,
        "encode": tokenizer_encode,
    },
}
"""The command tree: a command name and its recipe function, or a group (``data``, ``model``,
``tokenizer``) of subcommands."""

OPTIONAL_POSITIONALS: dict[Callable[..., None], tuple[str, ...]] = {
    chat: ("model",),
    embed: ("model",),
    predict: ("run",),
}
"""Parameters with a default that are still given positionally (``groundwork chat [MODEL]``,
``groundwork embed [MODEL] TEXT...``); they come before a command's list of words."""

GROUP_HELP = {
    "model": "List the architectures and presets; look inside a model: parameters, FLOPs, memory.",
    "data": "Real data sources: fetch, inspect, and prepare token shards.",
    "tokenizer": "Train tokenizers and look at how they split text.",
    "align": "Align a chat model: SFT, a reward model, DPO, PPO (RLHF) and GRPO.",
    "scaling": "Scaling laws: a sweep of model sizes x compute budgets, its fits, and the "
    "compute-optimal allocation of a budget.",
    "impact": "Energy and emissions of training: estimates, and the published ones reproduced.",
}


def _is_str_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,)


def _command_parser(fn: Callable[..., None]) -> ArgumentParser:
    """A parser for one command: required list-of-str parameters become ``nargs='+'``
    positionals, those of :data:`OPTIONAL_POSITIONALS` ``nargs='?'`` ones, and the rest come
    from the signature and docstring through jsonargparse (required ones positional)."""
    parser = ArgumentParser(description=_summary(fn), exit_on_error=False, allow_abbrev=False)
    if any(dataclasses.is_dataclass(t) for t in _dataclass_params(fn).values()):
        parser.add_argument("--config", action=ActionConfigFile, help="A YAML recipe (configs/).")
    params = inspect.signature(fn).parameters
    optional = OPTIONAL_POSITIONALS.get(fn, ())
    for name in optional:  # first: `embed [MODEL] TEXT...`
        parser.add_argument(
            name, nargs="?", default=params[name].default, help=_param_doc(fn, name)
        )
    many = _list_positionals(fn)
    for name in many:
        parser.add_argument(name, nargs="+", help=_param_doc(fn, name))
    parser.add_function_arguments(fn, as_positional=True, skip={*many, *optional})
    return parser


def _list_positionals(fn: Callable[..., None]) -> list[str]:
    """Required list-of-str parameters: one or more positional words (``data fetch A B``)."""
    hints = typing.get_type_hints(fn)
    return [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is inspect.Parameter.empty and _is_str_list(hints.get(name))
    ]


def _options(fn: Callable[..., None]) -> dict[str, tuple[Any, Any]]:
    """Every option of a command, as jsonargparse names it (``max_new_tokens``, ``train.lr``),
    with its type and default; config dataclasses are walked into."""
    out: dict[str, tuple[Any, Any]] = {}

    def walk(prefix: str, fields: dict[str, tuple[Any, Any]]) -> None:
        for name, (hint, default) in fields.items():
            inner = _dataclass_in(hint)
            if inner is None:
                out[prefix + name] = (hint, default)
                continue
            hints = typing.get_type_hints(inner)
            walk(
                f"{prefix}{name}.",
                {f.name: (hints[f.name], f.default) for f in dataclasses.fields(inner)},
            )

    hints = typing.get_type_hints(fn)
    params = inspect.signature(fn).parameters
    walk("", {n: (hints.get(n, Any), p.default) for n, p in params.items() if n in hints})
    for name in _list_positionals(fn):
        out.pop(name, None)
    return out


def _dataclass_params(fn: Callable[..., None]) -> dict[str, Any]:
    """Parameters whose type is (optionally) a config dataclass."""
    out = {}
    for name, hint in typing.get_type_hints(fn).items():
        inner = _dataclass_in(hint)
        if inner is not None:
            out[name] = inner
    return out


def _dataclass_in(hint: Any) -> Any:
    """The config dataclass ``hint`` is (``X`` or ``X | None``), else ``None``."""
    inner = _without_none(hint)
    return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None`` (or ``Optional[X]``); ``hint`` itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(hint):
        return args[0]
    return hint


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


def _option_values(argv: list[str]) -> list[str]:
    """Let a boolean option stand alone (``--json`` means ``--json true``), and let a list
    option take ``a,b`` (``--sources shakespeare,wiki-sample`` means ``[shakespeare,
    wiki-sample]``); ``argv`` has been through :func:`_normalise_argv`."""
    _, fn = _find_command(argv)
    if fn is None:
        return argv
    options = {f"--{name}": hint for name, (hint, _) in _options(fn).items()}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        hint = _without_none(options.get(flag))
        following = argv[i + 1] if i + 1 < len(argv) else None
        if "--" in argv[:i]:
            out.append(arg)
        elif hint is bool and not eq:
            out.append(arg)
            if following is None or following.lower() not in ("true", "false", "yes", "no"):
                out.append("true")
        elif typing.get_origin(hint) in (list, tuple) and eq:
            out.append(f"{flag}={_as_list(value, hint)}")
        elif typing.get_origin(hint) in (list, tuple) and following is not None:
            out += [arg, _as_list(following, hint)]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def _as_list(value: str, hint: Any) -> str:
    """``a,b`` as the list jsonargparse parses (``["a", "b"]``); a ``[...]`` value unchanged."""
    if value.lstrip().startswith("[") or value.startswith("-"):
        return value
    items = [item.strip() for item in value.split(",") if item.strip()]
    element_types = {t for t in typing.get_args(hint) if t is not Ellipsis}
    if element_types <= {str, Path}:
        return json.dumps(items)  # quoted: "no" or "1" stay strings
    return "[" + ", ".join(items) + "]"


def _explain_parse_error(message: str, argv: Sequence[str]) -> str:
    """Turn a parse error into one plain line: an unknown command, option or config key gets the
    closest valid one ('did you mean ...'), a value of the wrong type what the option takes."""
    words, fn = _find_command(argv)
    choice = re.search(r"argument (sub)?command: invalid choice: '([^']*)'", message)
    if choice:
        group = words[0] if choice.group(1) and words else ""
        entry = COMMANDS.get(group, COMMANDS)
        names = [f"{group} {n}".strip() for n in entry] if isinstance(entry, dict) else []
        bad = f"{group} {choice.group(2)}".strip()
        return f"unknown command {bad!r}: {did_you_mean(bad, names)}"
    missing = re.search(r'expected "(\w+)\.subcommand" to be one of \{([^}]*)\}', message)
    if missing:
        commands = missing.group(2).replace(",", ", ")
        return f"`groundwork {missing.group(1)}` needs a command: {commands} (see --help)"
    required = re.search(r"arguments are required: (.+)$", message.strip())
    if required and fn is not None:
        names = [n.rsplit(".", 1)[-1].upper() for n in required.group(1).split(", ")]
        return f"`groundwork {' '.join(words)}` needs {' '.join(names)} (see --help)"
    unknown = re.search(r"[Uu]nrecognized arguments: (--?[\w.-]+)", message) or re.search(
        r"does not accept (?:option|key) '([\w.-]+)'", message
    )
    if unknown and fn is not None:
        bad = "--" + unknown.group(1).lstrip("-").replace("_", "-")
        hint = did_you_mean(bad, _known_options(fn))
        return (
            f"unknown option {bad} for `groundwork {' '.join(words)}` (or in its --config): {hint}"
        )
    key = re.search(r'Parser key "([\w.]+)"', message)
    if key and fn is not None and key.group(1) in _options(fn):
        hint, default = _options(fn)[key.group(1)]
        got = re.search(r"(?:Got|Given) value: (.*)$", message.strip())
        shown = f" (got {got.group(1)!r})" if got else ""
        return f"--{key.group(1).replace('_', '-')} {_expects(hint, default)}{shown}"
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[-2:]) if lines else "invalid arguments"


def _expects(hint: Any, default: Any) -> str:
    """What an option of type ``hint`` takes, in words (``must be one of: cnn, bilstm``)."""
    inner = _without_none(hint)
    none = " or none" if inner is not hint else ""
    if typing.get_origin(inner) is typing.Literal:
        return "must be one of: " + ", ".join(str(v) for v in typing.get_args(inner)) + none
    if typing.get_origin(inner) in (list, tuple):
        items = [str(v) for v in default] if isinstance(default, list | tuple) and default else []
        example = f"{','.join(items)} or [{items[0]}]" if items else "a,b or [a, b]"
        return f"takes a list: {example}{none}"
    words = {bool: "true or false", int: "an integer", float: "a number", Path: "a path"}
    return f"takes {words.get(inner, 'text')}{none}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``groundwork`` command; returns the exit status (0 ok, 2 user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = _option_values(_normalise_argv([a for a in args if a != "--debug"]))
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
