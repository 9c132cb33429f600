r"""Pipeline parallelism: the model's blocks cut into $p$ consecutive **stages**, one per process;
a batch is cut into $m$ **micro-batches** that flow through the stages like cars down an
assembly line, activations passed forward and their gradients backward between neighbours.

**Stages.** Stage $s$ of $p$ holds blocks $[sL/p, (s+1)L/p)$ of $L$; the first also the
embeddings (and GPT's learned positions), the last also the final norm, the output head and the
loss. :func:`split_stages` cuts a built GPT or Llama from outside: each :class:`PipelineStage`
holds the model's own submodules under the model's own names (so its ``state_dict`` is a slice
of the model's), and runs them as the model's ``forward`` does (a small per-family adapter
that calls the model's embedding, blocks with their mask and RoPE angles, norm and head).

**Gradients equal one process.** Stage $s$ computes $y_s = f_s(x_s)$ and sends $y_s$ on; the
backward pass receives $\partial L/\partial y_s$ from stage $s+1$, and autograd gives
$\partial L/\partial x_s = J_{f_s}^\top\, \partial L/\partial y_s$ (sent back) and the
gradients of the stage's weights. The step's loss is the mean over the micro-batches,
$L = \frac1m \sum_i L_i$, so each micro-batch's loss is scaled by $1/m$ and the gradients
accumulate to $\nabla L$: the whole batch's, as in one process.

**Tied embeddings** (GPT-2 and SmolLM2 read tokens in and write them out with one matrix $W$):
the first stage uses $W$ to embed, the last to compute logits, so each holds a copy and sees
only its part of $\partial L/\partial W = g_\text{embed} + g_\text{head}$. As Megatron-LM does
(its "embedding group"), :func:`sync_tied_gradients` sums the two parts between the first and
last stage; both copies then take the same optimizer step from the same value and stay equal.

**Schedules.** A schedule is the order of each stage's forwards ``F i`` and backwards ``B i``
(:func:`schedule_order`); :func:`pipeline_step` runs it with point-to-point messages between
neighbours: activations $(b, T, h)$ forward, their gradients back. Sends are asynchronous and
receives wait, so a rank only ever waits for data a neighbour's order promises to produce.

* **GPipe** (Huang et al. 2019, "GPipe: Efficient Training of Giant Neural Networks using
  Pipeline Parallelism"): all $m$ forwards, then all $m$ backwards. A stage holds the
  activations of all $m$ micro-batches at once.
* **1F1B** (Narayanan et al. 2019, "PipeDream: Generalized Pipeline Parallelism for DNN
  Training"; its synchronous form PipeDream-Flush, Narayanan et al. 2021, "Memory-Efficient
  Pipeline-Parallel DNN Training" and "Efficient Large-Scale Language Model Training on GPU
  Clusters Using Megatron-LM"): stage $s$ runs $p - s - 1$ warm-up forwards, then alternates one
  forward and one backward, then drains the remaining backwards. A backward frees its
  micro-batch, so stage $s$ holds at most $p - s$ of them (:func:`peak_in_flight`).

Both idle for the same share of a step, the **bubble** $(p-1)/(m+p-1)$
(:func:`~groundwork.distributed.plan.bubble_fraction`): the pipeline fills and drains once per
step. :func:`simulated_bubble_fraction` derives it from the schedules themselves.

:func:`torch_schedule` runs the same stages with ``torch.distributed.pipelining``
(``PipelineStage``, ``ScheduleGPipe``, ``Schedule1F1B``; torch >= 2.4; it runs on CPU and gloo); the
tests check ours equal to it (bit for bit) and both equal to one process.

Not covered: the loss is ``loss_fn`` of the logits only (a mixture of experts' router losses
are not added); with dropout each stage draws its own masks, so only dropout-free runs equal
one process exactly; one stage per process (no interleaved virtual stages, no combination
with data parallelism here). This module is long because the stages, the two schedules, what
they cost on paper and torch's version are one section of the chapter, read in this order.
Chapter 17.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from groundwork.checks import positive_int
from groundwork.distributed.plan import SCHEDULES, Schedule, bubble_fraction
from groundwork.distributed.world import collective_errors
from groundwork.errors import ConfigError, DistributedError
from groundwork.models.decoder import packed_documents_of
from groundwork.models.gpt import GPT
from groundwork.models.llama import Llama
from groundwork.nn import build_attention_mask

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits ``(B, T, V)`` against targets ``(B, T)``."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B*T, V) vs (B*T,)


def _module(stage: nn.Module, path: str) -> nn.Module:
    return stage.get_submodule(path)


def _mask(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """The additive mask the model's forward builds (``None``: plain causal)."""
    T = x.shape[1]
    documents = packed_documents_of(positions, None, None, x.shape[0])
    return build_attention_mask(None, T, T, documents=documents, dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class _Family:
    """Where a family keeps its parts, and how its ``forward`` runs them (read off
    ``GPT.hidden_states`` and ``LlamaModel.forward``, without a KV cache or padding)."""

    embedding: str
    """The token embedding (the matrix a tied head shares)."""
    first: tuple[str, ...]
    """Modules of the first stage only."""
    blocks: str
    """The ``ModuleList`` of blocks."""
    last: tuple[str, ...]
    """Modules of the last stage only."""
    every: tuple[str, ...]
    """Modules every stage needs (Llama's RoPE frequencies)."""
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    block_kwargs: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, Any]]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor]


