r"""Fully sharded data parallelism (ZeRO stage 3) with torch's FSDP2 ``fully_shard``.

ZeRO-1/2 (:mod:`groundwork.distributed.zero`) shard the optimizer state and the gradients; the
parameters stay replicated. FSDP shards them too: each rank keeps $1/N$ of every parameter
(a ``DTensor`` sharded on its first dimension). Before a block runs forward, its parameters are
**all-gathered**; after it, the full copies are freed; backward gathers them again and
**reduce-scatters** the block's gradients, so each rank ends with the mean gradient of its own
shard and steps it. Memory per rank for the model states falls from $16\Psi$ bytes (fp32 AdamW) to
$16\Psi/N$ plus one block's full parameters; communication is $1.5\times$ data parallelism's
(two all-gathers and a reduce-scatter against a reduce-scatter and an all-gather).

:func:`apply_fsdp` shards each transformer block as a unit and then the root (the embeddings,
the final norm and a tied head, which must be in one unit). :func:`full_model_state` and
:func:`load_full_model_state` move between the sharded model and the one-process checkpoint
format (via ``torch.distributed.checkpoint.state_dict``), and :func:`full_optimizer_state` /
:func:`load_full_optimizer_state` do the same for AdamW's state, so an FSDP run writes the
checkpoints a one-process run reads, and the other way round. Chapter 17.
"""

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from groundwork.errors import CheckpointError
from groundwork.train.activation_checkpointing import transformer_blocks

try:  # torch >= 2.6
    from torch.distributed.fsdp import fully_shard
except ImportError:  # torch 2.4, 2.5
    from torch.distributed._composable.fsdp import fully_shard

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


# --8<-- [start:apply]
def apply_fsdp(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place over the default process group: each transformer block, then the
    rest as the root unit. Returns ``model`` (its parameters are now ``DTensor`` shards)."""
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again at once by backward: keep them gathered
        fully_shard(block, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model)
    return model


# --8<-- [end:apply]


def tied_names(model: nn.Module) -> dict[str, str]:
    """For each state-dict name of ``model``, the name its tensor is saved under (tied weights,
    e.g. a head sharing the embedding, are saved once, under the first name)."""
    first: dict[tuple[int, int], str] = {}
    out = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = first.setdefault(key, name)
    return out


def full_model_state(model: nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, gathered on every rank (rank 0 writes them), each
    tied tensor once (``names`` from :func:`tied_names` before sharding)."""
    state: dict[str, Any] = dict(get_model_state_dict(model, options=FULL))
    return {k: v.contiguous() for k, v in state.items() if names.get(k) == k}


def load_full_model_state(
    model: nn.Module, tensors: dict[str, torch.Tensor], names: dict[str, str]
) -> None:
    """Load one-process weights (tied tensors saved once) into the sharded ``model``."""
    expected = {saved for saved in names.values()}
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint does not match the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (was it written for another config?)"
        )
    full: dict[str, Any] = {name: tensors[saved] for name, saved in names.items()}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """AdamW's state gathered into the one-process format (parameters numbered in the order of
    the optimizer's groups), on rank 0 (other ranks get an empty state)."""
    state: dict[str, Any] = dict(get_optimizer_state_dict(model, optimizer, options=FULL))
    groups: list[dict[str, Any]] = list(state.get("param_groups", []))
    index = {fqn: i for i, fqn in enumerate(f for g in groups for f in g["params"])}
    return {
        "state": {index[fqn]: s for fqn, s in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [index[f] for f in g["params"]]} for g in groups],
    }


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> None:
    """Load a one-process optimizer state (``saved``, from a checkpoint) into the optimizer of
    the sharded ``model``; its groups must carry the parameters' ``names``."""
    fqns = [n for g in optimizer.param_groups for n in g["names"]]
    if len(fqns) != sum(len(g["params"]) for g in saved["param_groups"]):
        raise CheckpointError(
            "the optimizer checkpoint was saved for a different set of parameters"
        )
    state = {fqns[i]: s for i, s in saved["state"].items()}
    groups = [{**g, "params": [fqns[i] for i in g["params"]]} for g in saved["param_groups"]]
    set_optimizer_state_dict(
        model,
        optimizer,
        {"state": state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True),
    )


def read_model_file(path: Any) -> dict[str, torch.Tensor]:
    """A one-process weights file, as tensors (checked readable)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
