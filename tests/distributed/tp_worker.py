"""Run by ``torchrun --nproc-per-node 2`` from tests/distributed/test_tensor_parallel.py: splits a
tiny GPT and Llama with our tensor parallelism and with torch's DTensor plan, and saves, on every
rank, the logits, the gradients and the losses and gathered weights of a short training run to
``OUT/<scenario>-rank<r>.pt``.

Usage: ``torchrun ... tp_worker.py OUT SCENARIO...`` where a scenario is ``ours:<arch>``,
``dtensor:<arch>``, ``layers`` (the two parallel linear layers alone) or ``errors`` (a degree
that does not divide the heads).
"""

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_common import build, learnable_batches, loss_of
from torch import nn
from torch.distributed.tensor import DTensor

from groundwork.distributed.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    apply_tensor_parallel,
    apply_tensor_parallel_dtensor,
    clip_grad_norm_tp,
    gather_tensor_parallel_state,
    sharded_parameters,
)
from groundwork.distributed.world import collective_errors, init_world
from groundwork.errors import ConfigError
from groundwork.train.optim import build_adamw

STEPS, ROWS, T = 10, 4, 16
LR, WD, CLIP = 1e-3, 0.1, 0.5


def batches(vocab: int) -> torch.Tensor:
    """(STEPS, ROWS, T + 1) learnable token ids, the same on every rank."""
    return learnable_batches(vocab, STEPS, ROWS, T)


def parallel(kind: str, arch: str) -> Any:
    model = build(arch)
    return apply_tensor_parallel(model) if kind == "ours" else apply_tensor_parallel_dtensor(model)


def full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gradients in the one-process layout: the gathered state of the model holding them."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.grad)  # type: ignore[arg-type]
        grads = {n: t.clone() for n, t in gather_tensor_parallel_state(model).items()}  # not views
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return grads


def run(kind: str, arch: str) -> dict[str, Any]:
    model = parallel(kind, arch)
    data = batches(model.config.vocab_size)
    rows = data[0]
    logits = model(rows[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).backward()
    local = {  # this rank's shards (a DTensor's local part: the mesh is not for pickling)
        n: (p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).detach().clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    grads = full_grads(model)
    model = parallel(kind, arch)
    opt = build_adamw(model, lr=LR, weight_decay=WD)
    losses, norms = [], []
    for step in range(STEPS):
        loss = loss_of(model, data[step])
        loss.backward()
        norms.append(clip_grad_norm_tp(model, CLIP).item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {
        "logits": logits.detach(),
        "local_grads": local,
        "layout": sharded_parameters(model),
        "grads": grads,
        "losses": losses,
        "norms": norms,
        "weights": gather_tensor_parallel_state(model),
    }


def layers() -> dict[str, Any]:
    """The parallel linear layers alone: a column layer whose output (two parts) is gathered,
    a row layer after a column layer; inputs and weights the same on every rank."""
    torch.manual_seed(2)
    x = torch.randn(3, 5, 8, requires_grad=True)
    first, second = nn.Linear(8, 12), nn.Linear(12, 6)
    column = ColumnParallelLinear(first, parts=(4, 8), gather_output=True)
    gathered = column(x)  # (3, 5, 12)
    gathered.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    hidden = ColumnParallelLinear(first)(x2)  # (3, 5, 6)
    out = RowParallelLinear(second)(torch.tanh(hidden))  # (3, 5, 6)
    out.square().sum().backward()
    return {
        "gathered": gathered.detach(),
        "x_grad": x.grad,
        "column_grad": column.weight.grad,
        "row_out": out.detach(),
        "row_x_grad": x2.grad,
    }


def errors() -> dict[str, Any]:
    try:
        apply_tensor_parallel(build("gpt", n_heads=1))
    except ConfigError as err:
        return {"message": str(err)}
    return {"message": None}


def main() -> None:
    out, scenarios = Path(sys.argv[1]), sys.argv[2:]
    world = init_world("cpu", timeout_s=60)
    with collective_errors(world.rank):
        for scenario in scenarios:
            if scenario == "layers":
                result = layers()
            elif scenario == "errors":
                result = errors()
            else:
                kind, arch = scenario.split(":")
                result = run(kind, arch)
            torch.save(result, out / f"{scenario.replace(':', '-')}-rank{world.rank}.pt")
        dist.barrier()


if __name__ == "__main__":
    main()
