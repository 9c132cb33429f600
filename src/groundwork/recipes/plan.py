"""`groundwork model plan`: memory per GPU and communication per step of the ways to train a
model on several GPUs (DDP, ZeRO-1/2/3, FSDP, tensor and pipeline parallelism), worked out on
paper by :mod:`groundwork.distributed.plan`. Chapter 17."""

from typing import TYPE_CHECKING, Any, Literal

from groundwork.checks import positive_int
from groundwork.errors import ConfigError

if TYPE_CHECKING:  # the planner is imported when a command runs, not when the CLI starts
    from groundwork.distributed.plan import ModelShape, ParallelLayout, PrecisionName


def format_bytes(n: float) -> str:
    """``n`` bytes with a decimal unit (GB = 1e9 bytes), ``-`` for none.

    >>> format_bytes(31.40625e9), format_bytes(0)
    ('31.41 GB', '-')
    """
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B" if n > 0 else "-"


def plan_table(
    model: Any,
    layouts: "dict[str, ParallelLayout]",
    precision: "PrecisionName" = "autocast",
    *,
    memory_gb: float = 80.0,
) -> str:
    """A Markdown table comparing ``layouts`` (those of
    :func:`~groundwork.distributed.plan.layouts_for`, say) on ``model``, a config or a
    :class:`~groundwork.distributed.plan.ModelShape`: memory per device and whether it fits in
    ``memory_gb``, bytes each device sends per step, and the pipeline bubble. Layouts that do
    not fit the model are listed below the table, with the reason.
    """
    from groundwork.distributed.plan import (
        as_shape,
        bubble_fraction,
        communication_per_step,
        memory_per_device,
    )
    from groundwork.tables import markdown_table

    shape = as_shape(model)
    header = ["strategy", "dp x tp x pp", "ZeRO", "m", "weights", "grads", "optimizer"]
    header += ["activations", "total", f"fits {memory_gb:g} GB", "DP sends", "TP sends"]
    header += ["PP sends", "bubble"]
    rows, left_out = [], []
    for name, layout in layouts.items():
        try:
            mem = memory_per_device(shape, layout, precision)
        except ConfigError as err:
            left_out.append(f"left out {name}: {err}")
            continue
        comm = communication_per_step(shape, layout, precision)
        sizes = [mem.params, mem.grads, mem.optimizer, mem.activations, mem.total]
        rows.append(
            [name, f"{layout.dp} x {layout.tp} x {layout.pp}", layout.zero, layout.microbatches]
            + [format_bytes(x) for x in sizes]
            + ["yes" if mem.total <= memory_gb * 1e9 else "no"]
            + [format_bytes(comm.data_parallel_bytes), format_bytes(comm.tensor_parallel_bytes)]
            + [format_bytes(comm.pipeline_bytes)]
            + [f"{bubble_fraction(layout.pp, layout.microbatches):.1%}"]
        )
    table = markdown_table(header, rows, align="llrr" + "r" * 10) if rows else ""
    return table + "".join(line + "\n" for line in left_out)


def _one_layout(
    shape: "ModelShape",
    gpus: int,
    batch: int,
    dp: int | None,
    tp: int | None,
    pp: int | None,
    zero: int | None,
    **options: Any,
) -> "ParallelLayout":
    """The layout the options name; unnamed degrees are 1, ``dp`` what the GPUs leave."""
    from groundwork.distributed.plan import ParallelLayout, check_layout

    positive_int("gpus", gpus)
    tp, pp = positive_int("tp", tp or 1), positive_int("pp", pp or 1)
    if dp is None:
        if gpus % (tp * pp):
            raise ConfigError(
                f"tp x pp = {tp} x {pp} does not divide {gpus} GPUs: choose degrees whose "
                f"product divides {gpus}"
            )
        dp = gpus // (tp * pp)
    micro_batch = positive_int("micro_batch", options["micro_batch"])
    if batch % (positive_int("dp", dp) * micro_batch):
        raise ConfigError(
            f"global_batch={batch} is not a multiple of dp x micro_batch = {dp} x {micro_batch}: "
            f"choose a multiple of {dp * micro_batch}"
        )
    layout = ParallelLayout(
        dp=dp, tp=tp, pp=pp, zero=zero or 0, microbatches=batch // (dp * micro_batch), **options
    )
    check_layout(shape, layout, gpus)
    return layout


