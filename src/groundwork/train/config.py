"""How to train: :class:`TrainConfig`, the one set of options of the training engine.

Every objective (causal LM, classification, ...) is trained with these options; a recipe with
its own, smaller set of options (``groundwork classify``) translates them into a ``TrainConfig``.
Each field is checked in ``__post_init__`` and a bad value raises a ``ConfigError`` naming it
(``train.lr must be a positive number, got -1``). Chapter 8 (Training).
"""

from dataclasses import dataclass
from typing import Literal

from groundwork.checks import in_range, non_negative_int, positive_int, positive_number
from groundwork.errors import ConfigError
from groundwork.train.schedules import Schedule


@dataclass(kw_only=True)
class TrainConfig:
    """How to train: steps, batch, optimizer, schedule, precision, evaluation and logging."""

    max_steps: int = 1000
    """Optimizer steps in the run (the schedule decays to ``min_lr`` at this step)."""
    max_time: float | None = None
    """Stop after this many seconds of this invocation, with a checkpoint (``None``: no limit);
    a resumed run gets the budget again."""
    batch_size: int = 32
    """Sequences per micro-batch."""
    seq_len: int = 128
    """Tokens per sequence (the model's context used in training)."""
    grad_accum: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay."""
    warmup_steps: int = 100
    """Steps of linear warmup."""
    schedule: Schedule = "cosine"
    """Learning-rate schedule after warmup: cosine, constant or wsd (warmup-stable-decay)."""
    decay_fraction: float = 0.2
    """For wsd: the fraction of steps spent decaying at the end."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (not applied to biases, norms, embeddings)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 runs matmuls under autocast with fp32 master weights; fp32 is exact."""
    compile: bool = False
    """Compile the model with torch.compile."""
    activation_checkpointing: bool = False
    """Recompute each transformer block in the backward pass instead of keeping its
    activations: far less memory for about a third more compute (same gradients)."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ..."""
    seed: int = 1337
    """Seeds initialisation, data order and dropout."""
    eval_every: int = 200
    """Evaluate on the validation split (and checkpoint) every this many steps."""
    eval_batches: int = 20
    """Validation batches per evaluation (fixed windows from the start of the split)."""
    best_metric: str = "val_loss"
    """The evaluation metric that picks the best checkpoint (``model.best.safetensors``)."""
    best_mode: Literal["min", "max"] = "min"
    """Whether a lower (min) or higher (max) ``best_metric`` is better."""
    patience: int | None = None
    """Stop after this many evaluations without a better ``best_metric`` (None: never)."""
    restore_best: bool = False
    """When the run ends (not on a signal or time limit), put the best weights back in the model
    and in ``model.safetensors``."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    progress: bool = True
    """Show a progress bar and evaluation lines (False: print nothing)."""
    tensorboard: bool = True
    """Write TensorBoard event files under the run directory's ``tb/``."""

    def __post_init__(self) -> None:
        counts = ("max_steps", "batch_size", "seq_len", "grad_accum", "eval_every", "eval_batches")
        for name in (*counts, "log_every"):
            positive_int(f"train.{name}", getattr(self, name))
        positive_number("train.lr", self.lr)
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"train.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        non_negative_int("train.warmup_steps", self.warmup_steps)
        in_range("train.decay_fraction", self.decay_fraction, 0, 1)
        if self.max_time is not None:
            positive_number("train.max_time", self.max_time)
        for name in ("beta1", "beta2"):
            in_range(f"train.{name}", getattr(self, name), 0, 1, high_inclusive=False)
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if self.patience is not None:
            positive_int("train.patience", self.patience)

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step of a language model: batch x context x accumulation."""
        return self.batch_size * self.seq_len * self.grad_accum
