"""Chapter 16 experiment: a Switch-style mixture of experts against dense GPTs on Shakespeare.

Every run is a ``groundwork pretrain`` command with the same data, tokenizer (BPE, 2048), batch
(32 x 128 tokens), optimizer, schedule and number of steps (800); they differ in the model:

* ``dense``: the demo's GPT (``configs/shakespeare-tiny.yaml``), d_ff 512: the dense model with
  the MoE's *active* parameters and compute per token;
* ``switch-e4``: ``configs/shakespeare-moe.yaml``, every MLP 4 experts of d_ff 512, top-1;
* ``switch-e8``: the same with 8 experts;
* ``top2-e4``: 4 experts, top-2 with Mixtral's renormalised router (twice the expert compute);
* ``switch-e4-no-balance``: ``switch-e4`` without the load-balancing loss;
* ``switch-e4-pooled``: ``switch-e4`` with the balancing loss pooled over the blocks, as
  ``transformers`` computes it, instead of per block;
* ``dense-total``: a dense GPT with d_ff 2048, the *total* parameters of ``switch-e4``;
* ``ensemble``: ``dense`` and three more dense GPTs trained with other seeds, their next-token
  probabilities averaged.

``--parts train`` runs the commands one after another (skipping finished runs); ``--parts
analyse`` scores each model on the whole validation split (bits per byte), times training steps
of each (tokens/s, one model after another in this process), sweeps the evaluation capacity
factor of ``switch-e4`` (the fraction of assignments dropped and the bits per byte at each),
draws the expert-load heat maps, and writes ``docs/results/moe.md``,
``docs/chapters/img/moe-*.png`` and ``benchmarks/results/moe-runs-cpu.json``. Run::

    nice -n 10 python scripts/moe_runs.py --parts train analyse
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

OUT = ROOT / "runs" / "moe"
IMG = ROOT / "docs" / "chapters" / "img"
TABLE = ROOT / "docs" / "results" / "moe.md"
JSON = ROOT / "benchmarks" / "results" / "moe-runs-cpu.json"
TINY, MOE = "configs/shakespeare-tiny.yaml", "configs/shakespeare-moe.yaml"
SEEDS = (1, 2, 3)  # the ensemble's other members (the first is `dense`, seed 1337)

RUNS: dict[str, list[str]] = {
    "dense": ["--config", TINY],
    "switch-e4": ["--config", MOE],
    "switch-e8": ["--config", MOE, "--model.n_experts", "8"],
    "top2-e4": ["--config", MOE, "--model.top_k", "2", "--model.router", "softmax_topk"],
    "switch-e4-no-balance": ["--config", MOE, "--model.router_aux_loss_coef", "0"],
    "switch-e4-pooled": ["--config", MOE, "--model.router_aux_loss_per_layer", "false"],
    "dense-total": ["--config", TINY, "--model.d_ff", "2048"],
    **{f"dense-seed{s}": ["--config", TINY, "--train.seed", str(s)] for s in SEEDS},
}
LABELS = {
    "dense": "dense GPT, d_ff 512 (= MoE's active parameters)",
    "switch-e4": "Switch, 4 experts, top-1",
    "switch-e8": "Switch, 8 experts, top-1",
    "top2-e4": "4 experts, top-2 (Mixtral router)",
    "switch-e4-no-balance": "Switch, 4 experts, top-1, no balancing loss",
    "switch-e4-pooled": "Switch, 4 experts, top-1, balancing pooled over blocks",
    "dense-total": "dense GPT, d_ff 2048 (= Switch-4's total parameters)",
}
CAPACITY_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, None)


def command(name: str) -> list[str]:
    """The ``groundwork pretrain`` command of a run (``max_time`` raised: all runs do 800
    steps)."""
    return [
        *("groundwork", "pretrain", *RUNS[name]),
        *("--train.max_time", "3600", "--out", f"runs/moe/{name}"),
    ]


def finished(run: Path) -> bool:
    state = run / "trainer_state.json"
    if not state.exists():
        return False
    config = (run / "config.yaml").read_text()
    steps = int(config.split("max_steps:")[1].split()[0])
    return int(json.loads(state.read_text())["step"]) >= steps


def train() -> None:
    for name in RUNS:
        run = OUT / name
        if finished(run):
            print(f"{name}: finished, skipped")
            continue
        cmd = command(name)
        if (run / "trainer_state.json").exists():
            cmd = ["groundwork", "pretrain", "--resume", str(run)]
        print("$", " ".join(cmd), flush=True)
        exe = [str(Path(sys.executable).parent / cmd[0]), *cmd[1:]]
        start = time.perf_counter()
        subprocess.run(exe, cwd=ROOT, check=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)


# ----------------------------------------------------------------------------------------------
# analysis
def members(names: list[str]) -> list[Any]:
    from groundwork.recipes.pretrain import load_run

    return [load_run(OUT / n, device="cpu")[0].eval() for n in names]


@torch.no_grad()
def val_loss(models: list[Any], *, batch_size: int = 16) -> tuple[float, int, float]:
    """Nats per token over the whole validation split of the (averaged) models, the tokens, and
    the fraction of MoE assignments dropped (0 for dense models)."""
    from groundwork import corpus
    from groundwork.recipes.pretrain import read_config

    shards = Path(read_config(OUT / "dense")["data"]["shards"])
    data = corpus.TokenShards(shards, "val")
    total, count, dropped, assignments = 0.0, 0, 0, 0
    for x, y in data.sequential_batches(batch_size, 128):
        logp = torch.stack([m(x).float().log_softmax(-1) for m in models])  # (M, B, T, V)
        mixed = torch.logsumexp(logp, 0) - math.log(len(models))  # (B, T, V) mean probability
        total += -float(mixed.gather(-1, y.unsqueeze(-1)).sum())
        count += y.numel()
        for m in models:
            for o in getattr(m, "router_outputs", []):
                dropped, assignments = dropped + o.dropped, assignments + o.kept.numel()
    return total / count, count, dropped / assignments if assignments else 0.0


def bytes_per_token() -> float:
    from groundwork import corpus
    from groundwork.recipes.pretrain import read_config

    meta = corpus.read_meta(Path(read_config(OUT / "dense")["data"]["shards"]))
    split = meta["splits"]["val"]
    return float(split["bytes"]) / float(split["tokens"])


def wall_seconds(run: Path) -> float:
    """The run's training time in seconds (evaluations included)."""
    return float(json.loads((run / "trainer_state.json").read_text())["elapsed_seconds"])


