"""`groundwork evaluate`: few-shot tasks, perplexity of a file or a source, or a run's loss on
its own data; several models compared in one table. Chapter 11 (Evaluation)."""

import dataclasses
import json as _json
from pathlib import Path
from typing import Any

from groundwork.errors import ConfigError
from groundwork.fileio import atomic_write
from groundwork.recipes.generate import load_model


def evaluate(
    model: list[str],
    tasks: str | None = None,
    shots: str = "0",
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 1234,
    text: Path | None = None,
    normalize: bool = False,
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
            medqa,contracts,legal-support,asdiv,lambada-shakespeare; harms: crows-pairs,winobias,
            bbq,truthfulqa-mc1,truthfulqa-mc2).
        shots: Comma-separated numbers of solved examples shown first, e.g. 0,5.
        limit: Evaluate only the first N examples of each task (or N documents of --source).
        batch_size: Continuations (or windows) per forward pass.
        seed: Seed of the few-shot sampling.
        text: A UTF-8 text file whose perplexity to compute: its exact bytes, as given.
        normalize: Normalise --text first as the data pipeline does (Unicode NFC, \\n line
            ends, no trailing spaces, at most two blank lines in a row, no leading or trailing
            blank lines).
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
    from groundwork.recipes.pretrain import evaluate_run

    if tasks is None and (len(model) > 1 or markdown is not None or plot is not None):
        raise ConfigError("several models, --markdown and --plot go with --tasks")
    if tasks is not None:
        _evaluate_tasks(model, tasks, shots, limit, batch_size, seed, json, markdown, plot)
        return
    model_name = model[0]
    result: dict[str, Any]
    if normalize and text is None:
        raise ConfigError("--normalize goes with --text")
    if text is not None and source is not None:
        raise ConfigError("give --text or --source, not both")
    if text is None and source is None:
        _check_own_data(model_name)
        result = evaluate_run(Path(model_name), split=split)
    else:
        from groundwork.corpus import read_text_file

        # The exact bytes of the file unless asked otherwise (read before the model loads, so a
        # bad file fails at once).
        content = (
            None if text is None else read_text_file(text, normalize=normalize, strip_bom=normalize)
        )
        net, tokenizer, _ = load_model(model_name)
        opts = dict(window=window, stride=stride, batch_size=batch_size)
        if content is not None:
            r = ev.perplexity(net, tokenizer, content, **opts)  # type: ignore[arg-type]
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


def _check_own_data(name: str) -> None:
    """Refuse, in one line, a model that has no data split of its own to be scored on."""
    from groundwork.runs import is_run, read_config

    if not is_run(name):
        raise ConfigError(
            f"{name} is not a run directory (no config.yaml), so it has no data split of its "
            "own: give --tasks, --text or --source"
        )
    config = read_config(Path(name))
    kind = config.get("kind", "lm")
    if kind != "lm":
        raise ConfigError(f"{name} is a {kind} run, not a language model: evaluate scores LMs")
    if not isinstance(config.get("data"), dict) or "shards" not in config["data"]:
        raise ConfigError(
            f"the run {name} has no data split of its own (its config.yaml has no data section: "
            "it was not made by `groundwork pretrain`, e.g. by `groundwork import`): "
            "pass --tasks, --text or --source"
        )


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
        net, tokenizer, _ = load_model(name)
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