# --8<-- [start:families]
GPT_FAMILY = _Family(
    embedding="wte",
    first=("wte", "wpe", "drop"),
    blocks="blocks",
    last=("ln_f", "lm_head"),
    every=(),
    # x = dropout(token embeddings + position embeddings)
    embed=lambda st, idx, pos: _module(st, "drop")(
        _module(st, "wte")(idx) + _module(st, "wpe")(pos)
    ),
    block_kwargs=lambda st, x, pos: dict(mask=_mask(x, pos), kv_cache=None, start_pos=0),
    head=lambda st, x: _module(st, "lm_head")(_module(st, "ln_f")(x)),
)
LLAMA_FAMILY = _Family(
    embedding="model.embed_tokens",
    first=("model.embed_tokens",),
    blocks="model.layers",
    last=("model.norm", "lm_head"),
    every=("model.rotary",),
    embed=lambda st, idx, pos: _module(st, "model.embed_tokens")(idx),
    # every stage computes the RoPE angles cos, sin (1, T, d_head) itself: nothing to send
    block_kwargs=lambda st, x, pos: dict(
        rope=_module(st, "model.rotary")(pos, dtype=x.dtype),
        mask=_mask(x, pos),
        kv_cache=None,
        start_pos=0,
    ),
    head=lambda st, x: _module(st, "lm_head")(_module(st, "model.norm")(x)),
)
# --8<-- [end:families]


def _family_of(model: nn.Module) -> _Family:
    if isinstance(model, GPT):
        return GPT_FAMILY
    if isinstance(model, Llama):
        return LLAMA_FAMILY
    raise ConfigError(
        f"pipeline stages are written for the GPT and Llama families, not {type(model).__name__}"
    )


def _config_of(model: nn.Module) -> Any:
    return model.config


def _pruned(module: nn.Module, keep: set[str], prefix: str) -> nn.ModuleDict:
    """The children of ``module`` on the way to the kept paths, under their own names."""
    out = nn.ModuleDict()
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if path in keep:
            out[name] = child
        elif any(k.startswith(path + ".") for k in keep):
            out[name] = _pruned(child, keep, path)
    return out


