"""The model commands: look inside a model (`groundwork model info`, `model list`) and move
models in and out of Hugging Face format (`groundwork export`, `groundwork import`).
Chapters 5 and 6."""

import shutil
from pathlib import Path
from typing import Any, Literal

from groundwork.errors import ConfigError, UnknownNameError, did_you_mean


def model_list() -> None:
    """List the model architectures with their presets, and the named pretrained models."""
    from groundwork.models import registry
    from groundwork.pretrained import PRETRAINED

    print("architectures (groundwork model info PRESET --arch NAME)")
    for arch in registry.ARCHITECTURES.values():
        twin = f"  [Hugging Face: {arch.hf.architectures}]" if arch.hf is not None else ""
        print(f"  {arch.name:<8}{arch.description}{twin}")
        print(f"  {'':<8}presets: {', '.join(arch.presets)}")
    print()
    print("pretrained models (groundwork.load(NAME), groundwork generate NAME)")
    for name, source in PRETRAINED.items():
        print(f"  {name}  ({source.arch}, preset {source.preset})")
        print(f"      {source.description}")


def _config_of(name: str, arch: str | None) -> Any:
    """The model config a run directory, a named pretrained model or a preset describes."""
    from groundwork.models import registry
    from groundwork.pretrained import PRETRAINED
    from groundwork.runs import is_run, read_config

    if is_run(name):
        return registry.config_from_dict(read_config(Path(name))["model"])
    if name in PRETRAINED and arch is None:
        return PRETRAINED[name].config()
    try:
        return registry.find_preset(name, arch)
    except UnknownNameError:
        if arch is not None:
            raise
        every = [p for a in registry.ARCHITECTURES.values() for p in a.presets] + list(PRETRAINED)
        raise UnknownNameError(
            f"{name!r} is neither a run directory, a preset nor a named pretrained model: "
            f"{did_you_mean(name, every)}"
        ) from None


def model_info(name: str, arch: str | None = None) -> None:
    """Parameters by component, FLOPs per token and memory of a preset, a named pretrained model
    or a run's model.

    Args:
        name: A preset name (e.g. tiny, gpt2-124m, smollm2-135m), a named pretrained model
            (smollm2-135m-instruct) or a run directory.
        arch: Architecture of the preset (gpt, llama, lstm; default: the first that has it).
    """
    from groundwork import models

    print(models.format_info(models.info(_config_of(name, arch))))


def _check_out_of_run(run: Path, out: Path) -> None:
    """Refuse an output directory that is the run directory or inside it."""
    run_dir, out_dir = run.resolve(), out.resolve()
    if out_dir.is_relative_to(run_dir):
        where = "is the run directory" if out_dir == run_dir else f"is inside the run {run}"
        raise ConfigError(
            f"output directory {out} {where}: the export would mix with (or overwrite) the "
            "run's own files; choose another output directory"
        )


def export(
    run: Path,
    out: Path,
    format: Literal["hf", "gguf"] = "hf",
    quant: Literal["f32", "f16", "q8_0", "q4_0"] = "q8_0",
) -> None:
    """Export a model to another format. `hf` writes a run's model as config.json +
    model.safetensors (+ tokenizer.json) that transformers' from_pretrained(OUT) loads:
    AutoModelForCausalLM for a language model; for a fine-tuned task head (`groundwork
    finetune`), AutoModelForSequenceClassification (BERT, GPT-2, Llama),
    AutoModelForTokenClassification (BERT) or AutoModelForMultipleChoice (BERT), with the task's
    label names in id2label. `gguf` writes a Llama run, or the named pretrained
    smollm2-135m-instruct, as one GGUF file (weights, tokenizer, chat template) for llama.cpp
    (`llama-cli -m OUT`): `groundwork export smollm2-135m-instruct smol.gguf --format gguf
    --quant q4_0`.

    Args:
        run: A run directory; with --format gguf also a named pretrained model
            (smollm2-135m-instruct).
        out: Output directory (not the run directory, nor inside it). With --format gguf: the
            file to write if it ends in .gguf, else a directory that gets OUT/model.gguf.
        format: Target format (hf: Hugging Face transformers; gguf: llama.cpp).
        quant: GGUF weight type of the matrices: f32, f16, q8_0 (8-bit blocks) or q4_0 (4-bit
            blocks); norms stay f32 (gguf only).
    """
    import groundwork.adapt  # noqa: F401  (teaches load_run the task-head kind)
    from groundwork.interop.hf import export_hf
    from groundwork.runs import TOKENIZER_FILE, load_run

    if format == "gguf":
        _export_gguf(str(run), Path(out), quant)
        return
    run, out = Path(run), Path(out)
    _check_out_of_run(run, out)
    net, tokenizer, config = load_run(run, device="cpu")
    eos = tokenizer.eot_id if tokenizer is not None else None
    if config.get("kind") == "task-head":
        _export_task_head(net, config, out, eos)
    else:
        export_hf(net, out, eos_token_id=eos)
    if (run / TOKENIZER_FILE).exists():
        shutil.copyfile(run / TOKENIZER_FILE, out / TOKENIZER_FILE)
    print(f"exported {run} -> {out} (Hugging Face format)")


