r"""Planning a parallel training run on paper: memory per device and communication per step of
data parallelism (DDP), ZeRO stages 1-3 (stage 3 is FSDP), tensor and pipeline parallelism, and
their combinations, from a model's shape alone (no weights, no GPUs). Chapter 17.

**Model states** (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", §3.1). Training $\Psi$ parameters with Adam keeps, per parameter, the weight,
its gradient and $K$ bytes of optimizer state. Mixed precision (``"mixed"``) keeps 16-bit weights
and gradients and an fp32 master copy, momentum and variance: $2 + 2 + 12 = 16$ bytes.
Groundwork's engine keeps fp32 weights and gradients and casts to bf16 on the fly
(``"autocast"``): $4 + 4 + 8$, also 16 bytes. ZeRO shards these states over the $N_d$
data-parallel ranks: stage 1 the optimizer state, stage 2 the gradients too, stage 3 the weights
too, so the model states per device are

$$ (2 + 2 + K)\Psi, \qquad (2 + 2)\Psi + \frac{K\Psi}{N_d}, \qquad 2\Psi + \frac{(2 + K)\Psi}{N_d},
\qquad \frac{(2 + 2 + K)\Psi}{N_d}. $$

**Activations** (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", §4, Table 2). One layer of sequence length $s$, micro-batch $b$, width $h$ and $a$ heads
stores, in bytes with 16-bit activations, $sbh(34 + 5as/h)$: $10\,sbh$ outside the
tensor-parallel regions (the two norms' inputs and outputs, two dropout masks), $24\,sbh$ inside
them (queries, keys, values, the attention output, the MLP's two $4h$-wide tensors) and $5as^2b$
in the attention core (softmax output, dropout mask and output). Tensor parallelism over $t$
ranks divides the inside and the core: $sbh(10 + 24/t + 5as/(ht))$; sequence parallelism divides
the rest too: $sbh(34 + 5as/h)/t$. Selective recomputation recomputes the core,
$34\,sbh/t$; full recomputation keeps only the layer's input, $2sbh$. We count the same terms
for any shape: grouped-query keys and values, a SwiGLU or mixture-of-experts MLP, no dropout, a
fused attention kernel that never stores the $s \times s$ scores (flash attention:
``attn_impl="sdpa"``), fp32 activations.

**Pipelines.** The first of $p$ stages holds $\min(m, p)$ micro-batches in flight with 1F1B
(Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM"), all $m$ with GPipe (Huang et al. 2019); either way $p - 1$ of the $m + p - 1$ time
slots of a step are idle: the bubble fraction $(p - 1)/(m + p - 1)$.

**Communication** per device, ring collectives over $N$ ranks: a reduce-scatter or an all-gather
of $\Psi$ elements sends $(N-1)\Psi/N$ of them, an all-reduce (both) $2(N-1)\Psi/N$: DDP's
gradients, and ZeRO-1/2's reduce-scattered gradients plus all-gathered weights; ZeRO-3 gathers
the weights twice (forward, backward), $3(N-1)\Psi/N$, 1.5 times DDP (ZeRO §7). Megatron's
tensor parallelism all-reduces a $bsh$ activation twice per layer forward and twice backward,
$8bsh(t-1)/t$ per layer and micro-batch (Narayanan et al. 2021, §3.2); pipeline stages pass
$bsh$ elements forward and back per micro-batch.
"""

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from groundwork.checks import positive_int
from groundwork.errors import ConfigError

