r"""2-D parallelism: FSDP across the data-parallel dimension, tensor parallelism within.

Tensor parallelism (Shoeybi et al. 2019, Megatron-LM) costs two all-reduces of the $(B, T, d)$
activations per block forward and two backward, on the critical path of every layer: it only
pays over the fast links inside a node (NVLink), and its degree is bounded by the heads. FSDP
(Zhao et al. 2023, "PyTorch FSDP"; ZeRO stage 3) communicates parameters and gradients, once per
block, and overlaps with compute: it tolerates the slower links between nodes. torchtitan
(Liang et al. 2024, "TorchTitan: one-stop PyTorch native solution for production ready LLM
pre-training") combines them on a 2-D **device mesh** of $dp \times tp$ ranks, rank
$r = i_{dp} \cdot tp + i_{tp}$:

* the rows of the mesh (fixed $i_{dp}$, ``mesh["tp"]``) are tensor-parallel groups, on one node:
  they read the **same** batch rows and split every block's heads and MLP; the all-reduces of
  Megatron's $f$ and $g$ run on this dimension;
* the columns (fixed $i_{tp}$, ``mesh["dp"]``) are FSDP groups: each holds the same slice of
  the blocks and reads its own rows of the global batch ($i_{dp}$, $i_{dp} + dp$, ...); the
  all-gathers of parameters and the reduce-scatters (means) of gradients run on this dimension.

The recipe (:func:`apply_fsdp_tp`) applies tensor parallelism first (weights become ``DTensor``
s on ``mesh["tp"]``, :func:`~groundwork.distributed.tensor_parallel.apply_tensor_parallel_dtensor`),
then ``fully_shard(block, mesh=mesh["dp"])`` per transformer block and the root: FSDP2 sees the
TP ``DTensor`` and shards its local slice again on dimension 0, so a block weight ends as a 2-D
``DTensor`` on the whole mesh (placements ``(Shard(0), Shard(k))``; ``_StridedShard`` when both
cut dimension 0), a rank holding $1/(dp \cdot tp)$ of it. What tensor parallelism replicates
(embeddings, norms, the tied head) FSDP shards over ``mesh["dp"]`` alone: those are ``DTensor`` s
on the 1-D submesh, replicated over ``tp``.

The global gradient norm (:func:`clip_grad_norm_fsdp_tp`) must count every element once. The
gradients live on two meshes, which torch's ``clip_grad_norm_`` (torch 2.13) refuses: it stacks
the per-parameter norms, and "all operands in aten.stack must have the same mesh". So each
mesh's norm is reduced on its own (a ``DTensor`` norm is partial: ``full_tensor()`` sums the
squares over the sharded dimensions and counts the replicated ones once) and the squares are
added. The one-process state dict is
:func:`~groundwork.distributed.tensor_parallel.gather_tensor_parallel_state`'s, unchanged:
``full_tensor()`` gathers a 2-D ``DTensor`` over both dimensions, then GPT's q/k/v are fused
back. Checked with 4 gloo processes on CPU ($dp = tp = 2$) against one process: AdamW steps
with clipping give its losses, norms and weights. ``groundwork pretrain
--parallel.dp D --parallel.tp T`` trains with it under ``torchrun --nproc-per-node D*T``
(:class:`~groundwork.distributed.strategies.HybridParallel`, which also gathers the model and
optimizer state into the one-process checkpoint). Not done: sequence parallelism, a flattened
``dp x tp`` mesh dimension for the norm's reduction (DTensor now runs two all-reduces, one per
dimension). Chapter 17.
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from groundwork.distributed.tensor_parallel import (
    apply_tensor_parallel_dtensor,
    check_tensor_parallel,
)
from groundwork.errors import ConfigError, DistributedError
from groundwork.train.activation_checkpointing import transformer_blocks

try:  # torch >= 2.6
    from torch.distributed.fsdp import fully_shard
except ImportError:  # torch 2.4, 2.5
    from torch.distributed._composable.fsdp import fully_shard

try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor
except ImportError:  # torch 2.4
    from torch.distributed._tensor import DTensor

MESH_DIMS = ("dp", "tp")
"""The names of the mesh's dimensions, outer (across nodes) first."""


def check_mesh_shape(dp: int, tp: int, world_size: int) -> None:
    """Raise :class:`ConfigError` unless ``dp x tp`` ranks are exactly the ``world_size`` ones."""
    if dp < 1 or tp < 1:
        raise ConfigError(f"the mesh needs dp >= 1 and tp >= 1, got dp={dp}, tp={tp}")
    if dp * tp != world_size:
        raise ConfigError(
            f"a {dp} x {tp} mesh (dp x tp) needs {dp * tp} processes, but {world_size} were "
            f"launched: launch with `torchrun --nproc-per-node {dp * tp}`, or choose dp and tp "
            f"whose product is {world_size}"
        )


