"""The run directory of a fine-tuned task head, ``kind: task-head`` (written by ``groundwork
finetune`` for classification and labelling tasks): ``config.yaml`` holds the backbone's config
and class (``model``, ``model_class``) and the head (``head``: ``kind``, one of ``sequence``,
``token`` and ``choice``; ``pooling``; ``num_labels``; ``labels``); ``model.safetensors`` the head
with its backbone; ``tokenizer.json`` the backbone's tokenizer. :func:`groundwork.runs.load_run`
finds :func:`load_task_head` through the ``groundwork.run_kinds`` entry point (``pyproject.toml``),
or through the :func:`~groundwork.runs.register_kind` call below once this module is imported.
Chapter 12.
"""

from pathlib import Path
from typing import Any

from torch import nn

from groundwork.adapt.heads import head_for
from groundwork.errors import CheckpointError
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
    backbone = classes[name](model_config)
    head_config = config["head"]
    pooled = head_config["kind"] in ("sequence", "choice")
    pooling = head_config.get("pooling") if pooled else None
    head = head_for(backbone, head_config["kind"], int(head_config["num_labels"]), pooling)
    if weights:
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

    net: Any = head.backbone
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
    save_model(head, out / MODEL_FILE)
    tokenizer.save(out / TOKENIZER_FILE)
    return result


register_kind(KIND, load_task_head)