# --8<-- [start:stage]
class PipelineStage(nn.Module):
    """Stage ``stage_index`` of ``n_stages``: a slice of a GPT or Llama under the model's own
    parameter names (``blocks.1.attn.qkv_proj.weight``), sharing the model's tensors.

    :meth:`forward` maps token ids ``(B, T)`` (first stage) or hidden states ``(B, T, d_model)``
    to hidden states ``(B, T, d_model)``, or logits ``(B, T, vocab_size)`` (last stage).
    Build with :func:`split_stages`.
    """

    def __init__(self, model: nn.Module, stage_index: int, n_stages: int) -> None:
        super().__init__()
        family, config = _family_of(model), _config_of(model)
        per_stage = config.n_layers // n_stages
        self.stage_index, self.n_stages, self.family = stage_index, n_stages, family
        self.d_model: int = config.d_model
        self.block_range = range(stage_index * per_stage, (stage_index + 1) * per_stage)
        keep = set(family.every) | {f"{family.blocks}.{i}" for i in self.block_range}
        if self.is_first:
            keep |= set(family.first)
        if self.is_last:
            keep |= set(family.last)
            head = model.get_submodule("lm_head").weight
            if head is model.get_submodule(family.embedding).weight:
                keep.add(family.embedding)  # the tied matrix (Megatron's copy on the last stage)
        for name, child in _pruned(model, keep, "").items():
            self.add_module(name, child)  # in the model's order: the model's names
        self.tied: tuple[str, ...] = ()
        """Names of the parameters shared with another stage (set by :func:`split_stages`)."""

    @property
    def is_first(self) -> bool:
        return self.stage_index == 0

    @property
    def is_last(self) -> bool:
        return self.stage_index == self.n_stages - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)[None]  # (1, T)
        if self.is_first:
            x = self.family.embed(self, x, positions)  # (B, T) ids -> (B, T, d_model)
        kwargs = self.family.block_kwargs(self, x, positions)
        for block in _module(self, self.family.blocks).children():
            x = block(x, **kwargs)  # (B, T, d_model)
        if self.is_last:
            x = self.family.head(self, x)  # (B, T, vocab_size)
        return x


# --8<-- [end:stage]


def split_stages(model: nn.Module, n_stages: int) -> list[PipelineStage]:
    """Cut a GPT or Llama into ``n_stages`` stages of equally many consecutive blocks.

    Running the stages one after the other is the model's forward: ``stages[1](stages[0](ids))
    == model(ids)``. Each process keeps ``stages[rank]`` and drops the model and the other
    stages, which frees their weights (at scale one would build only its own stage, on the meta
    device). Parameters used by two stages (a tied embedding and head) are listed in each
    stage's ``tied``.

    Raises:
        ConfigError: ``n_stages`` does not divide the number of blocks (or exceeds it), or the
            model is not a GPT or Llama.
    """
    positive_int("n_stages", n_stages)
    _family_of(model)
    n_layers = _config_of(model).n_layers
    if n_layers % n_stages:
        divisors = [d for d in range(1, n_layers + 1) if n_layers % d == 0]
        raise ConfigError(
            f"{n_stages} pipeline stages do not divide the model's {n_layers} blocks: each "
            f"stage takes as many consecutive blocks; choose a number of stages among {divisors}"
        )
    stages = [PipelineStage(model, s, n_stages) for s in range(n_stages)]
    if n_stages > 1:
        first = {id(p): name for name, p in stages[0].named_parameters()}
        shared = [name for name, p in stages[-1].named_parameters() if id(p) in first]
        stages[-1].tied = tuple(shared)
        stages[0].tied = tuple(first[id(stages[-1].get_parameter(n))] for n in shared)
    return stages


# --8<-- [start:schedules]
def schedule_order(schedule: Schedule, n_stages: int, stage: int, microbatches: int) -> list[str]:
    """The order in which stage ``stage`` runs the forwards ``F i`` and backwards ``B i`` of
    ``microbatches`` micro-batches.

    >>> schedule_order("gpipe", 2, 0, 3)
    ['F0', 'F1', 'F2', 'B0', 'B1', 'B2']
    >>> schedule_order("1f1b", 2, 0, 3)  # warm up, one forward one backward, cool down
    ['F0', 'F1', 'B0', 'F2', 'B1', 'B2']
    >>> schedule_order("1f1b", 2, 1, 3)
    ['F0', 'B0', 'F1', 'B1', 'F2', 'B2']

    Raises:
        ConfigError: an unknown schedule, a stage out of range, or 1F1B with fewer
            micro-batches than stages.
    """
    p, m = positive_int("n_stages", n_stages), positive_int("microbatches", microbatches)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= stage < p:
        raise ConfigError(f"stage must be in 0..{p - 1}, got {stage!r}")
    if schedule == "gpipe":  # all forwards, then all backwards
        return [f"F{i}" for i in range(m)] + [f"B{i}" for i in range(m)]
    if m < p:
        raise ConfigError(
            f"1F1B needs at least as many micro-batches as stages, got {m} for {p} stages: the "
            f"first stage's warm-up alone takes {p - 1} forwards; use microbatches >= {p} (more "
            "also shrink the bubble), or the gpipe schedule"
        )
    warmup = p - stage - 1  # forwards in flight before this stage's first backward can arrive
    ops = [f"F{i}" for i in range(warmup)]
    for i in range(m - warmup):  # steady state: one forward, one backward
        ops += [f"F{warmup + i}", f"B{i}"]
    return ops + [f"B{i}" for i in range(m - warmup, m)]  # cool-down


