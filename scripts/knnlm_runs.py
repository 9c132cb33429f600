r"""Chapter 15: kNN-LM on Shakespeare, on 2 CPU cores: perplexity against the interpolation weight.

The model is the demo's (``make demo``: ``configs/shakespeare-tiny.yaml``, trained here with
``groundwork pretrain`` when ``--run`` holds no run). The datastore holds one (final hidden
state, next token) pair per token of the training split, encoded with the run's tokenizer and
joined with end-of-text tokens as ``groundwork data prepare`` joins documents; the validation
split's first ``--val-tokens`` tokens are scored once by the model and searched once (the
largest of ``--ks`` neighbours), then every (k, temperature, lambda) is a cheap re-mix
(:meth:`groundwork.retrieval.knnlm.KNNLMScores.results`). Writes ``docs/results/knnlm.md``,
``docs/chapters/img/knnlm-lambda.png`` and ``benchmarks/results/knnlm-cpu.json``::

    python scripts/knnlm_runs.py                      # about 5 minutes on 2 CPU cores
                                                      # (+5 to train the model if absent)
    python scripts/knnlm_runs.py --val-tokens 2000 --train-tokens 100000 --out-dir /tmp/knnlm
    python scripts/knnlm_runs.py --from-record        # table and figure from the record
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from groundwork.corpus.documents import load_documents  # noqa: E402
from groundwork.retrieval.knnlm import build_datastore, knnlm_scores, make_searcher  # noqa: E402
from groundwork.runs import is_run, load_run  # noqa: E402
from groundwork.runtime import peak_rss_mb  # noqa: E402
from groundwork.tables import markdown_table  # noqa: E402
from machine import machine  # noqa: E402

TABLE = Path("docs/results/knnlm.md")
PLOT = Path("docs/chapters/img/knnlm-lambda.png")
RECORD = Path("benchmarks/results/knnlm-cpu.json")
CONFIG = "configs/shakespeare-tiny.yaml"
LAMBDAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def ensure_run(run: Path) -> dict[str, Any] | None:
    """Train the demo model into ``run`` unless a run is there; the command and its time."""
    if is_run(run):
        return None
    command = ["groundwork", "pretrain", "--config", CONFIG, "--out", str(run)]
    command += ["--train.progress", "false", "--train.tensorboard", "false"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "groundwork.cli", *command[1:]], check=True, cwd=ROOT)
    return {"command": " ".join(command), "seconds": round(time.perf_counter() - started, 1)}


def stream(
    tokenizer: Any, source: str, split: Literal["train", "val"], limit: int | None
) -> torch.Tensor:
    """A split's documents as one stream of ids, each followed by the end-of-text id (as
    :func:`groundwork.corpus.shards.prepare_shards` writes them); the first ``limit`` ids."""
    ids: list[int] = []
    eot = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    for doc in load_documents(source, split=split):
        ids += tokenizer.encode(doc.text) + eot
        if limit is not None and len(ids) >= limit:
            break
    return torch.tensor(ids[:limit])


def experiment(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]} s", flush=True)

    run_dir = Path(args.run)
    trained = ensure_run(run_dir)
    model, tokenizer, config = load_run(run_dir, device="cpu")
    t = time.perf_counter()
    train = stream(tokenizer, args.source, "train", args.train_tokens)
    val = stream(tokenizer, args.source, "val", args.val_tokens)
    timed("encode", t)
    windows = {"context_len": args.context_len, "batch_size": args.batch_size}
    t = time.perf_counter()
    dtype = torch.float16 if args.key_dtype == "float16" else torch.float32
    store = build_datastore(
        model, train, stride=args.datastore_stride, dtype=dtype, progress=True, **windows
    )
    timed("datastore", t)
    t = time.perf_counter()
    backend = args.backend
    if backend == "auto":
        try:
            import faiss  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401

            backend = "faiss-ivf"
        except ImportError:
            backend = "exact"
    searcher = make_searcher(store, backend, nlist=args.nlist, nprobe=args.nprobe)
    timed("index", t)
    t = time.perf_counter()
    scores = knnlm_scores(
        model, store, val, k=max(args.ks), searcher=searcher, stride=args.stride, progress=True,
        **windows,
    )  # fmt: skip
    timed("score and search", t)
    t = time.perf_counter()
    rows = []
    for k in args.ks:
        for tau in args.temperatures:
            for lam, r in scores.results(LAMBDAS, k=k, temperature=tau).items():
                rows.append(
                    {"k": k, "temperature": tau, "lambda": lam, "tokens": r.tokens,
                     "nats_per_token": r.nats_per_token, "perplexity": r.perplexity}
                )  # fmt: skip
    timed("interpolate", t)
    state_file = run_dir / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    return {
        "command": " ".join(["python", "scripts/knnlm_runs.py", *argv]),
        "machine": machine(),
        "run": str(run_dir.resolve()).replace(f"{ROOT}/", ""),
        "trained": trained,
        "model": config["model"],
        "model_steps": state.get("step"),
        "model_val_loss": state.get("last_val_loss"),
        "peak_rss_mb": round(peak_rss_mb()),
        "source": args.source,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "scored_tokens": scores.targets.numel(),
        "datastore": {
            "entries": len(store),
            "dim": store.dim,
            "key_dtype": args.key_dtype,
            "megabytes": round(store.keys.numel() * store.keys.element_size() / 2**20, 1),
            "context_len": args.context_len or config["model"]["max_seq_len"],
            "stride": args.datastore_stride,
        },
        "eval_stride": args.stride,
        "backend": backend,
        "nlist": args.nlist if backend == "faiss-ivf" else None,
        "nprobe": args.nprobe if backend == "faiss-ivf" else None,
        "timings_s": timings,
        "rows": rows,
    }


def curves(record: dict[str, Any]) -> dict[tuple[int, float], dict[float, float]]:
    out: dict[tuple[int, float], dict[float, float]] = {}
    for r in record["rows"]:
        out.setdefault((r["k"], r["temperature"]), {})[r["lambda"]] = r["perplexity"]
    return out


def write_table(record: dict[str, Any], out_dir: Path) -> str:
    by_setting = curves(record)
    settings = list(by_setting)
    header = ["λ", *[f"k={k}, τ={tau:g}" for k, tau in settings]]
    lams = sorted(next(iter(by_setting.values())))
    lines = [[f"{lam:g}", *[f"{by_setting[s][lam]:.2f}" for s in settings]] for lam in lams]
    best = min(record["rows"], key=lambda r: r["perplexity"])
    base = by_setting[settings[0]][0.0]
    m, ds, t = record["machine"], record["datastore"], record["timings_s"]
    body = [
        "<!-- written by scripts/knnlm_runs.py: do not edit by hand -->",
        "",
        markdown_table(header, lines, align="r" * len(header)).rstrip("\n"),
        "",
        f"Perplexity on the first {record['scored_tokens']:,} scored tokens of the "
        f"{record['source']} validation split (λ = 0 is the model alone: {base:.2f}); best "
        f"{best['perplexity']:.2f} at k={best['k']}, τ={best['temperature']:g}, "
        f"λ={best['lambda']:g} ({100 * (1 - best['perplexity'] / base):.1f}% lower).",
        "",
        f"Model: `{record['run']}`, the demo GPT ({record['model']['n_layers']} layers, "
        f"d_model {record['model']['d_model']}, window {record['model']['max_seq_len']}) after "
        f"{record['model_steps']} training steps (val loss {record['model_val_loss']:.3f}).",
        "",
        f"Datastore: {ds['entries']:,} keys of dimension {ds['dim']} ({ds['key_dtype']}, "
        f"{ds['megabytes']:,} MiB) from the training split ({record['train_tokens']:,} tokens), "
        f"window {ds['context_len']}, stride {ds['stride'] or ds['context_len']}; search "
        f"{record['backend']}"
        + (f" (nlist {record['nlist']}, nprobe {record['nprobe']})" if record["nlist"] else "")
        + f"; evaluation stride {record['eval_stride']}; peak RSS {record['peak_rss_mb']:,} MiB. "
        + "Seconds: "
        + ", ".join(f"{k} {v}" for k, v in t.items())
        + ".",
        "",
        f"Machine: {m['processor']}, {m['cpu_count']} CPU cores, {m['platform']}, "
        f"Python {m['python']}, torch {m.get('torch')}. Command: `{record['command']}`",
        "",
    ]
    path = out_dir / TABLE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(body)
    path.write_text(text, encoding="utf-8")
    return text


def plot(record: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for (k, tau), points in curves(record).items():
        lams = sorted(points)
        ax.plot(lams, [points[x] for x in lams], marker="o", ms=3, label=f"k={k}, τ={tau:g}")
    base = next(iter(curves(record).values()))[0.0]
    ax.axhline(base, color="grey", ls="--", lw=1, label="model alone")
    ax.set_xlabel("λ (weight of the kNN distribution)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(
        f"kNN-LM, {record['source']}: {record['datastore']['entries']:,}-key datastore",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / PLOT
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(ROOT / "runs/shakespeare-tiny"))
    parser.add_argument("--source", default="shakespeare")
    parser.add_argument("--train-tokens", type=int, default=None, help="datastore: split prefix")
    parser.add_argument("--val-tokens", type=int, default=50_000)
    parser.add_argument("--context-len", type=int, default=None, help="default max_seq_len")
    parser.add_argument("--stride", type=int, default=64, help="evaluation windows' stride")
    parser.add_argument("--datastore-stride", type=int, default=None, help="default the window")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--key-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument(
        "--backend", choices=["auto", "exact", "faiss", "faiss-ivf"], default="auto"
    )
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT, help="root of the outputs")
    parser.add_argument("--from-record", action="store_true", help="only redraw from the record")
    args = parser.parse_args(argv)
    record_path = args.out_dir / RECORD
    if args.from_record:
        record = json.loads(record_path.read_text())
    else:
        started = time.perf_counter()
        record = experiment(args, argv)
        record["timings_s"]["total"] = round(time.perf_counter() - started, 1)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(write_table(record, args.out_dir))
    plot(record, args.out_dir)


if __name__ == "__main__":
    main()
