"""``groundwork scaling sweep``: train the grid of a scaling sweep on a data source and fit the
scaling laws to it (chapter 9).

The data is prepared as for ``groundwork pretrain`` (tokenizer and shards cached under
``$GROUNDWORK_HOME``); :mod:`groundwork.scaling.sweep` plans and trains the runs, writing
``results.json`` into ``--out`` as it goes (run the same command again to continue an
interrupted sweep); at the end :func:`groundwork.recipes.scaling.scaling_fit` fits Kaplan's
power laws, Chinchilla's $L(N, D)$ and the IsoFLOP minima, and draws the plots next to it.
``configs/scaling-shakespeare.yaml`` is sized for 2 CPU cores (about 20 minutes);
``configs/scaling-shakespeare-gpu.yaml`` is the same grid scaled up for a GPU.
"""

from pathlib import Path

from groundwork import corpus
from groundwork.recipes.pretrain import DataConfig, prepare_data
from groundwork.scaling.sweep import SweepConfig, plan_sweep, run_sweep
from groundwork.train.config import TrainConfig

__all__ = ["scaling_sweep"]

RESULTS_FILE = "results.json"


def scaling_sweep(
    *,
    sweep: SweepConfig,
    data: DataConfig,
    train: TrainConfig,
    out: Path = Path("runs/scaling"),
    plan_only: bool = False,
) -> None:
    """Train models of several sizes for several compute budgets and fit scaling laws.

    Use --config configs/scaling-shakespeare.yaml. Results go to OUT/results.json (one line
    per run as it finishes; the same command continues an interrupted sweep), the fits and
    plots beside it.

    Args:
        sweep: The model shapes and compute budgets (FLOPs).
        data: Data source and tokenizer (as for pretrain).
        train: The engine's settings shared by every run (batch, sequence length, learning
            rate, schedule); max_steps is set per run by its budget.
        out: Directory for results.json, fits.json and the plots.
        plan_only: Print the planned runs (parameters, tokens, steps) and stop.
    """
    _, shards = prepare_data(data, progress=train.progress)
    meta = corpus.read_meta(shards)
    runs = plan_sweep(sweep, train, meta["vocab_size"])
    total = sum(r.flops for r in runs)
    print(f"{len(runs)} runs, {total:.2e} training FLOPs in all:")
    for r in runs:
        print(f"  {r.name:<22} N={r.params:>10,}  D={r.tokens:>11,}  steps {r.steps:>6,}")
    if plan_only:
        return
    out.mkdir(parents=True, exist_ok=True)
    train_data = corpus.TokenShards(shards, "train")
    val_data = corpus.TokenShards(shards, "val")
    run_sweep(
        runs, train_data, val_data, train, out / RESULTS_FILE, eval_batches=sweep.eval_batches
    )
    from groundwork.recipes.scaling import scaling_fit

    scaling_fit(out / RESULTS_FILE)
