r"""ZeRO stages 1 and 2 (Rajbhandari et al. 2020, "ZeRO: Memory optimizations toward training
trillion parameter models"), written out: the optimizer's state is sharded over the
data-parallel ranks instead of replicated.

Data parallelism keeps on every rank the parameters, the gradients and the optimizer state — for
AdamW two moments per parameter, the largest of the three. Yet each rank takes the *same* step,
so the work of the step can be split: rank $r$ owns a contiguous $1/N$ of the flattened
parameters and keeps the moments of that slice only.

* **Stage 1** (optimizer state sharded): all-reduce the gradient as data parallelism does; each
  rank steps its slice with its moments; an **all-gather** puts the updated slices together on
  every rank.
* **Stage 2** (+ gradients sharded): a rank needs the mean gradient of its slice only. As soon
  as backward has produced a parameter's gradient, each piece of it is **reduced** to the rank
  that owns that piece (together, these reduces are a reduce-scatter: every rank receives the
  sum over ranks of its own slice), added to the rank's gradient slice, and the full gradient is
  freed at once — so no rank ever holds the whole gradient, only the one being produced. With
  gradient accumulation this happens every micro-batch (the gradient is never kept whole between
  micro-batches: that is stage 2's memory saving). A reduce-scatter followed by an all-gather
  moves as many bytes as one all-reduce — a ring all-reduce *is* the two — so stages 1 and 2 save
  memory at no extra communication per micro-batch.
* Stage 3 (+ parameters sharded) is FSDP: parameters are gathered layer by layer when needed
  (torch's ``fully_shard``).

:class:`ZeroOptimizer` wraps any ``torch.optim`` optimizer: each parameter group is flattened,
padded to a multiple of the world size and split; the rank's slice becomes one tensor the inner
optimizer steps. Because AdamW is elementwise, the result equals the unsharded optimizer up to
float rounding, which the tests check against unsharded AdamW and torch's
``ZeroRedundancyOptimizer``. :meth:`ZeroOptimizer.full_state_dict` gathers the state into the
unsharded optimizer's format, so a checkpoint written at one world size loads at any other.
Chapter 17.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from groundwork.errors import ConfigError


def _all_gather(output: torch.Tensor, shard: torch.Tensor, group: Any) -> None:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(output, shard, group=group)


class _FlatGroup:
    """One parameter group flattened, padded to ``world * shard`` elements, and this rank's
    slice ``[rank * shard, (rank + 1) * shard)`` as the tensor the inner optimizer steps."""

    def __init__(self, params: list[nn.Parameter], rank: int, world: int) -> None:
        self.params = params
        self.numel = sum(p.numel() for p in params)
        self.shard_size = -(-self.numel // world)  # ceil
        self.start = rank * self.shard_size
        full = self.flatten([p.detach() for p in params], world)
        self.shard = nn.Parameter(full[self.start : self.start + self.shard_size].clone())
        self.grad_sum = torch.zeros_like(self.shard.detach())  # stage 2: reduced so far
        self.offsets = dict(zip(map(id, params), _offsets(params), strict=True))

    def flatten(self, tensors: Sequence[torch.Tensor], world: int) -> torch.Tensor:
        pad = world * self.shard_size - self.numel
        flat = [t.reshape(-1) for t in tensors]
        if pad:
            flat.append(tensors[0].new_zeros(pad))
        return torch.cat(flat)

    def unflatten_into(self, full: torch.Tensor, targets: Sequence[torch.Tensor]) -> None:
        offset = 0
        for t in targets:
            t.copy_(full[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


# --8<-- [start:zero]
class ZeroOptimizer:
    """ZeRO stage 1 or 2 over ``optimizer_class`` (e.g. ``torch.optim.AdamW``).

    Args:
        param_groups: Parameters, or groups as for ``torch.optim`` (dicts with ``params`` and
            per-group options, e.g. :func:`groundwork.train.optim.parameter_groups`).
        optimizer_class: The optimizer each rank runs on its slice.
        stage: 1 (optimizer state sharded) or 2 (gradients too).
        group: The data-parallel process group (default: all ranks).
        **defaults: Options for ``optimizer_class`` (``lr``, ``betas``, ...).

    Each step: ``loss.backward()``, then :meth:`reduce_gradients` (each rank's slice of the
    mean gradient), optionally :meth:`clip_grad_norm`, then :meth:`step` (the inner optimizer
    steps the slice; an all-gather updates every parameter on every rank).
    """

    def __init__(
        self,
        param_groups: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        optimizer_class: Callable[..., torch.optim.Optimizer],
        *,
        stage: Literal[1, 2] = 1,
        group: dist.ProcessGroup | None = None,
        **defaults: Any,
    ) -> None:
        if stage not in (1, 2):
            raise ConfigError(
                f"ZeroOptimizer implements stages 1 and 2, not {stage!r}; stage 3 (parameters "
                "sharded too) is FSDP: --parallel.fsdp"
            )
        self.stage, self.group = stage, group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        given = list(param_groups)
        groups: list[dict[str, Any]] = (
            [g for g in given if isinstance(g, dict)]
            if given and isinstance(given[0], dict)
            else [{"params": given}]
        )
        self.flat: list[_FlatGroup] = []
        inner_groups = []
        for g in groups:
            params = [p for p in g["params"] if p.requires_grad]
            for p in params:  # every replica starts from rank 0's weights
                dist.broadcast(p.data, src=dist.get_global_rank(group, 0) if group else 0)
            flat = _FlatGroup(params, self.rank, self.world)
            self.flat.append(flat)
            options = {k: v for k, v in g.items() if k not in ("params", "names")}
            inner_groups.append({"params": [flat.shard], **options})
        self.optimizer = optimizer_class(inner_groups, **defaults)
        # stage 2: gradients are reduced to their owners during backward, in one fixed order
        # on every rank (collectives are matched by order): the reverse of the parameters'
        self.order = [(f, p) for f in self.flat for p in f.params][::-1]
        self.ready: set[int] = set()
        self.next_reduce = 0
        if stage == 2:
            for _, p in self.order:
                p.register_post_accumulate_grad_hook(self._grad_ready)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's groups (set ``lr`` here, as on any optimizer)."""
        return self.optimizer.param_groups

    def _grad_ready(self, p: torch.Tensor) -> None:
        """Stage 2, in backward: reduce every gradient that is ready, in the fixed order."""
        self.ready.add(id(p))
        order = self.order
        while self.next_reduce < len(order) and id(order[self.next_reduce][1]) in self.ready:
            self._reduce_to_owners(*order[self.next_reduce])
            self.next_reduce += 1

    def _reduce_to_owners(self, f: _FlatGroup, p: nn.Parameter) -> None:
        """Reduce each rank's piece of ``p``'s gradient to that rank, which adds it to its
        slice; then free the gradient."""
        offset, n, size = f.offsets[id(p)], p.numel(), f.shard_size
        grad = p.new_zeros(n) if p.grad is None else p.grad.detach().reshape(-1)
        for owner in range(offset // size, min((offset + n - 1) // size + 1, self.world)):
            lo, hi = max(offset, owner * size), min(offset + n, (owner + 1) * size)
            piece = grad[lo - offset : hi - offset].clone()
            dist.reduce(piece, dst=self._global(owner), group=self.group)
            if owner == self.rank:
                f.grad_sum[lo - f.start : hi - f.start] += piece
        p.grad = None

    def end_micro_batch(self) -> None:
        """Stage 2, after a micro-batch's backward: reduce the gradients not reduced yet (of
        parameters that got none) and start the order again for the next micro-batch."""
        if self.stage == 2:
            while self.next_reduce < len(self.order):
                self._reduce_to_owners(*self.order[self.next_reduce])
                self.next_reduce += 1
            self.ready, self.next_reduce = set(), 0

    def reduce_gradients(self) -> None:
        """Give each rank's slice the mean over ranks of its gradient: an all-reduce of the
        whole gradient (stage 1), or the sums reduced during backward (stage 2)."""
        self.end_micro_batch()
        for f in self.flat:
            if self.stage == 1:
                grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in f.params]
                full = f.flatten(grads, self.world)
                dist.all_reduce(full, group=self.group)
                shard = full[f.start : f.start + f.shard_size].clone()
            else:
                shard, f.grad_sum = f.grad_sum, torch.zeros_like(f.grad_sum)
            f.shard.grad = shard.div_(self.world)

    def _global(self, rank: int) -> int:
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the mean gradient to global L2 norm ``max_norm`` (after
        :meth:`reduce_gradients`): the squared norms of the slices, summed over ranks."""
        shards = [f.shard.grad for f in self.flat if f.shard.grad is not None]
        squares = sum((g.float().pow(2).sum() for g in shards), torch.zeros(()))
        assert isinstance(squares, torch.Tensor)
        dist.all_reduce(squares, group=self.group)
        norm = squares.sqrt()
        if max_norm > 0:
            scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            for g in shards:
                g.mul_(scale)
        return norm

    @torch.no_grad()
    def step(self) -> None:
        """Step this rank's slice, then all-gather the slices into every parameter."""
        self.optimizer.step()
        for f in self.flat:
            full = f.shard.new_empty(self.world * f.shard_size)
            _all_gather(full, f.shard.detach(), self.group)
            f.unflatten_into(full, [p.data for p in f.params])

    # --8<-- [end:zero]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for f in self.flat:
            f.shard.grad = None
            f.grad_sum.zero_()
            for p in f.params:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def full_state_dict(self) -> dict[str, Any]:
        """The state in the unsharded optimizer's format (parameters numbered in group order),
        gathered on every rank: what ``optimizer_class`` over the same groups would hold."""
        state: dict[int, dict[str, Any]] = {}
        groups = []
        index = 0
        inner = self.optimizer.state_dict()
        for f, g in zip(self.flat, inner["param_groups"], strict=True):
            shard_state = inner["state"].get(g["params"][0], {})
            gathered: dict[str, torch.Tensor] = {}
            for key, value in shard_state.items():
                if isinstance(value, torch.Tensor) and value.shape == f.shard.shape:
                    full = value.new_empty(self.world * f.shard_size)
                    _all_gather(full, value.contiguous(), self.group)
                    gathered[key] = full
            ids = list(range(index, index + len(f.params)))
            for pid, p, offset in zip(ids, f.params, _offsets(f.params), strict=True):
                if not shard_state:
                    continue
                state[pid] = {
                    key: (
                        gathered[key][offset : offset + p.numel()].view_as(p).clone()
                        if key in gathered
                        else _own(value)
                    )
                    for key, value in shard_state.items()
                }
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
            index += len(f.params)
        return {"state": state, "param_groups": groups}

    def state_dict(self) -> dict[str, Any]:
        """:meth:`full_state_dict`: what a checkpoint holds (every rank must call it)."""
        return self.full_state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """:meth:`load_full_state_dict`."""
        self.load_full_state_dict(state_dict)

    def load_full_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an unsharded optimizer's state (e.g. from a world-size-1 checkpoint), keeping
        this rank's slice."""
        inner = self.optimizer.state_dict()
        new_state: dict[int, dict[str, Any]] = {}
        for i, (f, g, saved) in enumerate(
            zip(self.flat, inner["param_groups"], state_dict["param_groups"], strict=True)
        ):
            if len(saved["params"]) != len(f.params):
                raise ConfigError(
                    f"the optimizer state's group {i} has {len(saved['params'])} parameters, "
                    f"this model's {len(f.params)}: it was saved for another model"
                )
            per_param = [state_dict["state"].get(pid) for pid in saved["params"]]
            if all(s is None for s in per_param):
                continue
            first = next(s for s in per_param if s is not None)
            entry: dict[str, Any] = {}
            for key, value in first.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0:
                    parts = [s[key] for s in per_param if s is not None]
                    full = f.flatten(parts, self.world)
                    entry[key] = full[f.start : f.start + f.shard_size].clone()
                else:
                    entry[key] = value
            new_state[g["params"][0]] = entry
        self.optimizer.load_state_dict({"state": new_state, "param_groups": inner["param_groups"]})


def _own(value: Any) -> Any:
    """A copy of a tensor (each parameter's ``step`` its own, as the unsharded optimizer has
    it), any other value as it is."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def _offsets(params: Sequence[torch.Tensor]) -> list[int]:
    out, offset = [], 0
    for p in params:
        out.append(offset)
        offset += p.numel()
    return out
