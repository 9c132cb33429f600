"""Checkpoints and the run directory, written atomically.

A run directory holds everything needed to rebuild the model and resume training exactly
(see DESIGN.md, "The run directory is the interface between stages")::

    config.yaml            the resolved config, enough to rebuild the model
    model.safetensors      weights (tied weights stored once)
    optimizer.safetensors  optimizer moments, flattened to named tensors
    trainer_state.json     step, tokens seen, best validation loss, RNG states, schedule state

Every file is written to a temporary file in the same directory, flushed and fsync'ed, then moved
over the old one with ``os.replace`` (atomic on POSIX), and the directory is fsync'ed. A run killed
at any instant therefore leaves either the previous checkpoint or the new one, never a torn file.
Nothing is unpickled: tensors are safetensors, everything else JSON or YAML. Chapter 8 (Training).
"""

import base64
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from groundwork.errors import CheckpointError
from groundwork.fileio import atomic_path

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"


# ---------------------------------------------------------------------------------------------
# model weights


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with tied (shared-storage) tensors kept once, under the first name."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def save_model(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save weights as safetensors, atomically; tied weights are stored once."""
    save_tensors(unique_state_dict(model), path, metadata=metadata)


def save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Save named tensors (a model's unique state dict) as safetensors on the CPU, atomically."""
    on_cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(on_cpu, str(tmp), metadata=metadata)


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``, checking every key and shape.

    Raises:
        CheckpointError: missing/corrupt file, or keys/shapes that do not match the model.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    expected = unique_state_dict(model)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            " (was it written for another config?)"
        )
    for k, t in tensors.items():
        if t.shape != expected[k].shape:
            raise CheckpointError(
                f"{path}: {k} has shape {tuple(t.shape)} but the model expects "
                f"{tuple(expected[k].shape)} (was it written for another config?)"
            )
    with torch.no_grad():
        for k, t in tensors.items():
            expected[k].copy_(t)


# ---------------------------------------------------------------------------------------------
# optimizer state: tensors to safetensors, the rest (hyperparameters, step) to JSON metadata


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Save an optimizer's state dict without pickle: tensors as ``state.<i>.<name>``."""
    save_optimizer_state(optimizer.state_dict(), path)


def save_optimizer_state(sd: dict[str, Any], path: Path) -> None:
    """Save an optimizer state dict (``state`` keyed by parameter index, ``param_groups``) as
    :func:`save_optimizer` does."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"state.{idx}.{name}"] = value
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    metadata = {"param_groups": json.dumps(groups), "scalars": json.dumps(scalars)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Restore what :func:`save_optimizer` wrote into an optimizer over the same parameters."""
    sd = read_optimizer_state(path)
    state, groups = sd["state"], sd["param_groups"]
    ours = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in ours]:
        raise CheckpointError(f"{path} was saved for a different set of parameters")
    device = next(p.device for g in optimizer.param_groups for p in g["params"])
    for s in state.values():
        for name, value in s.items():
            if isinstance(value, torch.Tensor) and name != "step":
                s[name] = value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_optimizer_state(path: Path) -> dict[str, Any]:
    """What :func:`save_optimizer` wrote, as an optimizer state dict (tensors on the CPU)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata["scalars"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not a readable optimizer checkpoint: {err}") from err
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *scalars.items()]:
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------
# RNG states (bytes -> base64 so they fit in JSON)


def rng_state(generator: torch.Generator | None = None) -> dict[str, str]:
    """Capture torch's global CPU (and CUDA) RNG and an optional data generator as base64."""

    def enc(t: torch.Tensor) -> str:
        return base64.b64encode(t.numpy().tobytes()).decode("ascii")

    out = {"torch_cpu": enc(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = enc(torch.cuda.get_rng_state())
    if generator is not None:
        out["data"] = enc(generator.get_state())
    return out


def set_rng_state(state: dict[str, str], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""

    def dec(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()

    torch.set_rng_state(dec(state["torch_cpu"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(dec(state["torch_cuda"]))
    if generator is not None and "data" in state:
        generator.set_state(dec(state["data"]))
