"""Distributed training (chapter 17): ``torch.distributed`` parallelism applied to a built model
from outside it, as torchtitan does; the model files stay single-device.

* :mod:`groundwork.distributed.world`: the process group from ``torchrun``'s environment (gloo on
  CPU, NCCL on GPUs), with a timeout so a dead rank ends the others with a clear error;
* :mod:`groundwork.distributed.ddp`: data parallelism, torch's ``DistributedDataParallel`` and,
  for teaching, our bucketed all-reduce of gradients;
* :mod:`groundwork.distributed.zero`: ZeRO stages 1 and 2 (Rajbhandari et al. 2020), ours:
  optimizer state sharded, gradients reduce-scattered, parameters all-gathered;
* :mod:`groundwork.distributed.plan`: memory per device and communication per step of each
  strategy (``groundwork model plan``).
"""

from groundwork.distributed.ddp import BucketedAllReduce, apply_ddp
from groundwork.distributed.strategies import (
    DataParallel,
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
    "ParallelConfig",
    "World",
    "ZeroDataParallel",
    "ZeroOptimizer",
    "apply_ddp",
    "build_parallelism",
    "close_world",
    "init_world",
    "launched_by_torchrun",
    "require_torchrun",
]