def train_tokens_per_s(model: Any, *, steps: int = 8) -> float:
    """Training tokens/s of ``model`` (forward, backward and AdamW on a batch of 32 x 128
    random tokens), the median of ``steps`` timed steps after two untimed ones, in this process
    with nothing else running (the runs' own logs share the machine with whatever else ran)."""
    import torch.nn.functional as F

    model = model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, (32, 129), generator=torch.Generator())
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    model.eval()
    return 32 * 128 / statistics.median(times)


def sizes(model: Any) -> dict[str, Any]:
    from groundwork.models import registry
    from groundwork.train.flops import model_flops_per_token

    counts = registry.arch_of(model.config).parameter_counts(model.config)
    return {
        "params": counts["total"],
        "active": counts.get("active", counts["total"]),
        "train_flops_per_token": model_flops_per_token(model, 128),
    }


def capacity_sweep(model: Any) -> list[dict[str, Any]]:
    """Bits per byte and dropped fraction of a trained MoE at each evaluation capacity factor
    (batches of 16 x 128 tokens, so an expert's capacity is ceil(cf * 2048 * k / E))."""
    from groundwork.nn.moe import MoE

    layers = [m for m in model.modules() if isinstance(m, MoE)]
    trained = [(m.config.capacity_factor, m.config.eval_capacity_factor) for m in layers]
    rows, bpt = [], bytes_per_token()
    for cf in CAPACITY_FACTORS:
        for m in layers:
            m.config.capacity_factor = 1.0 if cf is not None else None
            m.config.eval_capacity_factor = cf
        loss, _, dropped = val_loss([model])
        rows.append({"capacity_factor": cf, "dropped": dropped, "bpb": bits(loss, bpt)})
        print(f"  capacity factor {cf}: dropped {dropped:.2%}, {rows[-1]['bpb']:.4f} bits/byte")
    for m, (cf, eval_cf) in zip(layers, trained, strict=True):
        m.config.capacity_factor, m.config.eval_capacity_factor = cf, eval_cf
    return rows


def bits(loss: float, bpt: float) -> float:
    return loss / math.log(2) / bpt


def val_curves() -> dict[str, list[tuple[int, float]]]:
    from groundwork.train.metrics import read_metrics

    return {
        name: [
            (r["step"], r["val_bpb"])
            for r in read_metrics(OUT / name / "metrics.jsonl")
            if r.get("val_bpb") is not None
        ]
        for name in RUNS
    }