# --8<-- [end:schedules]


def peak_in_flight(schedule: Schedule, n_stages: int, stage: int, microbatches: int) -> int:
    """The most micro-batches whose activations stage ``stage`` holds at once (forwarded, not
    yet backwarded): ``m`` with GPipe, ``p - s`` with 1F1B.

    >>> [peak_in_flight("1f1b", 4, s, 8) for s in range(4)]
    [4, 3, 2, 1]
    """
    held = peak = 0
    for op in schedule_order(schedule, n_stages, stage, microbatches):
        held += 1 if op[0] == "F" else -1
        peak = max(peak, held)
    return peak


def schedule_bubble_fraction(schedule: Schedule, n_stages: int, microbatches: int) -> float:
    """The share of a step a stage idles, $(p-1)/(m+p-1)$, the same for both schedules
    (:func:`~groundwork.distributed.plan.bubble_fraction`).

    >>> schedule_bubble_fraction("1f1b", 2, 4)
    0.2
    """
    schedule_order(schedule, n_stages, 0, microbatches)  # the same checks
    return bubble_fraction(n_stages, microbatches)


def simulated_bubble_fraction(
    schedule: Schedule,
    n_stages: int,
    microbatches: int,
    *,
    t_forward: float = 1.0,
    t_backward: float = 2.0,
) -> float:
    """The idle share of a step, found by playing the schedules of all stages on paper: an op
    starts when its stage is free and its input has arrived (a forward needs the previous
    stage's, a backward the next stage's); then ``1 - busy / (p * makespan)``.

    >>> round(simulated_bubble_fraction("gpipe", 4, 8), 6) == round(bubble_fraction(4, 8), 6)
    True
    """
    p, m = n_stages, microbatches
    orders = [schedule_order(schedule, p, s, m) for s in range(p)]
    finished: dict[tuple[str, int], float] = {}  # (op, stage) -> time
    free, position = [0.0] * p, [0] * p
    while any(position[s] < len(orders[s]) for s in range(p)):
        progress = False
        for s in range(p):
            while position[s] < len(orders[s]):
                op = orders[s][position[s]]
                forward = op[0] == "F"
                neighbour = s - 1 if forward else s + 1  # whose output this op needs
                needs = (op, neighbour) if 0 <= neighbour < p else None
                if needs is not None and needs not in finished:
                    break
                start = max(free[s], finished[needs] if needs else 0.0)
                free[s] = finished[(op, s)] = start + (t_forward if forward else t_backward)
                position[s] += 1
                progress = True
        if not progress:
            raise ConfigError(f"the {schedule} schedule deadlocks")
    return 1 - m * (t_forward + t_backward) / max(free)


def _check_group(stage: PipelineStage, group: dist.ProcessGroup | None) -> int:
    """This process's global rank, after checking that it runs stage ``rank`` of the group."""
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            f"pipeline parallelism runs each of the {stage.n_stages} stages in its own process "
            "and passes activations between them, but there is no process group: launch with "
            f"`torchrun --nproc-per-node {stage.n_stages}` and call init_world() first"
        )
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    if size != stage.n_stages or rank != stage.stage_index:
        raise ConfigError(
            f"process {rank} of {size} runs stage {stage.stage_index} of {stage.n_stages}: a "
            "pipeline runs one stage per process, stages[rank] on rank `rank`"
        )
    return dist.get_rank()


def _global(group: dist.ProcessGroup | None, group_rank: int) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


def _check_batch(batch: int, microbatches: int) -> None:
    if batch % microbatches:
        raise ConfigError(
            f"{microbatches} micro-batches do not divide a batch of {batch} rows: the loss is "
            "the mean of equal micro-batches' means; choose a divisor of the batch"
        )


