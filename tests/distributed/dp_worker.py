"""Run by ``torchrun --nproc-per-node 2`` from tests/distributed/test_data_parallel.py: trains a
tiny GPT and Llama for a few steps with each data-parallel strategy and saves, on rank 0, the
losses, the final weights and the optimizer state to ``OUT/<strategy>-<arch>.pt``.

Usage: ``torchrun ... dp_worker.py OUT SCENARIO...`` where a scenario is a strategy name, or
``hang`` (rank 1 stops answering) or ``die`` (rank 1 exits): rank 0 must fail with a clear error
within the timeout.
"""

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from dist_common import build, learnable_batches, loss_of
from torch.distributed.optim import ZeroRedundancyOptimizer

from groundwork.distributed.ddp import BucketedAllReduce, apply_ddp
from groundwork.distributed.world import collective_errors, init_world
from groundwork.distributed.zero import ZeroOptimizer
from groundwork.errors import DistributedError
from groundwork.train.optim import build_adamw, clip_grad_norm, parameter_groups

STEPS, ROWS, T = 10, 4, 16
LR, WD, CLIP = 1e-3, 0.1, 0.5


def batches(vocab: int) -> torch.Tensor:
    """(STEPS, ROWS, T + 1) learnable token ids, the same on every rank."""
    return learnable_batches(vocab, STEPS, ROWS, T)


def groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "names"} for g in parameter_groups(model, WD)]


def run(strategy: str, arch: str, rank: int, world: int) -> dict[str, Any]:
    model = build(arch)
    data = batches(model.config.vocab_size)
    losses = []
    forward: Any = model
    sync = None
    if strategy in ("ddp", "zero-torch"):
        forward = apply_ddp(model, init_world("cpu"))
    if strategy == "ddp-ours":
        sync = BucketedAllReduce(model, bucket_cap_mb=0.02)  # several buckets
    if strategy in ("zero1", "zero2"):
        opt: Any = ZeroOptimizer(
            groups(model), torch.optim.AdamW, stage=int(strategy[-1]), lr=LR, betas=(0.9, 0.95)
        )
    elif strategy == "zero-torch":
        opt = ZeroRedundancyOptimizer(
            groups(model), optimizer_class=torch.optim.AdamW, lr=LR, betas=(0.9, 0.95)
        )
    else:
        opt = build_adamw(model, lr=LR, weight_decay=WD)
    for step in range(STEPS):
        mine = data[step, rank::world]  # (ROWS / world, T + 1)
        if strategy == "ddp-ours":  # two micro-batches of one row: accumulate, then sync
            assert sync is not None
            with sync.no_sync():
                first = loss_of(model, mine[:1]) / 2
                first.backward()
            second = loss_of(model, mine[1:]) / 2
            second.backward()
            sync.finish()
            loss = (first + second).detach()
        else:
            loss = loss_of(forward, mine)
            loss.backward()
        if isinstance(opt, ZeroOptimizer):
            opt.reduce_gradients()
            opt.clip_grad_norm(CLIP)
        else:
            clip_grad_norm(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / world)
    state = opt.full_state_dict() if isinstance(opt, ZeroOptimizer) else None
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt.consolidate_state_dict(to=0)
        state = opt.state_dict() if rank == 0 else None
    return {"losses": losses, "weights": model.state_dict(), "optimizer": state}


def main() -> None:
    out, scenarios = Path(sys.argv[1]), sys.argv[2:]
    if scenarios in (["hang"], ["die"]):
        world = init_world("cpu", timeout_s=3.0)
        if world.rank == 1 and scenarios == ["hang"]:
            time.sleep(30)  # stops answering; torchrun ends it when rank 0 fails
            return
        if world.rank == 1:
            os._exit(3)  # dies without a word
        start = time.perf_counter()
        try:
            with collective_errors(world.rank):
                dist.all_reduce(torch.ones(1))
        except DistributedError as err:
            (out / f"{scenarios[0]}.txt").write_text(f"{time.perf_counter() - start:.1f}\n{err}")
            sys.exit(1)
        return
    world = init_world("cpu")
    for scenario in scenarios:
        strategy, arch = scenario.split(":")
        result = run(strategy, arch, world.rank, world.world_size)
        if world.is_main:
            torch.save(result, out / f"{strategy}-{arch}.pt")
    dist.barrier()


if __name__ == "__main__":
    main()
