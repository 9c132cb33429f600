"""The run directory of a fine-tuned task head, ``kind: task-head`` (written by ``groundwork
finetune`` for classification and labelling tasks): ``config.yaml`` holds the backbone's config
and class (``model``, ``model_class``) and the head (``head``: ``kind``, one of ``sequence``,
``token`` and ``choice``; ``pooling``; ``num_labels``; ``labels``); ``model.safetensors`` the head
with its backbone; ``tokenizer.json`` the backbone's tokenizer. A run fine-tuned with a PEFT method
(chapter 13) has a ``peft`` section (``method``, ``options``) and keeps in ``model.safetensors``
only the weights that trained (the adapter and the head): loading it reads the pretrained
``backbone`` again, applies the method and loads those weights on top.
:func:`groundwork.runs.load_run` finds :func:`load_task_head` through the
``groundwork.run_kinds`` entry point (``pyproject.toml``), or through the
:func:`~groundwork.runs.register_kind` call below once this module is imported. Chapters 12, 13.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundwork.adapt.heads import head_for
from groundwork.errors import CheckpointError
from groundwork.fileio import atomic_path
from groundwork.models import registry
from groundwork.runs import (
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    load_tokenizer,
    register_kind,
    write_config,
)
from groundwork.train.checkpoint import load_model_weights, save_model

__all__ = ["KIND", "load_task_head", "train_task_head"]

KIND = "task-head"


def load_task_head(run_dir: Path, config: dict[str, Any], weights: bool) -> tuple[nn.Module, Any]:
    """The head of a ``task-head`` run over its backbone (weights loaded unless ``weights`` is
    false) and the backbone's tokenizer."""
    if "model" not in config or "head" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} lacks a model or head section")
    model_config = registry.config_from_dict(config["model"])
    arch = registry.arch_of(model_config)
    classes = arch.model_classes()
    name = config.get("model_class", getattr(arch.model_cls, "__name__", arch.name))
    if name not in classes:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: model_class {name!r} is not a class of {arch.name} models"
        )
    peft = config.get("peft") or {"method": "full"}
    partial = peft["method"] != "full"
    if partial and weights:
        backbone = _pretrained_backbone(run_dir, config)
    else:
        backbone = classes[name](model_config)
    if partial:
        from groundwork.peft.methods import apply_method

        # the saved weights replace any init, so a prompt's init text need not be tokenized
        options = {k: v for k, v in (peft.get("options") or {}).items() if k != "init_text"}
        backbone = apply_method(backbone, peft["method"], options)
    head_config = config["head"]
    pooled = head_config["kind"] in ("sequence", "choice")
    pooling = head_config.get("pooling") if pooled else None
    head = head_for(backbone, head_config["kind"], int(head_config["num_labels"]), pooling)
    if weights and partial:
        _load_trainable(head, run_dir / MODEL_FILE)
    elif weights:
        load_model_weights(head, run_dir / MODEL_FILE)
    tokenizer = load_tokenizer(run_dir)
    if tokenizer is None:
        raise CheckpointError(f"{run_dir} has no {TOKENIZER_FILE}")
    return head, tokenizer


def train_task_head(
    head: nn.Module,
    tokenizer: Any,
    data: Any,
    objective: Any,
    train_config: Any,
    out: Path,
    *,
    backbone: str,
    head_section: dict[str, Any],
    evaluate: Any = None,
    **sections: Any,
) -> Any:
    """Write a ``task-head`` run in ``out``: ``config.yaml`` (the backbone's config and class,
    ``backbone`` (its name), ``head_section``, the recipe's other ``sections``, ``train``), then
    train ``head`` through the engine and save its weights and the backbone's tokenizer. Returns
    the engine's result."""
    from groundwork.train.engine import train

    net: Any = getattr(head.backbone, "base_model", head.backbone)  # under a prompt or prefix
    out.mkdir(parents=True, exist_ok=True)
    write_config(
        out,
        kind=KIND,
        model=net.config,
        model_class=type(net).__name__,
        backbone=backbone,
        head=head_section,
        **sections,
        train=train_config,
    )
    head.train()
    result = train(head, data, objective, train_config, out, evaluate=evaluate)
    peft = sections.get("peft") or {"method": "full"}
    if peft["method"] == "full":
        save_model(head, out / MODEL_FILE)
    else:
        save_trainable(head, out / MODEL_FILE)
    tokenizer.save(out / TOKENIZER_FILE)
    return result


def save_trainable(model: nn.Module, path: Path) -> None:
    """Save only the parameters that train (a PEFT adapter and the head), atomically."""
    from safetensors.torch import save_file

    tensors = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "content": "trainable weights"})


def _load_trainable(model: nn.Module, path: Path) -> None:
    """Load the trainable weights :func:`save_trainable` wrote; every trainable parameter must
    be there, with its shape."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    saved = load_file(str(path))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the adapted model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (was it written for another method or options?)"
        )
    with torch.no_grad():
        for n, value in saved.items():
            if params[n].shape != value.shape:
                raise CheckpointError(
                    f"{path}: {n} has shape {tuple(value.shape)}, the model's "
                    f"{tuple(params[n].shape)}"
                )
            params[n].copy_(value)


def _pretrained_backbone(run_dir: Path, config: dict[str, Any]) -> nn.Module:
    """The pretrained model a PEFT run adapted: a named model or a run directory."""
    from groundwork.pretrained import PRETRAINED, load
    from groundwork.runs import is_run, load_run

    name = str(config.get("backbone", ""))
    if name in PRETRAINED:
        return load(name).model
    if name and is_run(name):
        return load_run(Path(name))[0]
    raise CheckpointError(
        f"{run_dir / CONFIG_FILE}: the PEFT run keeps only its adapter, and its backbone "
        f"{name!r} is neither a named pretrained model nor a run directory any more"
    )


register_kind(KIND, load_task_head)
