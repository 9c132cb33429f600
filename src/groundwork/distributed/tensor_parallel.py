r"""Tensor parallelism (Shoeybi et al. 2019, "Megatron-LM: Training multi-billion parameter
language models using model parallelism"): every weight matrix of a block is split over the
ranks, and all ranks work on the same batch.

The MLP $Z = \mathrm{GeLU}(XA)\,B$ splits with one communication. Cut $A$ by **columns**,
$A = [A_1, \dots, A_N]$: rank $i$ computes $Y_i = \mathrm{GeLU}(XA_i)$ alone, because GeLU acts
elementwise (SwiGLU's gate and up matrices are cut alike). Cut $B$ by **rows**: then
$Z = \sum_i Y_i B_i$, the sum of the ranks' partial outputs, one **all-reduce**. Attention
splits the same way along its heads, which are independent: rank $i$ owns $H/N$ query heads and
$H_\mathrm{kv}/N$ key/value heads (the query heads of a GQA group and their shared key/value
head land on the same rank), its q/k/v projections are column slices and the output projection
a row slice. Two operators mark the borders (the paper's $f$ and $g$):

* $f$: identity forward, all-reduce backward. $X$ feeds every rank's slice, so
  $\partial L/\partial X = \sum_i \partial L_i/\partial X$ is summed over the ranks;
* $g$: all-reduce forward, identity backward. $Z$ is replicated, so its gradient already is.

A block thus costs two all-reduces of the $(B, T, d)$ activations forward and two backward, and
holds $1/N$ of the block's weights. Everything outside the blocks stays **replicated** here:
embeddings, norms and the output head (simplest correct version; a vocabulary-parallel embedding
and cross-entropy is the next step), and so do mixture-of-experts layers. Replicated parameters
get the same gradient on every rank (their inputs and output gradients are the same), so no
gradient sync is needed; the global gradient norm sums the squares of sharded gradients over the
ranks and counts replicated ones once (:func:`clip_grad_norm_tp`).

:func:`apply_tensor_parallel` is ours, with the collectives written out
(:class:`ColumnParallelLinear`, :class:`RowParallelLinear`); :func:`apply_tensor_parallel_dtensor`
is the same plan through torch's ``parallelize_module`` (``ColwiseParallel`` /
``RowwiseParallel``, weights as ``DTensor`` s); both equal the one-process model (tests). Both
build the parallel model from the one-process model's weights and leave the model code
single-device. Not done: sequence parallelism, vocabulary parallelism, KV-head replication when
$N > H_\mathrm{kv}$, a KV cache for parallel decoding; dropout needs the same seed on every rank.
Chapter 17.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from groundwork.errors import ConfigError, DistributedError
from groundwork.nn import GELUMLP, Attention, SwiGLU

try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # torch 2.4
    from torch.distributed._tensor import DTensor, Shard


@dataclass(frozen=True)
class Sharding:
    """How a parameter is cut: along ``dim``, each of the consecutive ``parts`` of that
    dimension (e.g. GPT's fused q, k, v) split evenly over the ranks."""

    dim: int
    parts: tuple[int, ...]


def shard(full: torch.Tensor, sharding: Sharding, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s slice of ``full``: its ``1/world`` of every part, concatenated.

    >>> shard(torch.arange(8), Sharding(0, (4, 4)), 1, 2).tolist()  # q = 0..3, k = 4..7
    [2, 3, 6, 7]
    """
    parts = full.split(list(sharding.parts), sharding.dim)
    return torch.cat([p.chunk(world, sharding.dim)[rank] for p in parts], sharding.dim)


def unshard(shards: Sequence[torch.Tensor], sharding: Sharding) -> torch.Tensor:
    """Inverse of :func:`shard`: the full tensor from every rank's slice, in rank order."""
    world = len(shards)
    local = [p // world for p in sharding.parts]
    pieces = [s.split(local, sharding.dim) for s in shards]  # [rank][part]
    return torch.cat([pieces[r][j] for j in range(len(local)) for r in range(world)], sharding.dim)


def _all_gather(t: torch.Tensor, group: dist.ProcessGroup | None) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return out


# --8<-- [start:tp_functions]
class _CopyToParallel(torch.autograd.Function):
    """$f$: identity forward; backward sums the input's gradient over the ranks."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)  # dL/dX = sum_i dL_i/dX
        return grad, None


class _ReduceFromParallel(torch.autograd.Function):
    """$g$: all-reduce forward (sum of the partial outputs); identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)  # Z = sum_i Y_i B_i
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _GatherFromParallel(torch.autograd.Function):
    """All-gather the ranks' output slices into the full output; backward keeps this rank's
    slice of the (replicated) gradient."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, sharding: Sharding, group: dist.ProcessGroup | None
    ) -> torch.Tensor:
        ctx.sharding, ctx.group = sharding, group
        return unshard(_all_gather(x, group), sharding)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rank, world = dist.get_rank(ctx.group), dist.get_world_size(ctx.group)
        return shard(grad, ctx.sharding, rank, world), None, None  # (..., out / N)


def copy_to_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The paper's $f$ (enter a parallel region)."""
    return _CopyToParallel.apply(x, group)


def reduce_from_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The paper's $g$ (leave a parallel region by summing the partial outputs)."""
    return _ReduceFromParallel.apply(x, group)


# --8<-- [end:tp_functions]


# --8<-- [start:tp_layers]
class ColumnParallelLinear(nn.Module):
    r"""This rank's output features of ``linear``: $Y_i = XA_i^\top + b_i$, $A_i$ a slice of
    the rows of the ``(out, in)`` weight (the columns of the paper's $A$).

    Args:
        linear: The one-process layer to take the slice from (it is not modified).
        group: The tensor-parallel process group (default: the world).
        parts: Consecutive parts of the output, each split separately (GPT's fused q, k, v:
            ``(q_size, kv_size, kv_size)``, so each rank gets whole heads of each); default one.
        gather_output: All-gather the full output (for a replicated layer after it).
        copy_input: Apply $f$ to the input; off when a sublayer applies it once for several
            column-parallel layers that read the same input (q, k and v).
    """

    def __init__(
        self,
        linear: nn.Linear,
        *,
        group: dist.ProcessGroup | None = None,
        parts: Sequence[int] | None = None,
        gather_output: bool = False,
        copy_input: bool = True,
    ) -> None:
        super().__init__()
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        self.group, self.gather_output, self.copy_input = group, gather_output, copy_input
        self.sharding = Sharding(0, tuple(parts or (linear.out_features,)))
        self.in_features, self.out_features = linear.in_features, linear.out_features // world
        w = shard(linear.weight.detach(), self.sharding, rank, world)  # (out / N, in)
        self.weight = nn.Parameter(w.clone(), requires_grad=linear.weight.requires_grad)
        self.bias: nn.Parameter | None = None
        if linear.bias is not None:
            b = shard(linear.bias.detach(), self.sharding, rank, world)  # (out / N,)
            self.bias = nn.Parameter(b.clone(), requires_grad=linear.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` -> ``(..., out / N)``, or ``(..., out)`` with ``gather_output``."""
        if self.copy_input:
            x = copy_to_parallel(x, self.group)
        y = F.linear(x, self.weight, self.bias)  # (..., out / N)
        if self.gather_output:
            y = _GatherFromParallel.apply(y, Sharding(-1, self.sharding.parts), self.group)
        return y


class RowParallelLinear(nn.Module):
    r"""This rank's input features of ``linear``: $Z = \sum_i Y_i B_i^\top + b$, the input
    $Y_i$ already split (a column-parallel layer's output), the bias added once after $g$.

    Args:
        linear: The one-process layer to take the slice from (it is not modified).
        group: The tensor-parallel process group (default: the world).
    """

    def __init__(self, linear: nn.Linear, *, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        self.group = group
        self.sharding = Sharding(1, (linear.in_features,))
        self.in_features, self.out_features = linear.in_features // world, linear.out_features
        w = shard(linear.weight.detach(), self.sharding, rank, world)  # (out, in / N)
        self.weight = nn.Parameter(w.clone(), requires_grad=linear.weight.requires_grad)
        self.bias: nn.Parameter | None = None  # replicated
        if linear.bias is not None:
            b = linear.bias.detach().clone()
            self.bias = nn.Parameter(b, requires_grad=linear.bias.requires_grad)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., in / N)`` -> ``(..., out)``, the same on every rank."""
        z = reduce_from_parallel(F.linear(y, self.weight), self.group)  # (..., out)
        return z if self.bias is None else z + self.bias


# --8<-- [end:tp_layers]


def sharded_parameters(model: nn.Module) -> dict[str, Sharding]:
    """The parameters of ``model`` our tensor parallelism split, by name, and how."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, ColumnParallelLinear | RowParallelLinear):
            out[f"{name}.weight"] = m.sharding
            if isinstance(m, ColumnParallelLinear) and m.bias is not None:
                out[f"{name}.bias"] = m.sharding
    return out


def check_tensor_parallel(model: nn.Module, degree: int) -> None:
    """Raise :class:`ConfigError` unless ``degree`` ranks can split ``model``'s attention and
    MLPs: it must divide every ``n_heads``, ``n_kv_heads`` and MLP hidden size, so each rank
    holds whole heads (and whole GQA groups)."""
    sizes: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            if m.q_norm is not None:
                raise ConfigError(
                    f"{name} normalises the whole query/key projection (qk-norm): its RMS needs "
                    "every head, which tensor parallelism does not split; use data parallelism"
                )
            sizes[f"{name}.n_heads"], sizes[f"{name}.n_kv_heads"] = m.n_heads, m.n_kv_heads
        elif isinstance(m, GELUMLP | SwiGLU):
            sizes[f"{name}.d_ff"] = m.down_proj.in_features
        parallel = isinstance(m, ColumnParallelLinear | RowParallelLinear)
        if parallel or isinstance(getattr(m, "weight", None), DTensor):
            raise ConfigError(f"the model is already sharded ({name}); apply it to a fresh one")
    if not sizes:
        raise ConfigError(
            f"{type(model).__name__} has no attention or MLP module of groundwork.nn to split"
        )
    bad = {k: v for k, v in sizes.items() if v % degree}
    if bad:
        works = [
            d for d in range(1, min(sizes.values()) + 1) if all(v % d == 0 for v in sizes.values())
        ]
        first, size = next(iter(bad.items()))
        raise ConfigError(
            f"tensor-parallel degree {degree} does not divide {first} = {size} ({len(bad)} "
            f"size(s) in all): every rank must hold whole heads and an equal share of the MLP; "
            f"degrees that work for this model: {', '.join(map(str, works))}"
        )


def _require_process_group(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            f"{what} needs a process group: launch with `torchrun --nproc-per-node N` and call "
            "groundwork.distributed.init_world() before it (every rank runs the same model)"
        )


def _replace(module: nn.Module, name: str, value: Any) -> None:
    """Set ``module.name`` to ``value``, which the model's annotations need not foresee (a
    parallel layer where an ``nn.Linear`` was)."""
    setattr(module, name, value)


def _copy_input_hook(group: dist.ProcessGroup | None) -> Any:
    """A forward pre-hook applying $f$ once to a sublayer's input (``x``, first argument)."""

    def hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            return (copy_to_parallel(args[0], group), *args[1:]), kwargs
        return args, {**kwargs, "x": copy_to_parallel(kwargs["x"], group)}

    return hook


# --8<-- [start:apply_tp]
def apply_tensor_parallel(model: nn.Module, group: dist.ProcessGroup | None = None) -> nn.Module:
    """Split ``model``'s attention and MLPs over the ranks of ``group`` (default: the world), in
    place, Megatron-style; returns ``model``. Every rank must pass the same one-process weights.

    Each :class:`~groundwork.nn.Attention` keeps ``n_heads / N`` query and ``n_kv_heads / N``
    key/value heads: q, k, v (or the fused ``qkv_proj``, cut part by part) become
    :class:`ColumnParallelLinear`, ``o_proj`` a :class:`RowParallelLinear`; GELU and SwiGLU MLPs
    likewise (``gate_proj``/``up_proj`` column, ``down_proj`` row). $f$ is applied once per
    sublayer (a forward pre-hook), as in the paper's figure 3. Parameter names do not change;
    :func:`gather_tensor_parallel_state` gathers the one-process checkpoint.

    Raises:
        DistributedError: No process group (not under ``torchrun``, or ``init_world`` not called).
        ConfigError: The degree does not divide the head counts or MLP sizes.
    """
    _require_process_group("apply_tensor_parallel")
    check_tensor_parallel(model, dist.get_world_size(group))
    world = dist.get_world_size(group)
    for m in list(model.modules()):
        if isinstance(m, Attention):
            q_size, kv_size = m.n_heads * m.d_head, m.n_kv_heads * m.d_head
            if m.fused_qkv:
                parts = (q_size, kv_size, kv_size)  # cut q, k and v each into whole heads
                layer = ColumnParallelLinear(m.qkv_proj, group=group, parts=parts, copy_input=False)
                _replace(m, "qkv_proj", layer)
            else:
                for name in ("q_proj", "k_proj", "v_proj"):
                    layer = ColumnParallelLinear(getattr(m, name), group=group, copy_input=False)
                    _replace(m, name, layer)
            _replace(m, "o_proj", RowParallelLinear(m.o_proj, group=group))
            m.n_heads, m.n_kv_heads = m.n_heads // world, m.n_kv_heads // world  # local heads
        elif isinstance(m, GELUMLP | SwiGLU):
            for name in ("gate_proj", "up_proj"):
                if hasattr(m, name):
                    layer = ColumnParallelLinear(getattr(m, name), group=group, copy_input=False)
                    _replace(m, name, layer)
            _replace(m, "down_proj", RowParallelLinear(m.down_proj, group=group))
        else:
            continue
        m.register_forward_pre_hook(_copy_input_hook(group), with_kwargs=True)  # f
    return model


# --8<-- [end:apply_tp]


def _split_fused_qkv(attn: Attention) -> None:
    """Replace GPT's fused ``qkv_proj`` by ``q_proj``, ``k_proj``, ``v_proj`` holding its parts
    (a contiguous DTensor shard of the fused matrix would cut across q, k and v)."""
    fused = attn.qkv_proj
    sizes = [attn.n_heads * attn.d_head] + [attn.n_kv_heads * attn.d_head] * 2
    weights = fused.weight.detach().split(sizes)
    biases = fused.bias.detach().split(sizes) if fused.bias is not None else [None] * 3
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
        layer = nn.Linear(
            w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b)
        _replace(attn, name, layer)
    del attn.qkv_proj
    attn.fused_qkv = False
    _replace(attn, "split_from_fused_qkv", True)  # to be fused back in the gathered state


# --8<-- [start:tp_dtensor]
def apply_tensor_parallel_dtensor(model: nn.Module, mesh: Any = None) -> nn.Module:
    """The plan of :func:`apply_tensor_parallel` through torch's ``parallelize_module``: q, k,
    v, gate and up ``ColwiseParallel`` (weight ``Shard(0)``), o and down ``RowwiseParallel``
    (``Shard(1)``); each module's output is a local tensor, so attention runs on local head
    counts. GPT's fused ``qkv_proj`` is first split into ``q_proj``, ``k_proj``, ``v_proj``
    (parameter names change; :func:`gather_tensor_parallel_state` fuses them back). In place;
    returns ``model``.

    Args:
        model: A GPT- or Llama-family model with the one-process weights on every rank.
        mesh: A 1-D ``DeviceMesh``; default: the whole world on the model's device type.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    _require_process_group("apply_tensor_parallel_dtensor")
    if mesh is None:
        device = next(model.parameters()).device.type
        mesh = init_device_mesh(device, (dist.get_world_size(),))
    world = mesh.size()
    check_tensor_parallel(model, world)
    for m in list(model.modules()):
        if isinstance(m, Attention):
            if m.fused_qkv:
                _split_fused_qkv(m)
            plan: dict[str, Any] = {n: ColwiseParallel() for n in ("q_proj", "k_proj", "v_proj")}
            parallelize_module(m, mesh, {**plan, "o_proj": RowwiseParallel()})
            m.n_heads, m.n_kv_heads = m.n_heads // world, m.n_kv_heads // world  # local heads
        elif isinstance(m, GELUMLP | SwiGLU):
            plan = {n: ColwiseParallel() for n in ("gate_proj", "up_proj") if hasattr(m, n)}
            parallelize_module(m, mesh, {**plan, "down_proj": RowwiseParallel()})
    return model


# --8<-- [end:tp_dtensor]


# --8<-- [start:tp_clip]
@torch.no_grad()
def clip_grad_norm_tp(
    model: nn.Module, max_norm: float, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    r"""Clip the gradients of a tensor-parallel ``model`` (ours or DTensor) by their global norm.

    $\lVert g \rVert^2 = \sum_{\text{sharded}} \sum_i \lVert g_p^{(i)} \rVert^2
    + \sum_{\text{replicated}} \lVert g_p \rVert^2$: each rank adds the squares of its shards,
    one all-reduce sums them over the ranks, and a replicated gradient (the same on every rank)
    is counted once. Then as :func:`groundwork.train.optim.clip_grad_norm`.

    Args:
        model: The model after :func:`apply_tensor_parallel` or
            :func:`apply_tensor_parallel_dtensor`, with its gradients.
        max_norm: The largest global norm allowed; ``<= 0`` measures without clipping.
        group: The tensor-parallel group (the DTensor mesh's); default: the world.

    Returns:
        The global norm before clipping, the same on every rank.
    """
    layout = sharded_parameters(model)
    ours = {id(p) for name, p in model.named_parameters() if name in layout}
    sharded: list[torch.Tensor] = []
    replicated: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for p in model.parameters():
        if p.grad is None:
            continue
        g = p.grad
        grads.append(g)
        if isinstance(g, DTensor):
            is_shard = any(isinstance(pl, Shard) for pl in g.placements)
            (sharded if is_shard else replicated).append(g.to_local())
        else:
            (sharded if id(p) in ours else replicated).append(g)
    if not grads:
        return torch.tensor(0.0)
    device = (sharded + replicated)[0].device
    squares = [torch.linalg.vector_norm(g.float()) ** 2 for g in sharded]
    local = torch.stack(squares).sum() if squares else torch.zeros((), device=device)
    dist.all_reduce(local, group=group)  # sum over the ranks' shards
    rest = [torch.linalg.vector_norm(g.float()) ** 2 for g in replicated]
    norm = torch.sqrt(local + (torch.stack(rest).sum() if rest else 0.0))
    if max_norm > 0:
        # a Python number: a DTensor gradient will not multiply by a plain tensor
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0).item()
        for g in grads:
            g.mul_(scale)
    return norm


# --8<-- [end:tp_clip]


def gather_tensor_parallel_state(
    model: nn.Module, group: dist.ProcessGroup | None = None
) -> dict[str, Any]:
    """The one-process state dict of a tensor-parallel ``model`` (collective: every rank must
    call it; every rank gets it): our shards all-gathered and put together, DTensors made full,
    GPT's ``q_proj``/``k_proj``/``v_proj`` fused back into ``qkv_proj``."""
    layout = sharded_parameters(model)
    out: dict[str, Any] = {}
    for name, t in model.state_dict().items():
        if isinstance(t, DTensor):
            t = t.full_tensor()
        elif name in layout:
            t = unshard(_all_gather(t.detach(), group), layout[name])
        out[name] = t
    for prefix, m in model.named_modules():
        if getattr(m, "split_from_fused_qkv", False):
            for kind in ("weight", "bias"):
                keys = [f"{prefix}.{p}.{kind}" for p in ("q_proj", "k_proj", "v_proj")]
                if keys[0] in out:
                    out[f"{prefix}.qkv_proj.{kind}"] = torch.cat([out.pop(k) for k in keys])
    return out
