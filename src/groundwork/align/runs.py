"""The run directory of a reward model, ``kind: reward-model`` (written by ``groundwork align
reward``): ``config.yaml`` holds the backbone's config and class (``model``, ``model_class``) and
the ``align`` section; ``model.safetensors`` the backbone with its scalar ``score`` head;
``tokenizer.json`` and ``chat_template.jinja`` what the pairs were rendered with, so that
``groundwork align ppo --reward-model RUN`` scores completions exactly as it was trained.
:func:`groundwork.runs.load_run` finds :func:`load_reward_model` through the
``groundwork.run_kinds`` entry point (``pyproject.toml``). Chapter 14.
"""

from pathlib import Path
from typing import Any

from torch import nn

from groundwork.align.reward import RewardModel
from groundwork.errors import CheckpointError
from groundwork.runs import (
    MODEL_FILE,
    TOKENIZER_FILE,
    build_model,
    load_tokenizer,
    register_kind,
    write_config,
)
from groundwork.train.checkpoint import load_model_weights, save_model

__all__ = [
    "CHAT_TEMPLATE_FILE",
    "KIND",
    "load_reward_model",
    "read_chat_template",
    "write_reward_run",
]

KIND = "reward-model"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def write_reward_run(model: RewardModel, policy: Any, out: Path, **sections: Any) -> Path:
    """Write ``model`` (a :class:`RewardModel`) as a ``reward-model`` run in ``out``, with the
    tokenizer and chat template of ``policy`` (``.tokenizer``, ``.template``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    write_config(
        out,
        kind=KIND,
        model=backbone.config,
        model_class=type(backbone).__name__,
        **sections,
    )
    save_model(model, out / MODEL_FILE)
    policy.tokenizer.save(out / TOKENIZER_FILE)
    (out / CHAT_TEMPLATE_FILE).write_text(policy.template, encoding="utf-8")
    return out


def read_chat_template(run_dir: Path) -> str | None:
    """The run's ``chat_template.jinja``, if it has one."""
    path = Path(run_dir) / CHAT_TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def load_reward_model(
    run_dir: Path, config: dict[str, Any], weights: bool
) -> tuple[nn.Module, Any]:
    """The :class:`RewardModel` of a ``reward-model`` run (weights loaded unless ``weights`` is
    false) and its tokenizer."""
    model = RewardModel(build_model(run_dir, config))
    if weights:
        load_model_weights(model, run_dir / MODEL_FILE)
    tokenizer = load_tokenizer(run_dir)
    if tokenizer is None:
        raise CheckpointError(f"{run_dir} has no {TOKENIZER_FILE}")
    return model.eval(), tokenizer


register_kind(KIND, load_reward_model)
