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
* :mod:`groundwork.distributed.strategies`: ``--parallel.*`` (:class:`ParallelConfig`) and the
  engine hooks of each strategy;
* :mod:`groundwork.distributed.plan`: memory per device and communication per step of each
  strategy (``groundwork model plan``).
"""

from groundwork.distributed.ddp import BucketedAllReduce, apply_ddp
from groundwork.distributed.fsdp import apply_fsdp
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
    ParallelConfig,
    ZeroDataParallel,
    build_parallelism,
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
    "DataParallel",
    "FullyShardedDataParallel",
    "ModelShape",
    "ParallelConfig",
    "ParallelLayout",
    "World",
    "ZeroDataParallel",
    "ZeroOptimizer",
    "apply_ddp",
    "apply_fsdp",
    "bubble_fraction",
    "build_parallelism",
    "close_world",
    "communication_per_step",
    "init_world",
    "launched_by_torchrun",
    "memory_per_device",
    "require_torchrun",
]