def plot(curves: dict[str, list[tuple[int, float]]], sweep: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for name, label in LABELS.items():
        ax.plot(*zip(*curves[name], strict=True), "o-", label=label, ms=3)
    ax.set_xlabel("step (32 x 128 tokens each)")
    ax.set_ylabel("validation bits per byte (first 20 batches)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    finite = [r for r in sweep if r["capacity_factor"] is not None]
    xs = [r["capacity_factor"] for r in finite]
    bx.plot(xs, [100 * r["dropped"] for r in finite], "o-", color="tab:red")
    bx.set_xlabel("evaluation capacity factor (Switch, 4 experts)")
    bx.set_ylabel("assignments dropped (%)", color="tab:red")
    bx.grid(alpha=0.3)
    cx = bx.twinx()
    cx.plot(xs, [r["bpb"] for r in finite], "s--", color="tab:blue")
    dropless = sweep[-1]["bpb"]
    cx.axhline(dropless, color="tab:blue", lw=0.8, ls=":")
    cx.set_ylabel("validation bits per byte (dotted: dropless)", color="tab:blue")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "moe-runs.png")
    plt.close(fig)


def analyse() -> None:
    from groundwork.train.metrics import plot_expert_load

    bpt = bytes_per_token()
    rows: list[dict[str, Any]] = []
    for name, label in LABELS.items():
        (model,) = members([name])
        loss, tokens, dropped = val_loss([model])
        tok_s, wall = train_tokens_per_s(model), wall_seconds(OUT / name)
        rows.append(
            {
                "run": name,
                "label": label,
                **sizes(model),
                "val_bpb": bits(loss, bpt),
                "val_tokens": tokens,
                "dropped": dropped,
                "tokens_per_s": tok_s,
                "wall_s": wall,
                "command": " ".join(command(name)),
            }
        )
        print(f"{name}: {rows[-1]['val_bpb']:.4f} bits/byte, {tok_s:,.0f} tok/s", flush=True)
    names = ["dense", *(f"dense-seed{s}" for s in SEEDS)]
    ensemble = members(names)
    for n in (2, len(names)):
        loss, tokens, _ = val_loss(ensemble[:n])
        one = sizes(ensemble[0])
        rows.append(
            {
                "run": f"ensemble-{n}",
                "label": f"ensemble of {n} dense GPTs (d_ff 512, averaged probabilities)",
                "params": n * one["params"],
                "active": n * one["active"],
                "train_flops_per_token": n * one["train_flops_per_token"],
                "val_bpb": bits(loss, bpt),
                "val_tokens": tokens,
                "dropped": 0.0,
                "tokens_per_s": None,
                "wall_s": sum(wall_seconds(OUT / m) for m in names[:n]),
                "command": "; ".join(" ".join(command(m)) for m in names[:n]),
            }
        )
        print(f"ensemble of {n}: {rows[-1]['val_bpb']:.4f} bits/byte", flush=True)
    individual = [bits(val_loss([m])[0], bpt) for m in ensemble]
    (switch,) = members(["switch-e4"])
    sweep = capacity_sweep(switch)
    plot(val_curves(), sweep)
    for name in ("switch-e4", "switch-e4-no-balance"):
        plot_expert_load(OUT / name / "metrics.jsonl", IMG / f"moe-load-{name}.png")
    record = {
        "machine": machine(),
        "runs": rows,
        "ensemble_members_bpb": individual,
        "capacity_sweep": sweep,
        "bytes_per_token": bpt,
    }
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    write_table(rows, sweep, individual)


def write_table(
    rows: list[dict[str, Any]], sweep: list[dict[str, Any]], individual: list[float]
) -> None:
    dense = next(r for r in rows if r["run"] == "dense")
    lines = [
        "<!-- --8<-- [start:runs] -->",
        "| model | parameters | active per token | train FLOPs/token (vs dense) "
        "| val bits/byte | train tokens/s |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        tok_s = "" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"
        ratio = r["train_flops_per_token"] / dense["train_flops_per_token"]
        lines.append(
            f"| {r['label']} | {r['params']:,} | {r['active']:,} | {ratio:.2f}x "
            f"| {r['val_bpb']:.4f} | {tok_s} |"
        )
    lines += [
        "<!-- --8<-- [end:runs] -->",
        "",
        "<!-- --8<-- [start:capacity] -->",
        "| eval capacity factor | assignments dropped | val bits/byte |",
        "|--:|--:|--:|",
    ]
    for r in sweep:
        cf = "dropless" if r["capacity_factor"] is None else f"{r['capacity_factor']}"
        lines.append(f"| {cf} | {100 * r['dropped']:.2f}% | {r['bpb']:.4f} |")
    lines += ["<!-- --8<-- [end:capacity] -->", ""]
    members_bpb = ", ".join(f"{b:.4f}" for b in individual)
    lines += [
        "<!-- --8<-- [start:members] -->",
        f"The ensemble's members alone: {members_bpb} bits/byte.",
        "<!-- --8<-- [end:members] -->",
        "",
    ]
    TABLE.write_text("\n".join(lines))
    print(TABLE.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["train", "analyse"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    if "train" in args.parts:
        train()
    if "analyse" in args.parts:
        analyse()
