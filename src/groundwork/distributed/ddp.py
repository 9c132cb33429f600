r"""Data parallelism: every rank holds the whole model, sees its own slice of the batch, and
the gradients are averaged over the ranks before each optimizer step.

With $N$ ranks each computing $g_r = \nabla L_r$ on its shard of the batch (equal shards), the
mean $\bar g = \frac1N \sum_r g_r$ is the gradient of the loss on the whole batch, so every rank
takes the same step and the replicas stay identical: data parallelism is the single-process
run, split. The averaging is one all-reduce of the gradient (ring all-reduce: each rank sends
and receives $2\frac{N-1}{N}\Psi$ elements for $\Psi$ parameters, whatever $N$).

Doing it after backward wastes the time backward takes; PyTorch's ``DistributedDataParallel``
(Li et al. 2020, "PyTorch Distributed") groups the parameters into **buckets** of about 25 MB in
reverse order — the order backward produces their gradients — and starts a bucket's all-reduce
as soon as its last gradient is ready, so communication overlaps the rest of backward.
:class:`BucketedAllReduce` is that algorithm in a page, for teaching, tested equal to
``DistributedDataParallel`` (:func:`apply_ddp`, which is what training uses). Chapter 17.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from groundwork.distributed.world import World

BUCKET_CAP_MB = 25.0


def apply_ddp(model: nn.Module, world: World) -> nn.Module:
    """Wrap ``model`` in torch's ``DistributedDataParallel`` (gradients averaged in buckets
    during backward); a one-process world returns ``model`` itself. The wrapper's ``.module``
    is the model: save that, not the wrapper."""
    if not world.distributed:
        return model
    model.to(world.device)
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=BUCKET_CAP_MB)


@dataclass
class _Bucket:
    params: list[nn.Parameter]
    pending: int = 0
    work: dist.Work | None = None
    flat: torch.Tensor | None = None
    ready: set[int] = field(default_factory=set)


# --8<-- [start:bucketed]
class BucketedAllReduce:
    """Average the gradients of ``model`` over the ranks of ``group`` as backward produces them.

    Parameters are packed, in reverse order, into buckets of at most ``bucket_cap_mb``; when
    the last gradient of a bucket has been accumulated the bucket is flattened and its
    all-reduce started asynchronously. Buckets are launched in order on every rank (a bucket
    that is ready before an earlier one waits for it), because collectives are matched by
    order. :meth:`finish` launches what is left (a parameter that got no gradient counts as
    zero), waits, divides by the world size and writes the means back into ``.grad``.

    Usage: ``sync = BucketedAllReduce(model)``; each step ``loss.backward(); sync.finish();
    optimizer.step()``; with gradient accumulation, run the first micro-batches' backward
    inside ``with sync.no_sync():``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        group: dist.ProcessGroup | None = None,
        bucket_cap_mb: float = BUCKET_CAP_MB,
    ) -> None:
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.enabled = True
        params = [p for p in model.parameters() if p.requires_grad]
        self.buckets: list[_Bucket] = []
        cap = bucket_cap_mb * 2**20
        current: list[nn.Parameter] = []
        size = 0
        for p in reversed(params):  # backward produces the last layers' gradients first
            if current and size + p.numel() * p.element_size() > cap:
                self.buckets.append(_Bucket(current))
                current, size = [], 0
            current.append(p)
            size += p.numel() * p.element_size()
        if current:
            self.buckets.append(_Bucket(current))
        self.bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b.params}
        self.next_launch = 0
        self.hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]

    def _grad_ready(self, p: torch.Tensor) -> None:
        if not self.enabled:
            return
        bucket = self.buckets[self.bucket_of[id(p)]]
        bucket.ready.add(id(p))
        while self.next_launch < len(self.buckets) and len(
            self.buckets[self.next_launch].ready
        ) == len(self.buckets[self.next_launch].params):
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1

    def _launch(self, bucket: _Bucket) -> None:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in bucket.params]
        bucket.flat = torch.cat([g.reshape(-1) for g in grads])
        bucket.work = dist.all_reduce(bucket.flat, group=self.group, async_op=True)

    def finish(self) -> None:
        """Wait for every bucket's all-reduce and put the mean gradients into ``.grad``."""
        while self.next_launch < len(self.buckets):  # parameters that got no gradient
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1
        for bucket in self.buckets:
            assert bucket.work is not None and bucket.flat is not None
            bucket.work.wait()
            bucket.flat.div_(self.world_size)
            offset = 0
            for p in bucket.params:
                n = p.numel()
                mean = bucket.flat[offset : offset + n].view_as(p)
                if p.grad is None:
                    p.grad = mean.clone()
                else:
                    p.grad.copy_(mean)
                offset += n
            bucket.work, bucket.flat, bucket.ready = None, None, set()
        self.next_launch = 0

    # --8<-- [end:bucketed]

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally (the first micro-batches of a step)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def remove(self) -> None:
        """Take the hooks off the model."""
        for hook in self.hooks:
            hook.remove()
