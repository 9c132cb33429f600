"""Run by ``torchrun --nproc-per-node 2`` from tests/distributed/test_pipeline.py: trains a tiny
GPT and Llama cut into two pipeline stages (one per process) for a few AdamW steps, with our
schedules or torch's, and saves on rank 0 what every stage did, to
``OUT/<impl>-<schedule>-<arch>.pt``: a list, by stage, of the first step's gradients (tied ones
summed), the losses (last stage), the final weights, and the first step's order of operations
and peak of micro-batches held.

Usage: ``torchrun ... pp_worker.py OUT IMPL:SCHEDULE:ARCH...`` with IMPL ``ours`` or ``torch``.
"""

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from dist_common import build, learnable_batches

from groundwork.distributed.pipeline import (
    clip_grad_norm_pipeline,
    pipeline_step,
    split_stages,
    sync_tied_gradients,
    torch_pipeline_step,
    torch_schedule,
)
from groundwork.distributed.world import init_world
from groundwork.train.optim import build_adamw

STEPS, ROWS, T, MICROBATCHES = 10, 8, 16, 4
LR, WD, CLIP = 1e-3, 0.1, 0.5


def batches(vocab: int) -> torch.Tensor:
    """(STEPS, ROWS, T + 1) learnable token ids, the same on every rank."""
    return learnable_batches(vocab, STEPS, ROWS, T)


def run(impl: str, schedule: Any, arch: str, rank: int, world: int) -> dict[str, Any]:
    model = build(arch)
    data = batches(model.config.vocab_size)
    stage = split_stages(model, world)[rank]
    del model  # the other stage's weights go with it
    opt = build_adamw(stage, lr=LR, weight_decay=WD)
    runner = None
    if impl == "torch":
        micro_batch = (ROWS // MICROBATCHES, T)
        runner = torch_schedule(stage, MICROBATCHES, schedule, micro_batch=micro_batch)
    losses, grads, ops, peak = [], {}, [], 0
    for step in range(STEPS):
        inputs, targets = data[step, :, :-1], data[step, :, 1:]  # (ROWS, T) each
        if runner is not None:
            loss = torch_pipeline_step(runner, stage, inputs, targets)
        else:
            result = pipeline_step(
                stage, inputs, targets, microbatches=MICROBATCHES, schedule=schedule
            )
            loss = result.loss
            if step == 0:
                ops, peak = result.ops, result.peak_in_flight
        sync_tied_gradients(stage)
        if step == 0:
            grads = {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None}
        clip_grad_norm_pipeline(stage, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if loss is not None:
            losses.append(loss.item())
    return {
        "stage": rank,
        "tied": stage.tied,
        "grads": grads,
        "losses": losses,
        "weights": stage.state_dict(),
        "ops": ops,
        "peak": peak,
    }


def main() -> None:
    out, scenarios = Path(sys.argv[1]), sys.argv[2:]
    world = init_world("cpu")
    for scenario in scenarios:
        impl, schedule, arch = scenario.split(":")
        result = run(impl, schedule, arch, world.rank, world.world_size)
        gathered: list[Any] = [None] * world.world_size
        dist.gather_object(result, gathered if world.is_main else None, dst=0)
        if world.is_main:
            torch.save(gathered, out / f"{impl}-{schedule}-{arch}.pt")
    dist.barrier()


if __name__ == "__main__":
    main()