Checkpointing = Literal["none", "selective", "full"]
Schedule = Literal["1f1b", "gpipe"]
CHECKPOINTING, SCHEDULES = typing.get_args(Checkpointing), typing.get_args(Schedule)
PrecisionName = Literal["mixed", "autocast", "fp32"]


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter of each model state (AdamW: two moments, and an fp32 master copy of
    16-bit weights), and per stored activation element."""

    param: int
    grad: int
    optimizer: int
    activation: int
    description: str


PRECISIONS: dict[str, Precision] = {
    "mixed": Precision(2, 2, 12, 2, "16-bit weights, fp32 master copy: ZeRO's accounting"),
    "autocast": Precision(4, 4, 8, 2, "fp32 weights, bf16 autocast: our engine"),
    "fp32": Precision(4, 4, 8, 4, "fp32 throughout"),
}
"""The precisions the planner counts, by name."""


def _precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


@dataclass(kw_only=True)
class ModelShape:
    """What the planner needs of a decoder-only transformer; :meth:`of` reads it off a registered
    config (GPT, Llama, Mixtral, ...), or give the numbers of a paper's model directly."""

    n_params: int
    """All parameters (every expert of a mixture of experts)."""
    n_layers: int
    """Transformer blocks."""
    d_model: int
    """Width $h$ of the residual stream."""
    n_heads: int
    """Query heads $a$."""
    n_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); ``None``: ``n_heads``."""
    d_head: int | None = None
    """Width of a head; ``None``: ``d_model // n_heads``."""
    d_mlp: int | None = None
    """MLP activations kept per token and layer: ``2 * d_ff`` for GELU (its input and output),
    ``3 * d_ff`` for SwiGLU (gate, up, product), times ``top_k`` for experts; ``None``: 8h."""
    vocab_size: int = 0
    """Token ids (for the logits of the last pipeline stage)."""
    embedding_params: int = 0
    """Lookup tables (token and position embeddings), held by the first pipeline stage."""
    head_params: int = 0
    """The output head's matrix (tied: a copy of the embeddings), on the last pipeline stage."""
    tied_embeddings: bool = False
    """Whether ``n_params`` counts the head and the token embeddings once."""
    dropout: bool = True
    """Dropout masks are stored (1 byte per element), as in Korthikanti et al.'s GPT."""
    fused_attention: bool = False
    """The attention scores are never stored (flash attention; fp32 softmax statistics only)."""
    n_active: int | None = None
    """Parameters one token uses (mixture of experts); ``None``: ``n_params``."""

    def __post_init__(self) -> None:
        for name in ("n_params", "n_layers", "d_model", "n_heads"):
            positive_int(name, getattr(self, name))
        self.n_kv_heads = positive_int("n_kv_heads", self.n_kv_heads or self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
            )
        self.d_head = positive_int("d_head", self.d_head or self.d_model // self.n_heads)
        self.d_mlp = positive_int("d_mlp", self.d_mlp or 8 * self.d_model)
        self.n_active = self.n_active or self.n_params

    @property
    def layer_params(self) -> float:
        """Parameters of one block (the final norm shared out among them)."""
        outside = self.embedding_params + (0 if self.tied_embeddings else self.head_params)
        return (self.n_params - outside) / self.n_layers

    @classmethod
    def of(cls, config: Any) -> "ModelShape":
        """The shape of a registered decoder-only config, from its parameter counts.

        Raises:
            ConfigError: the config is not a decoder-only transformer (an LSTM, BERT, T5).
        """
        from groundwork.models import registry
        from groundwork.models.info import parameter_counts

        arch = registry.arch_of(config)
        if not arch.causal_lm or getattr(config, "n_heads", None) is None:
            raise ConfigError(
                f"{arch.name!r} models are not decoder-only transformers: the planner needs "
                "attention heads and layers to split; plan a causal LM such as gpt or llama"
            )
        counts = parameter_counts(config)
        total = counts["total"]
        active = counts.get("active", total)
        unused = total - active  # experts a token does not visit
        head = counts["head"] or config.vocab_size * config.d_model
        return cls(
            n_params=total,
            n_layers=config.n_layers,
            d_model=config.d_model,
            n_heads=config.n_heads,
            n_kv_heads=getattr(config, "n_kv_heads", None),
            d_head=getattr(config, "d_head", None),
            d_mlp=round((counts["mlp"] - unused) / (config.n_layers * config.d_model)),
            vocab_size=config.vocab_size,
            embedding_params=counts["embeddings"],
            head_params=head,
            tied_embeddings=counts["head"] == 0,
            dropout=float(getattr(config, "dropout", 0.0)) > 0,
            fused_attention=getattr(config, "attn_impl", "math") == "sdpa",
            n_active=active,
        )


def as_shape(model: Any) -> ModelShape:
    """``model`` itself if it is a :class:`ModelShape`, else :meth:`ModelShape.of` it."""
    return model if isinstance(model, ModelShape) else ModelShape.of(model)


@dataclass(kw_only=True)
class ParallelLayout:
    """How a step is split over ``dp * tp * pp`` devices."""

    dp: int = 1
    """Data-parallel degree $N_d$: replicas (or ZeRO shards) that see different sequences."""
    zero: int = 0
    """ZeRO stage over the data-parallel ranks: 0 (DDP), 1, 2 or 3 (FSDP)."""
    tp: int = 1
    """Tensor-parallel degree $t$ (Megatron: heads and MLP columns split)."""
    pp: int = 1
    """Pipeline stages $p$ (layers split)."""
    micro_batch: int = 1
    """Sequences per micro-batch $b$."""
    seq_len: int = 2048
    """Tokens per sequence $s$."""
    microbatches: int = 1
    """Micro-batches $m$ per step (gradient accumulation, or the pipeline's micro-batches)."""
    checkpointing: Checkpointing = "none"
    """Activation recomputation: none, selective (the attention core), full (each layer)."""
    sequence_parallel: bool = False
    """Split the norms and dropouts along the sequence over the tensor-parallel ranks."""
    schedule: Schedule = "1f1b"
    """Pipeline schedule: 1F1B (PipeDream-Flush, Megatron) or GPipe."""

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "micro_batch", "seq_len", "microbatches"):
            positive_int(name, getattr(self, name))
        if self.zero not in (0, 1, 2, 3):
            raise ConfigError(f"zero must be a ZeRO stage 0, 1, 2 or 3 (FSDP), got {self.zero!r}")
        for name, choices in (("checkpointing", CHECKPOINTING), ("schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def gpus(self) -> int:
        """Devices the layout uses: ``dp * tp * pp``."""
        return self.dp * self.tp * self.pp

    @property
    def global_batch(self) -> int:
        """Sequences per step: ``dp * microbatches * micro_batch``."""
        return self.dp * self.microbatches * self.micro_batch


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def check_layout(model: Any, layout: ParallelLayout, gpus: int | None = None) -> None:
    """Raise :class:`~groundwork.errors.ConfigError` unless ``layout`` fits ``model`` (and uses
    exactly ``gpus`` devices, when given): ``tp`` must divide the query and key/value heads,
    ``pp`` the layers."""
    shape = as_shape(model)
    if gpus is not None and layout.gpus != positive_int("gpus", gpus):
        raise ConfigError(
            f"dp x tp x pp = {layout.dp} x {layout.tp} x {layout.pp} = {layout.gpus} devices, "
            f"but there are {gpus} GPUs: choose degrees whose product is {gpus}"
        )
    assert shape.n_kv_heads is not None
    for name in ("n_heads", "n_kv_heads"):
        if getattr(shape, name) % layout.tp:  # the key/value heads divide the query heads
            raise ConfigError(
                f"tp={layout.tp} does not divide {name}={getattr(shape, name)}: tensor "
                "parallelism gives each device whole heads; choose tp among "
                f"{_divisors(shape.n_kv_heads)}"
            )
    if shape.n_layers % layout.pp:
        raise ConfigError(
            f"pp={layout.pp} does not divide n_layers={shape.n_layers}: each pipeline stage "
            f"takes as many layers; choose pp among the divisors {_divisors(shape.n_layers)}"
        )


def bubble_fraction(pp: int, microbatches: int) -> float:
    r"""The share of a pipelined step during which a stage idles, $(p-1)/(m+p-1)$: GPipe and
    1F1B alike (1F1B saves memory, not time). Narayanan et al. quote the same bubble relative to
    the useful time, $(p-1)/m$.

    >>> bubble_fraction(4, 8)
    0.2727272727272727
    """
    positive_int("pp", pp)
    positive_int("microbatches", microbatches)
    return (pp - 1) / (microbatches + pp - 1)


def _stage_params(shape: ModelShape, layout: ParallelLayout, stage: int) -> float:
    """Parameters held by one device of pipeline stage ``stage`` (its tensor-parallel share)."""
    if layout.pp == 1:
        return shape.n_params / layout.tp
    params = shape.layer_params * shape.n_layers / layout.pp
    if stage == 0:
        params += shape.embedding_params
    if stage == layout.pp - 1:
        params += shape.head_params
    return params / layout.tp


# --8<-- [start:layer_activations]
def layer_activation_bytes(
    model: Any, layout: ParallelLayout, precision: PrecisionName = "autocast"
) -> float:
    r"""Bytes one transformer layer stores for the backward pass, per micro-batch and device
    (Korthikanti et al. 2022, Table 2; the module docstring derives the terms).

    >>> gpt = ModelShape(n_params=1, n_layers=1, d_model=64, n_heads=4)
    >>> layer_activation_bytes(gpt, ParallelLayout(seq_len=32), "mixed")  # sbh(34 + 5as/h)
    90112.0
    """
    shape, e = as_shape(model), _precision(precision).activation
    s, b, h, a, t = layout.seq_len, layout.micro_batch, shape.d_model, shape.n_heads, layout.tp
    assert shape.d_head is not None and shape.n_kv_heads is not None and shape.d_mlp is not None
    sp = t if layout.sequence_parallel else 1  # the replicated parts, split along s
    if layout.checkpointing == "full":
        return e * s * b * h / sp  # only the layer's input
    mask = 1 if shape.dropout else 0  # a dropout mask: one byte per element
    d_attn, d_kv = a * shape.d_head, shape.n_kv_heads * shape.d_head
    # two norm inputs, two norm outputs, two dropout masks: 10sbh in 16 bits
    replicated = s * b * h * (4 * e + 2 * mask)
    # Q, K, V, the attention output, the MLP's hidden tensors: 24sbh in 16 bits
    split = e * s * b * (2 * d_attn + 2 * d_kv + shape.d_mlp)
    # softmax output, its dropout mask and output: 5as^2b; a fused kernel keeps fp32 statistics
    core = a * s * s * b * (e + mask * (1 + e))
    if shape.fused_attention:
        core = 4 * a * s * b
    if layout.checkpointing == "selective":
        core = 0  # recomputed
    return replicated / sp + (split + core) / t


# --8<-- [end:layer_activations]


def _in_flight(layout: ParallelLayout, stage: int) -> int:
    """Micro-batches whose activations stage ``stage`` holds at its peak."""
    if layout.pp == 1:
        return 1  # gradient accumulation: each backward frees its micro-batch
    if layout.schedule == "gpipe":
        return layout.microbatches  # all forwards first
    return min(layout.microbatches, layout.pp - stage)  # 1F1B's warm-up


def _activation_bytes(
    shape: ModelShape, layout: ParallelLayout, precision: PrecisionName, stage: int
) -> float:
    e = PRECISIONS[precision].activation
    s, b, h, t = layout.seq_len, layout.micro_batch, shape.d_model, layout.tp
    sp = t if layout.sequence_parallel else 1
    per_micro_batch = shape.n_layers / layout.pp * layer_activation_bytes(shape, layout, precision)
    if stage == 0 and shape.dropout:
        per_micro_batch += s * b * h / sp  # the embeddings' dropout mask
    if stage == layout.pp - 1:  # final norm and head inputs, fp32 logits for the loss
        per_micro_batch += 2 * e * s * b * h / sp + 4 * s * b * shape.vocab_size / t
    total = _in_flight(layout, stage) * per_micro_batch
    if layout.checkpointing == "full":  # the layer being recomputed for its backward
        whole = dataclasses.replace(layout, checkpointing="none")
        total += layer_activation_bytes(shape, whole, precision)
    return total


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes one device holds at its peak (the busiest pipeline stage)."""

    params: float
    grads: float
    optimizer: float
    activations: float
    precision: str
    """The accounting (a key of :data:`PRECISIONS`)."""
    stage: int = 0
    """The pipeline stage counted."""

    @property
    def model_states(self) -> float:
        """Weights, gradients and optimizer state: what ZeRO shards."""
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations


def memory_per_device(
    model: Any,
    layout: ParallelLayout,
    precision: PrecisionName = "autocast",
    *,
    stage: int | None = None,
) -> MemoryPlan:
    """Memory of one device training ``model`` (a config or a :class:`ModelShape`) on
    ``layout``, with AdamW: of pipeline stage ``stage``, by default the busiest one.

    >>> shape = ModelShape(n_params=7_500_000_000, n_layers=32, d_model=4096, n_heads=32)
    >>> plan = memory_per_device(shape, ParallelLayout(dp=64, zero=1), "mixed")
    >>> round(plan.model_states / 1e9, 1)  # ZeRO, Figure 1: P_os on 64 GPUs
    31.4

    Raises:
        ConfigError: the layout does not fit the model (:func:`check_layout`), or ``stage`` is
            not one of its pipeline stages.
    """
    shape = as_shape(model)
    check_layout(shape, layout)
    p = _precision(precision)
    if stage is None:
        plans = [memory_per_device(shape, layout, precision, stage=i) for i in {0, layout.pp - 1}]
        return max(plans, key=lambda plan: plan.total)
    if not 0 <= stage < layout.pp:
        raise ConfigError(f"stage must be in 0..{layout.pp - 1}, got {stage}")
    psi, n = _stage_params(shape, layout, stage), layout.dp
    return MemoryPlan(
        params=psi * p.param / (n if layout.zero >= 3 else 1),
        grads=psi * p.grad / (n if layout.zero >= 2 else 1),
        optimizer=psi * p.optimizer / (n if layout.zero >= 1 else 1),
        activations=_activation_bytes(shape, layout, precision, stage),
        precision=precision,
        stage=stage,
    )


@dataclass(frozen=True)
class CommPlan:
    """Elements and bytes one device sends per training step, by kind of parallelism."""

    data_parallel: float
    tensor_parallel: float
    pipeline: float
    data_parallel_bytes: float
    tensor_parallel_bytes: float
    pipeline_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.data_parallel_bytes + self.tensor_parallel_bytes + self.pipeline_bytes


def communication_per_step(
    model: Any, layout: ParallelLayout, precision: PrecisionName = "autocast"
) -> CommPlan:
    r"""Elements and bytes one device (the busiest) sends in a step of ``layout``, over ring
    collectives (the module docstring derives them). With $m$ micro-batches, DDP and ZeRO-1
    accumulate the gradients and communicate once per step; ZeRO-2 keeps only its shard of the
    gradients, so it reduce-scatters after every micro-batch, $(m + 1)(N-1)\Psi/N$; ZeRO-3
    gathers the weights for every micro-batch, $3m(N-1)\Psi/N$. Full recomputation runs each
    forward twice: 6 tensor-parallel all-reduces per layer instead of 4. $\Psi$ counts the
    parameters of the device's tensor-parallel shard of its pipeline stage.
    """
    shape = as_shape(model)
    check_layout(shape, layout)
    p = _precision(precision)
    n, t, m = layout.dp, layout.tp, layout.microbatches
    psi = max(_stage_params(shape, layout, i) for i in {0, layout.pp - 1})
    ring = (n - 1) / n * psi  # one reduce-scatter or all-gather of psi elements
    grad_passes, weight_passes = {0: (2, 0), 1: (1, 1), 2: (m, 1), 3: (m, 2 * m)}[layout.zero]
    activation = layout.micro_batch * layout.seq_len * shape.d_model  # b * s * h elements
    all_reduces = 4 + (2 if layout.checkpointing == "full" else 0)
    tensor = shape.n_layers / layout.pp * m * all_reduces * 2 * (t - 1) / t * activation
    sends = min(layout.pp - 1, 2)
    pipeline = sends * m * activation / t
    return CommPlan(
        data_parallel=(grad_passes + weight_passes) * ring,
        tensor_parallel=tensor,
        pipeline=pipeline,
        data_parallel_bytes=ring * (grad_passes * p.grad + weight_passes * p.param),
        tensor_parallel_bytes=tensor * p.activation,
        pipeline_bytes=pipeline * p.activation,
    )


def layouts_for(
    gpus: int,
    *,
    seq_len: int = 2048,
    micro_batch: int = 1,
    global_batch: int | None = None,
    **options: Any,
) -> dict[str, ParallelLayout]:
    """The usual ways to spread a step of ``global_batch`` sequences (default: 8 micro-batches
    per GPU) over ``gpus`` devices, by name: DDP, ZeRO-1/2/3, all-tensor-parallel,
    all-pipeline, and FSDP x TP (2-D) and FSDP x TP x PP (3-D) where ``gpus`` allows, with
    tensor parallelism of at most 8 (one node). ``options`` are other :class:`ParallelLayout`
    fields (``checkpointing``, ``sequence_parallel``, ``schedule``).

    Raises:
        ConfigError: ``global_batch`` is not a multiple of a layout's ``dp * micro_batch``.
    """
    positive_int("gpus", gpus)
    positive_int("micro_batch", micro_batch)
    batch = positive_int("global_batch", global_batch or 8 * gpus * micro_batch)
    grid: dict[str, tuple[int, int, int, int]] = {}  # name -> (dp, zero, tp, pp)
    if gpus == 1:
        grid["1 GPU"] = (1, 0, 1, 1)
    else:
        grid.update({"DDP": (gpus, 0, 1, 1), "ZeRO-1": (gpus, 1, 1, 1)})
        grid.update({"ZeRO-2": (gpus, 2, 1, 1), "ZeRO-3 / FSDP": (gpus, 3, 1, 1)})
        grid.update({f"TP {gpus}": (1, 0, gpus, 1), f"PP {gpus}": (1, 0, 1, gpus)})
        t = max(d for d in range(1, 9) if gpus % d == 0 and d * d <= gpus)
        if t > 1:
            grid[f"FSDP {gpus // t} x TP {t}"] = (gpus // t, 3, t, 1)
        if t > 1 and gpus % (2 * t) == 0 and gpus // (2 * t) > 1:
            grid[f"FSDP {gpus // (2 * t)} x TP {t} x PP 2"] = (gpus // (2 * t), 3, t, 2)
    out = {}
    for name, (dp, zero, tp, pp) in grid.items():
        if batch % (dp * micro_batch):
            raise ConfigError(
                f"global_batch={batch} is not a multiple of dp x micro_batch = {dp} x "
                f"{micro_batch} ({name}): choose a multiple of {gpus * micro_batch}"
            )
        m = batch // (dp * micro_batch)
        out[name] = ParallelLayout(
            dp=dp, zero=zero, tp=tp, pp=pp, micro_batch=micro_batch, seq_len=seq_len,
            microbatches=m, **options,
        )  # fmt: skip
    return out
