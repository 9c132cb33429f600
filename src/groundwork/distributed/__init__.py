"""Distributed training (chapter 17): ``torch.distributed`` parallelism applied to a built model
from outside it, as torchtitan does; the model files stay single-device.

* :mod:`groundwork.distributed.world`: the process group from ``torchrun``'s environment (gloo on
  CPU, NCCL on GPUs), with a timeout so a dead rank ends the others with a clear error;
* :mod:`groundwork.distributed.ddp`: data parallelism, torch's ``DistributedDataParallel`` and,
  for teaching, our bucketed all-reduce of gradients;
* :mod:`groundwork.distributed.zero`: ZeRO stages 1 and 2 (Rajbhandari et al. 2020), ours:
  optimizer state sharded, gradients reduce-scattered, parameters all-gathered;
* :mod:`groundwork.distributed.fsdp`: ZeRO stage 3 with torch's FSDP2 ``fully_shard``, and the
  conversions between its sharded state and the one-process checkpoint;
* :mod:`groundwork.distributed.tensor_parallel`: Megatron tensor parallelism (Shoeybi et al.
  2019), ours with the collectives written out, and via DTensor ``parallelize_module``;
* :mod:`groundwork.distributed.hybrid`: 2-D parallelism, tensor parallel inside a ``tp`` mesh
  dimension and FSDP across the ``dp`` one (torchtitan's recipe);
* :mod:`groundwork.distributed.pipeline`: pipeline parallelism, stages cut from outside the
  model, GPipe and 1F1B schedules with explicit send/recv (ours) and with
  ``torch.distributed.pipelining``;
* :mod:`groundwork.distributed.strategies`: ``--parallel.*`` (:class:`ParallelConfig`) and the
  engine hooks of each strategy;
* :mod:`groundwork.distributed.plan`: memory per device and communication per step of each
  strategy (``groundwork model plan``).
"""

from groundwork.distributed.ddp import BucketedAllReduce, apply_ddp
from groundwork.distributed.fsdp import apply_fsdp
from groundwork.distributed.hybrid import (
    apply_fsdp_tp,
    check_fsdp_tp,
    check_mesh_shape,
    clip_grad_norm_fsdp_tp,
    make_mesh,
)
from groundwork.distributed.pipeline import (
    PipelineStage,
    clip_grad_norm_pipeline,
    peak_in_flight,
    pipeline_step,
    schedule_bubble_fraction,
    schedule_order,
    simulated_bubble_fraction,
    split_stages,
    sync_tied_gradients,
    torch_pipeline_step,
    torch_schedule,
)
from groundwork.distributed.plan import (
    ModelShape,
    ParallelLayout,
    bubble_fraction,
    communication_per_step,
    memory_per_device,
)
from groundwork.distributed.strategies import (
    DataParallel,
    FullyShardedDataParallel,
    HybridParallel,
    ParallelConfig,
    PipelineParallel,
    TensorParallel,
    ZeroDataParallel,
    build_parallelism,
)
from groundwork.distributed.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    apply_tensor_parallel,
    apply_tensor_parallel_dtensor,
    check_tensor_parallel,
    clip_grad_norm_tp,
    copy_to_parallel,
    gather_tensor_parallel_state,
    reduce_from_parallel,
)
from groundwork.distributed.world import (
    World,
    close_world,
    init_world,
    launched_by_torchrun,
    require_torchrun,
)
from groundwork.distributed.zero import ZeroOptimizer

__all__ = [
    "BucketedAllReduce",
    "ColumnParallelLinear",
    "DataParallel",
    "FullyShardedDataParallel",
    "HybridParallel",
    "ModelShape",
    "ParallelConfig",
    "ParallelLayout",
    "PipelineParallel",
    "PipelineStage",
    "RowParallelLinear",
    "TensorParallel",
    "World",
    "ZeroDataParallel",
    "ZeroOptimizer",
    "apply_ddp",
    "apply_fsdp",
    "apply_fsdp_tp",
    "apply_tensor_parallel",
    "apply_tensor_parallel_dtensor",
    "bubble_fraction",
    "build_parallelism",
    "check_fsdp_tp",
    "check_mesh_shape",
    "check_tensor_parallel",
    "clip_grad_norm_fsdp_tp",
    "clip_grad_norm_pipeline",
    "clip_grad_norm_tp",
    "close_world",
    "communication_per_step",
    "copy_to_parallel",
    "gather_tensor_parallel_state",
    "init_world",
    "launched_by_torchrun",
    "make_mesh",
    "memory_per_device",
    "peak_in_flight",
    "pipeline_step",
    "reduce_from_parallel",
    "require_torchrun",
    "schedule_bubble_fraction",
    "schedule_order",
    "simulated_bubble_fraction",
    "split_stages",
    "sync_tied_gradients",
    "torch_pipeline_step",
    "torch_schedule",
]