def make_mesh(dp: int, tp: int, device_type: str | None = None) -> Any:
    """The 2-D ``DeviceMesh`` of the world, dimensions ``("dp", "tp")``: rank ``i_dp * tp +
    i_tp``, so a tensor-parallel group is ``tp`` consecutive ranks (one node's GPUs).

    Args:
        dp: The data-parallel (FSDP) degree, the outer dimension.
        tp: The tensor-parallel degree, the inner dimension.
        device_type: ``cpu`` or ``cuda``; default ``cuda`` under NCCL, else ``cpu``.

    Raises:
        ConfigError: ``dp * tp`` is not the number of processes.
        DistributedError: No process group (not under ``torchrun``, or ``init_world`` not called).
    """
    initialized = dist.is_available() and dist.is_initialized()
    check_mesh_shape(dp, tp, dist.get_world_size() if initialized else 1)
    if not initialized:
        raise DistributedError(
            "make_mesh needs a process group: launch with `torchrun --nproc-per-node N` and call "
            "groundwork.distributed.init_world() before it"
        )
    from torch.distributed.device_mesh import init_device_mesh  # torch >= 2.2

    if device_type is None:
        device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device_type, (dp, tp), mesh_dim_names=MESH_DIMS)


def check_fsdp_tp(model: nn.Module, mesh: Any) -> None:
    """Raise :class:`ConfigError` unless ``mesh`` is 2-D with dimensions ``("dp", "tp")`` and
    its ``tp`` size splits ``model``'s heads and MLPs (whole heads, whole GQA groups per rank)."""
    names = tuple(getattr(mesh, "mesh_dim_names", None) or ())
    if names != MESH_DIMS:
        raise ConfigError(
            f"apply_fsdp_tp needs a 2-D mesh with dimensions {MESH_DIMS}, got {names or None} "
            "(build it with groundwork.distributed.hybrid.make_mesh(dp, tp))"
        )
    check_tensor_parallel(model, int(mesh.shape[1]))


# --8<-- [start:fsdp_tp]
def apply_fsdp_tp(model: nn.Module, mesh: Any) -> nn.Module:
    """Shard ``model`` in place over a 2-D ``(dp, tp)`` mesh: Megatron tensor parallelism (as
    ``DTensor`` s) over ``mesh["tp"]``, then FSDP2 per transformer block and the root over
    ``mesh["dp"]``. Every rank must pass the same one-process weights; returns ``model``.

    Raises:
        ConfigError: ``mesh`` is not ``(dp, tp)``, or ``tp`` does not divide the heads or MLPs.
    """
    check_fsdp_tp(model, mesh)
    apply_tensor_parallel_dtensor(model, mesh["tp"])  # weights: DTensors on the tp dimension
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again at once by backward: keep them gathered
        fully_shard(block, mesh=mesh["dp"], reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh["dp"])  # embeddings, final norm, (tied) head
    return model


# --8<-- [end:fsdp_tp]


def _mesh_key(g: torch.Tensor) -> Any:
    return g.device_mesh if isinstance(g, DTensor) else None


# --8<-- [start:fsdp_tp_clip]
@torch.no_grad()
def clip_grad_norm_fsdp_tp(model: nn.Module, max_norm: float) -> torch.Tensor:
    r"""Clip the gradients of a model after :func:`apply_fsdp_tp` by their global norm.

    The gradients are ``DTensor`` s on two meshes: block weights on the 2-D mesh, what tensor
    parallelism replicates on ``mesh["dp"]``. Per mesh, ``get_total_norm`` gives a partial norm
    whose ``full_tensor()`` reduces over that mesh (sharded dimensions summed, replicated ones
    counted once); then $\lVert g \rVert^2 = \sum_\text{meshes} \lVert g_M \rVert^2$. Every
    rank computes the same norm and scales its shards by ``max_norm / norm`` (at most 1).

    Args:
        model: The model after :func:`apply_fsdp_tp`, with its gradients.
        max_norm: The largest global norm allowed; ``<= 0`` measures without clipping.

    Returns:
        The global norm before clipping, a plain tensor, the same on every rank.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    by_mesh: dict[Any, list[torch.Tensor]] = {}
    for g in grads:
        by_mesh.setdefault(_mesh_key(g), []).append(g)
    squares = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm([g.float() for g in group])
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # reduce the partial norm over its mesh
        squares.append(norm.float() ** 2)
    total = torch.sqrt(torch.stack(squares).sum())
    if max_norm > 0:
        # a Python number: a DTensor gradient will not multiply by a plain tensor
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0).item()
        for g in grads:
            g.mul_(scale)
    return total


# --8<-- [end:fsdp_tp_clip]