def model_plan(
    name: str,
    gpus: int = 8,
    arch: str | None = None,
    seq_len: int | None = None,
    micro_batch: int = 1,
    global_batch: int | None = None,
    checkpointing: Literal["none", "selective", "full"] = "none",
    sequence_parallel: bool = False,
    schedule: Literal["1f1b", "gpipe"] = "1f1b",
    precision: Literal["autocast", "mixed", "fp32"] = "autocast",
    memory_gb: float = 80.0,
    dp: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    zero: int | None = None,
) -> None:
    """Memory per GPU and communication per step of training a model on several GPUs: DDP,
    ZeRO-1/2/3 (FSDP), tensor parallel, pipeline parallel and their 2-D/3-D mixes side by side,
    or the one layout that --dp/--tp/--pp/--zero name.

    Args:
        name: A preset (e.g. gpt2-1558m, mixtral-8x7b), a named pretrained model or a run
            directory.
        gpus: Number of GPUs.
        arch: Architecture of the preset (gpt, llama, mixtral; default: the first that has it).
        seq_len: Tokens per sequence (default: the model's max_seq_len).
        micro_batch: Sequences per micro-batch on each GPU.
        global_batch: Sequences per optimizer step (default: 8 micro-batches per GPU).
        checkpointing: Activation recomputation: none, selective (attention core) or full.
        sequence_parallel: Also split norms and dropouts over the tensor-parallel GPUs.
        schedule: Pipeline schedule: 1f1b or gpipe.
        precision: autocast (fp32 weights, bf16 compute: our engine), mixed (16-bit weights
            with an fp32 master copy, ZeRO's accounting) or fp32.
        memory_gb: Memory of one GPU in GB (1e9 bytes), for the "fits" column.
        dp: Data-parallel degree of a single layout (default: what tp and pp leave).
        tp: Tensor-parallel degree of a single layout.
        pp: Pipeline stages of a single layout.
        zero: ZeRO stage (0-3, 3 = FSDP) of a single layout.
    """
    from groundwork.distributed.plan import PRECISIONS, ModelShape, layouts_for
    from groundwork.models import registry
    from groundwork.recipes.models import _config_of

    config = _config_of(name, arch)
    shape = ModelShape.of(config)
    T = seq_len if seq_len is not None else config.max_seq_len
    batch = global_batch or 8 * gpus * micro_batch
    options: dict[str, Any] = dict(
        seq_len=T,
        micro_batch=micro_batch,
        checkpointing=checkpointing,
        sequence_parallel=sequence_parallel,
        schedule=schedule,
    )
    if (dp, tp, pp, zero) == (None, None, None, None):
        layouts = layouts_for(gpus, global_batch=batch, **options)
    else:
        layout = _one_layout(shape, gpus, batch, dp, tp, pp, zero, **options)
        layouts = {"your layout": layout}
    p = PRECISIONS[precision]
    active = f" ({shape.n_active:,} active per token)" if shape.n_active != shape.n_params else ""
    sp = ", sequence parallel" if sequence_parallel else ""
    print(f"{name}: {registry.arch_of(config).name}, {shape.n_params:,} parameters{active}")
    print(
        f"{gpus} GPUs; a step: {batch} sequences of {T} tokens in micro-batches of "
        f"{micro_batch}; checkpointing {checkpointing}{sp}; {schedule} pipeline schedule"
    )
    print(
        f"precision {precision}: {p.param} + {p.grad} + {p.optimizer} bytes per parameter "
        f"with AdamW, {8 * p.activation}-bit activations ({p.description})"
    )
    print()
    print(plan_table(shape, layouts, precision, memory_gb=memory_gb))
    print(
        "memory: per GPU at its peak, on the busiest pipeline stage (GB = 1e9 bytes); sends: "
        "bytes each GPU sends per step over ring collectives; m: micro-batches per step on each "
        "data-parallel rank; bubble: (p - 1)/(m + p - 1) of a step idle."
    )
    if active:
        print("experts are counted whole on every GPU that holds their layer (no expert parallel)")
