"""Metrics of a run: one JSON object per logged step in ``metrics.jsonl``, TensorBoard event files
in ``tb/``, and ``plots/loss.png`` (train and validation loss, learning rate) redrawn at each
evaluation. Chapter 8 (Training).
"""

import json
import math
import sys
from pathlib import Path
from typing import Any

from groundwork.train.checkpoint import atomic_path

METRICS_FILE = "metrics.jsonl"

_warned_no_tensorboard = False


def _warn_no_tensorboard() -> None:
    """Say once per process that TensorBoard files are not written, and what to do."""
    global _warned_no_tensorboard
    if _warned_no_tensorboard:
        return
    _warned_no_tensorboard = True
    print(
        "warning: tensorboard is not installed, so no TensorBoard files are written (tb/); "
        "pip install tensorboard, or pass --train.tensorboard false to silence this",
        file=sys.stderr,
    )


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` and, if available, TensorBoard.

    Args:
        run_dir: The run directory.
        tensorboard: Write TensorBoard event files under ``run_dir/tb`` (needs ``tensorboard``).
        resume_step: When resuming, drop logged lines after this step so that the file reads as
            one uninterrupted run.
        write: False: log nothing (the ranks of a distributed run other than rank 0).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        write: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.write = write
        self._file: Any = None
        self._tb: Any = None
        if not write:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=resume_step)
            except ImportError:  # tensorboard not installed: the JSONL log still has everything
                _warn_no_tensorboard()

    def log(self, step: int, **metrics: float | int | str | None) -> None:
        """Record ``metrics`` for ``step`` (non-finite floats are written as null)."""
        if not self.write:
            return
        row: dict[str, Any] = {"step": step}
        for k, v in metrics.items():
            row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close the files."""
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (a torn last line, from a crash, is ignored)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_losses(metrics_path: Path, out: Path) -> None:
    """Draw train/validation loss against step, with the learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    lr = [(r["step"], r["lr"]) for r in rows if r.get("lr") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lr:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lr, strict=True), label="learning rate", color="tab:gray", ls="--", lw=1)
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right")
    ax.set_title(Path(metrics_path).parent.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def expert_load(rows: list[dict[str, Any]]) -> tuple[list[int], list[list[list[float]]]]:
    """The ``expert_load/<layer>/<expert>`` metrics of a mixture-of-experts run
    (:class:`~groundwork.train.objectives.MoECausalLMObjective`) as ``(steps, load)``, ``load``
    indexed ``[layer][expert][i]`` for the ``i``-th logged step; empty when there are none."""
    steps: list[int] = []
    load: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        keys = [k for k in row if k.startswith("expert_load/")]
        if not keys:
            continue
        steps.append(int(row["step"]))
        for key in keys:
            _, layer, expert = key.split("/")
            load.setdefault((int(layer), int(expert)), []).append(float(row[key]))
    if not load:
        return [], []
    n_layers = 1 + max(layer for layer, _ in load)
    n_experts = 1 + max(expert for _, expert in load)
    return steps, [[load[layer, e] for e in range(n_experts)] for layer in range(n_layers)]


def plot_expert_load(metrics_path: Path, out: Path) -> bool:
    """Draw each MoE layer's expert load over training as a heat map (step across, expert down,
    colour the expert's share of the layer's assignments; 1/E is perfect balance). Returns
    False, drawing nothing, when the run logged no expert load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, load = expert_load(read_metrics(metrics_path))
    if not steps:
        return False
    n_layers, n_experts = len(load), len(load[0])
    fig, axes = plt.subplots(
        n_layers,
        1,
        figsize=(8, 0.35 * n_experts * n_layers + 1.2),
        dpi=100,
        squeeze=False,
        sharex=True,
    )
    top = max(max(max(series) for series in layer) for layer in load)
    image = None
    for layer, ax in enumerate(axes[:, 0]):
        image = ax.imshow(
            load[layer],
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            vmin=0.0,
            vmax=top,
            extent=(steps[0], steps[-1], n_experts - 0.5, -0.5),
        )
        ax.set_ylabel(f"layer {layer}\nexpert")
        ax.set_yticks(range(n_experts))
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(
        f"{Path(metrics_path).parent.name}: share of assignments (balanced = {1 / n_experts:.3f})"
    )
    assert image is not None  # at least one layer
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True