def _export_gguf(name: str, out: Path, quant: Any) -> None:
    """A Llama run or named pretrained model -> one GGUF file (``out``, or ``out/model.gguf``)."""
    from collections import Counter

    from groundwork.fileio import read_json
    from groundwork.interop.gguf_writer import export_llama_gguf
    from groundwork.pretrained import PRETRAINED, load
    from groundwork.runs import is_run, load_run

    path = out if out.suffix == ".gguf" else out / "model.gguf"
    ids: dict[str, Any] = {}
    if is_run(name):
        from groundwork.align.runs import read_chat_template  # written by `groundwork align`

        _check_out_of_run(Path(name), out)
        net, tokenizer, _ = load_run(Path(name), device="cpu")
        template = read_chat_template(Path(name))
    elif name in PRETRAINED:
        pretrained = load(name)
        net, tokenizer, template = pretrained.model, pretrained.tokenizer, pretrained.chat_template
        hf_config = read_json(pretrained.path / "config.json")  # the source's own token ids
        ids = {f"{k}_token_id": hf_config.get(f"{k}_token_id") for k in ("bos", "eos")}
    else:
        raise UnknownNameError(
            f"{name!r} is neither a run directory nor a named model: "
            f"{did_you_mean(name, PRETRAINED)}"
        )
    if tokenizer is None:
        raise ConfigError(f"{name} has no tokenizer.json: a GGUF file must carry the tokenizer")
    types = export_llama_gguf(net, tokenizer, path, quant, template, name=Path(name).name, **ids)
    counts = ", ".join(f"{n} {t}" for t, n in Counter(types.values()).most_common())
    size = path.stat().st_size / 2**20
    print(
        f"exported {name} -> {path} (GGUF {quant}: {len(types)} tensors, {counts}; {size:.1f} MiB)"
    )


def _export_task_head(head: Any, config: dict[str, Any], out: Path, eos: int | None) -> None:
    """A task-head run's head as its transformers class, with the run's label names (none for a
    multiple-choice head) and the id its fine-tuning padded with."""
    from groundwork.adapt import export_head_hf

    section = config["head"]
    labels = section.get("labels") if section.get("kind") != "choice" else None
    pad = int(getattr(head.backbone.config, "pad_id", 0) or 0)  # as groundwork finetune pads
    export_head_hf(head, out, labels, pad_token_id=pad, eos_token_id=eos)


def import_(path: Path, out: Path) -> None:
    """Import a Hugging Face GPT-2 or Llama checkpoint directory as a run directory.

    Args:
        path: A directory with config.json and model.safetensors (tokenizer.json if any).
        out: The run directory to write.
    """
    from groundwork.interop.hf import import_hf
    from groundwork.runs import write_run

    net = import_hf(path)
    tokenizer = path / "tokenizer.json"
    write_run(net, out, tokenizer=tokenizer if tokenizer.exists() else None)
    print(f"imported {path} -> {out}")
