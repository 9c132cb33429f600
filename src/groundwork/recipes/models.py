"""The model commands: look inside a model (`groundwork model info`, `model list`) and move
models in and out of Hugging Face format (`groundwork export`, `groundwork import`).
Chapters 5 and 6."""

import shutil
from pathlib import Path
from typing import Literal


def model_info(name: str, arch: str | None = None) -> None:
    """Parameters by component, FLOPs per token and memory of a preset, a named pretrained model
    or a run's model.

    Args:
        name: A preset name (e.g. tiny, gpt2-124m, smollm2-135m), a named pretrained model
            (smollm2-135m-instruct) or a run directory.
        arch: Architecture of the preset (gpt, llama, lstm; default: the first that has it).
    """
    from groundwork import models
    from groundwork.models import registry
    from groundwork.runs import is_run, read_config

    if is_run(name):
        config = registry.config_from_dict(read_config(Path(name))["model"])
    else:
        config = registry.find_preset(name, arch)
    print(models.format_info(models.info(config)))


def export(run: Path, out: Path, format: Literal["hf"] = "hf") -> None:
    """Export a run's model to another format: `hf` writes config.json + model.safetensors
    (+ tokenizer.json) that transformers' AutoModelForCausalLM.from_pretrained(OUT) loads.

    Args:
        run: A run directory.
        out: Output directory.
        format: Target format (hf: Hugging Face transformers).
    """
    from groundwork.interop.hf import export_hf
    from groundwork.runs import load_run

    net, _, _ = load_run(run, device="cpu")
    export_hf(net, out)
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
    from groundwork.runs import write_run

    net = import_hf(path)
    tokenizer = path / "tokenizer.json"
    write_run(net, out, tokenizer=tokenizer if tokenizer.exists() else None)
    print(f"imported {path} -> {out}")
