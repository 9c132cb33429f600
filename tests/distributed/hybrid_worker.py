"""Run by ``torchrun --nproc-per-node 4`` from tests/distributed/test_hybrid.py: trains a tiny
GPT and Llama on a 2 x 2 ``(dp, tp)`` mesh (FSDP2 over dp, DTensor tensor parallelism over tp)
and saves, on every rank, the losses, the clipping norms, the gathered weights and the
parameters' placements to ``OUT/<scenario>-rank<r>.pt``.

Usage: ``torchrun ... hybrid_worker.py OUT SCENARIO...`` where a scenario is an architecture
(``gpt``, ``llama``), ``torch-clip`` (torch's ``clip_grad_norm_`` and ours on one step's
gradients) or
``errors`` (a tp degree that does not divide the heads; a mesh that is not the world).
"""

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from dist_common import build, learnable_batches, loss_of
from torch.distributed.tensor import DTensor

from groundwork.distributed.hybrid import apply_fsdp_tp, clip_grad_norm_fsdp_tp, make_mesh
from groundwork.distributed.tensor_parallel import gather_tensor_parallel_state
from groundwork.distributed.world import collective_errors, init_world
from groundwork.errors import ConfigError
from groundwork.train.optim import build_adamw

DP, TP = 2, 2
STEPS, ROWS, T = 6, 8, 16
LR, WD, CLIP = 1e-3, 0.1, 0.5


def batches(vocab: int) -> torch.Tensor:
    """(STEPS, ROWS, T + 1) learnable token ids, the same on every rank."""
    return learnable_batches(vocab, STEPS, ROWS, T)


def placements(model: torch.nn.Module) -> dict[str, str]:
    """Each parameter's mesh dimensions and placements, e.g. ``('dp', 'tp') (Shard(dim=0), ...)``
    (the mesh itself is not for pickling)."""
    out = {}
    for name, p in model.named_parameters():
        assert isinstance(p, DTensor), name
        out[name] = f"{p.device_mesh.mesh_dim_names} {p.placements}"
    return out


def run(arch: str, mesh: Any) -> dict[str, Any]:
    dp_rank = mesh["dp"].get_local_rank()
    model = apply_fsdp_tp(build(arch), mesh)
    data = batches(model.config.vocab_size)
    opt = build_adamw(model, lr=LR, weight_decay=WD)
    losses, norms = [], []
    for step in range(STEPS):
        loss = loss_of(model, data[step, dp_rank::DP])  # this dp rank's rows, as its tp peers
        loss.backward()
        norms.append(clip_grad_norm_fsdp_tp(model, CLIP).item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = loss.detach().clone()
        dist.all_reduce(total, group=mesh["dp"].get_group())  # the mean over the dp ranks
        losses.append(total.item() / DP)
    return {
        "losses": losses,
        "norms": norms,
        "weights": gather_tensor_parallel_state(model),
        "placements": placements(model),
    }


def torch_clip(mesh: Any) -> dict[str, Any]:
    """torch's ``clip_grad_norm_`` on the first step's gradients (block weights on the 2-D mesh,
    norms and embeddings on ``mesh["dp"]``): its norm, or its error; and ours."""
    model = apply_fsdp_tp(build("llama"), mesh)
    rows = batches(model.config.vocab_size)[0, mesh["dp"].get_local_rank() :: DP]
    loss_of(model, rows).backward()
    try:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        theirs: Any = (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()
    except RuntimeError as err:
        theirs = f"{type(err).__name__}: {str(err)[:300]}"
    return {"torch": theirs, "ours": clip_grad_norm_fsdp_tp(model, 0.0).item()}


def errors(mesh: Any) -> dict[str, Any]:
    messages: list[str | None] = []
    for attempt in (
        lambda: apply_fsdp_tp(build("llama", n_kv_heads=1), mesh),
        lambda: make_mesh(3, 2),
    ):
        try:
            attempt()
        except ConfigError as err:
            messages.append(str(err))
        else:
            messages.append(None)
    return {"messages": messages}


def main() -> None:
    out, scenarios = Path(sys.argv[1]), sys.argv[2:]
    world = init_world("cpu", timeout_s=60)
    with collective_errors(world.rank):
        mesh = make_mesh(DP, TP)
        for scenario in scenarios:
            if scenario == "errors":
                result = errors(mesh)
            elif scenario == "torch-clip":
                result = torch_clip(mesh)
            else:
                result = run(scenario, mesh)
            torch.save(result, out / f"{scenario}-rank{world.rank}.pt")
        dist.barrier()


if __name__ == "__main__":
    main()
