r"""Learning-rate schedules: linear warmup followed by cosine decay, constant, or
warmup-stable-decay (WSD).

* Cosine (Loshchilov & Hutter 2017, "SGDR"; the GPT-3 / Chinchilla recipe): after warmup,
  $\eta_t = \eta_{min} + \tfrac12(\eta_{max} - \eta_{min})(1 + \cos(\pi \cdot p))$ with
  $p$ the fraction of post-warmup steps done.
* WSD (Hu et al. 2024, "MiniCPM"): hold $\eta_{max}$, then decay linearly to $\eta_{min}$ over
  the last ``decay_fraction`` of training, so a run can be extended from any stable checkpoint.
* Constant: $\eta_{max}$ after warmup.

Warmup is linear from $\eta_{max}/\text{warmup}$ at step 0 to $\eta_{max}$. Chapter 8 (Training).
"""

import math
from typing import Literal

Schedule = Literal["cosine", "constant", "wsd"]


# --8<-- [start:learning_rate]
def learning_rate(
    step: int,
    *,
    lr: float,
    max_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    schedule: Schedule = "cosine",
    decay_fraction: float = 0.2,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Args:
        step: The step about to be taken.
        lr: Peak learning rate.
        max_steps: Total number of steps of the run.
        warmup_steps: Steps of linear warmup.
        min_lr: Final learning rate of the decay.
        schedule: ``"cosine"``, ``"constant"`` or ``"wsd"``.
        decay_fraction: For WSD, the fraction of all steps spent decaying at the end.

    >>> [round(learning_rate(s, lr=1.0, max_steps=10, warmup_steps=2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * max_steps))
        decay_start = max_steps - decay_steps
        if step < decay_start:
            return lr
        progress = min(1.0, (step - decay_start) / decay_steps)
        return lr + (min_lr - lr) * progress
    raise ValueError(f"unknown schedule {schedule!r}: choose cosine, constant or wsd")


# --8<-- [end:learning_rate]