@dataclass
class PipelineStepResult:
    """What one rank did in a step of :func:`pipeline_step`."""

    loss: torch.Tensor | None
    """The step's loss, the mean over micro-batches (last stage; ``None`` elsewhere)."""
    ops: list[str]
    """The forwards ``F i`` and backwards ``B i`` in the order run."""
    peak_in_flight: int
    """The most micro-batches whose activations were held at once."""


# --8<-- [start:pipeline_step]
def pipeline_step(
    stage: PipelineStage,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    microbatches: int,
    schedule: Schedule = "1f1b",
    loss_fn: LossFn = causal_lm_loss,
    group: dist.ProcessGroup | None = None,
) -> PipelineStepResult:
    """Run this rank's part of a pipelined forward and backward of one batch, accumulating the
    gradients of $\\frac1m \\sum_i L_i$ into the stage's parameters (then:
    :func:`sync_tied_gradients`, :func:`clip_grad_norm_pipeline`, the optimizer step).

    Args:
        stage: ``stages[rank]`` of :func:`split_stages`.
        inputs: Token ids ``(B, T)`` (read by the first stage; the others take the shapes).
        targets: Next-token ids ``(B, T)`` (read by the last stage).
        microbatches: ``m``, dividing ``B``.
        schedule: ``gpipe`` or ``1f1b``.
        loss_fn: ``(logits, targets) -> mean loss`` of a micro-batch.
        group: The pipeline's process group (default: all ranks), rank ``s`` running stage ``s``.

    Raises:
        ConfigError: ``microbatches`` does not divide the batch, 1F1B with ``m < p``, or this
            rank does not run this stage.
        DistributedError: no process group, or a neighbour died.
    """
    s, m = stage.stage_index, microbatches
    ops = schedule_order(schedule, stage.n_stages, s, m)
    _check_batch(inputs.shape[0], m)
    rank = _check_group(stage, group)
    previous, following = _global(group, s - 1), _global(group, s + 1)
    xs, ts = inputs.chunk(m), targets.chunk(m)
    param = next(stage.parameters())
    shape = (inputs.shape[0] // m, inputs.shape[1], stage.d_model)  # (b, T, d_model)
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # micro-batch -> (input, output)
    sends: list[tuple[dist.Work | None, torch.Tensor]] = []
    losses, peak = [], 0

    def receive(source: int) -> torch.Tensor:
        buffer = torch.empty(shape, dtype=param.dtype, device=param.device)
        dist.recv(buffer, src=source, group=group)
        return buffer

    def send(tensor: torch.Tensor, destination: int) -> None:  # asynchronous: never blocks
        tensor = tensor.detach().contiguous()
        sends.append((dist.isend(tensor, dst=destination, group=group), tensor))

    with collective_errors(rank):
        for op in ops:
            i = int(op[1:])
            if op[0] == "F":
                x = xs[i] if stage.is_first else receive(previous).requires_grad_()
                y = stage(x)
                if stage.is_last:
                    y = loss_fn(y, ts[i]) / m  # the step's loss is the mean over micro-batches
                    losses.append(y.detach())
                else:
                    send(y, following)  # activations (b, T, d_model) forward
                held[i] = (x, y)
                peak = max(peak, len(held))
            else:
                x, y = held.pop(i)  # the backward frees micro-batch i's activations
                if stage.is_last:
                    y.backward()
                else:
                    y.backward(receive(following))  # dL/dy from the next stage
                if not stage.is_first:
                    assert x.grad is not None
                    send(x.grad, previous)  # dL/dx to the previous stage
        for work, _ in sends:
            if work is not None:
                work.wait()
    loss = torch.stack(losses).sum() if stage.is_last else None
    return PipelineStepResult(loss, ops, peak)


# --8<-- [end:pipeline_step]


# --8<-- [start:tied]
def sync_tied_gradients(stage: PipelineStage, group: dist.ProcessGroup | None = None) -> None:
    """Sum the gradient of each tied weight over its copies on the first and last stage (an
    all-reduce over those two ranks, written as an exchange), so each copy gets
    $g_\\text{embed} + g_\\text{head}$. Every rank may call it; the others return at once."""
    if not stage.tied or stage.n_stages == 1:
        return
    rank = _check_group(stage, group)
    peer = _global(group, stage.n_stages - 1 if stage.is_first else 0)
    with collective_errors(rank):
        for name in stage.tied:
            p = stage.get_parameter(name)
            mine = torch.zeros_like(p) if p.grad is None else p.grad.contiguous()
            theirs = torch.empty_like(mine)
            work = dist.isend(mine, dst=peer, group=group)
            dist.recv(theirs, src=peer, group=group)
            if work is not None:
                work.wait()
            p.grad = mine + theirs  # the same sum, bit for bit, on both ranks


# --8<-- [end:tied]


def clip_grad_norm_pipeline(
    stage: PipelineStage, max_norm: float, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Clip the whole model's gradient to L2 norm ``max_norm``: the squared norms of the
    stages' gradients summed over the pipeline (a tied weight counted once, on the first
    stage), after :func:`sync_tied_gradients`. Returns the norm before clipping."""
    counted = [
        p.grad
        for name, p in stage.named_parameters()
        if p.grad is not None and not (stage.is_last and name in stage.tied)
    ]
    squares = sum((g.float().pow(2).sum() for g in counted), torch.zeros(()))
    assert isinstance(squares, torch.Tensor)
    if stage.n_stages > 1:
        with collective_errors(_check_group(stage, group)):
            dist.all_reduce(squares, group=group)
    norm = squares.sqrt()
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in stage.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
    return norm


# --8<-- [start:torch_schedule]
def torch_schedule(
    stage: PipelineStage,
    microbatches: int,
    schedule: Schedule = "1f1b",
    *,
    micro_batch: tuple[int, int] = (1, 1),
    loss_fn: LossFn = causal_lm_loss,
    group: dist.ProcessGroup | None = None,
) -> Any:
    """The same stage run by torch: ``torch.distributed.pipelining``'s ``PipelineStage`` and
    ``ScheduleGPipe`` or ``Schedule1F1B``; step it with :func:`torch_pipeline_step`.

    ``micro_batch`` (rows, tokens) is needed only by torch < 2.6, which takes the stages' input
    shapes up front (later versions exchange them on the first step); that path is untested.

    Raises:
        DistributedError: no process group, or torch older than 2.4.
    """
    schedule_order(schedule, stage.n_stages, stage.stage_index, microbatches)
    _check_group(stage, group)
    try:
        from torch.distributed import pipelining
    except ImportError as err:  # pragma: no cover - torch < 2.4
        raise DistributedError("torch.distributed.pipelining needs torch >= 2.4") from err
    param = next(stage.parameters())
    options: dict[str, Any] = {"group": group}
    needs_shapes = inspect.signature(pipelining.PipelineStage).parameters["input_args"].default
    if needs_shapes is inspect.Parameter.empty:  # pragma: no cover - torch 2.4, 2.5
        b, T = micro_batch
        first = torch.zeros(b, T, dtype=torch.long, device=param.device)  # token ids
        hidden = torch.zeros(b, T, stage.d_model, dtype=param.dtype, device=param.device)
        options["input_args"] = first if stage.is_first else hidden
    torch_stage = pipelining.PipelineStage(
        stage, stage.stage_index, stage.n_stages, param.device, **options
    )
    cls = pipelining.ScheduleGPipe if schedule == "gpipe" else pipelining.Schedule1F1B
    scaled: dict[str, Any] = {}
    if "scale_grads" in inspect.signature(cls).parameters:
        scaled["scale_grads"] = False  # we scale each micro-batch's loss by 1/m, as ours does
    return cls(
        torch_stage, microbatches, loss_fn=lambda y, t: loss_fn(y, t) / microbatches, **scaled
    )


def torch_pipeline_step(
    runner: Any, stage: PipelineStage, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor | None:
    """One step of :func:`torch_schedule`'s schedule: the mean loss on the last stage."""
    losses: list[torch.Tensor] = []
    args = (inputs,) if stage.is_first else ()
    kwargs: dict[str, Any] = {"target": targets, "losses": losses} if stage.is_last else {}
    with collective_errors(dist.get_rank()):
        runner.step(*args, **kwargs)
    return torch.stack([loss.detach() for loss in losses]).sum() if stage.is_last else None


# --8<-- [end:torch_schedule]
