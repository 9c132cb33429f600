"""ROME, MEMIT and FT-L on SmolLM2-135M-Instruct, measured with CounterFact's metrics on the
facts the model knows (``groundwork.edit.smollm2_facts.json``): chapter 19's table.

Settings, each evaluated on the records it edits:

* ``1``: each of the first ``--single`` records written alone into the unedited model and scored
  (then the weights are put back) — the ROME paper's protocol;
* ``10`` and ``100``: the first 10 / 100 records written together (ROME and FT-L one after
  another, MEMIT as one batch), then all of them scored on the one edited model.

Also the unedited model on the same records. Results accumulate in
``benchmarks/results/edit-smollm2.json`` (a finished (method, count) is skipped on the next run;
``--fresh`` starts over); the table goes to ``docs/results/edit.md``.

Usage: ``python scripts/edit_runs.py [--runs rome-1 memit-10 ...] [--threads 2]``.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from groundwork import pretrained  # noqa: E402
from groundwork.edit.facts import FactRecord, load_facts  # noqa: E402
from groundwork.edit.finetune import apply_ft  # noqa: E402
from groundwork.edit.layers import mlp_out_proj, n_layers  # noqa: E402
from groundwork.edit.memit import MemitConfig, apply_memit, default_layers  # noqa: E402
from groundwork.edit.metrics import TABLE_COLUMNS, record_metrics, summarize  # noqa: E402
from groundwork.edit.rome import RomeConfig, apply_rome, default_layer  # noqa: E402
from machine import machine  # noqa: E402

MODEL = "smollm2-135m-instruct"
JSON = ROOT / "benchmarks" / "results" / "edit-smollm2.json"
TABLE = ROOT / "docs" / "results" / "edit.md"
FT_LAYER = 0  # where FT-L's constrained update reaches furthest on SmolLM2 (finetune.py)

# The literature anchor (ROME, Meng et al. 2022, Table 4): GPT-2 XL on CounterFact.
ANCHOR = {"efficacy": 100.0, "paraphrase": 96.4, "neighbourhood": 75.4}

Editor = Callable[[nn.Module, Any, list[FactRecord]], None]


def rome(model: nn.Module, tokenizer: Any, records: list[FactRecord]) -> None:
    apply_rome(model, tokenizer, [r.request() for r in records], RomeConfig())


def memit(model: nn.Module, tokenizer: Any, records: list[FactRecord]) -> None:
    apply_memit(model, tokenizer, [r.request() for r in records], MemitConfig())


def ft(model: nn.Module, tokenizer: Any, records: list[FactRecord]) -> None:
    apply_ft(model, tokenizer, [r.request() for r in records], layer=FT_LAYER)


METHODS: dict[str, tuple[str, Editor | None]] = {
    "none": ("unedited", None),
    "ft": ("FT-L", ft),
    "rome": ("ROME", rome),
    "memit": ("MEMIT", memit),
}
COUNTS = (1, 10, 100)
RUNS = [f"{m}-{n}" for n in COUNTS for m in METHODS if not (m == "none" and n == 1)]


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [mlp_out_proj(model, i).weight.detach().clone() for i in range(n_layers(model))]


@torch.no_grad()
def restore(model: nn.Module, weights: list[torch.Tensor]) -> None:
    for i, w in enumerate(weights):
        mlp_out_proj(model, i).weight.copy_(w)


def run(
    name: str, model: nn.Module, tokenizer: Any, facts: list[FactRecord], single: int
) -> dict[str, Any]:
    method, count = name.rsplit("-", 1)
    n = int(count)
    label, editor = METHODS[method]
    original = snapshot(model)
    rows: list[dict[str, Any]] = []
    edit_s = 0.0
    if n == 1:  # each record alone, weights restored in between
        for record in facts[:single]:
            start = time.perf_counter()
            if editor is not None:
                editor(model, tokenizer, [record])
            edit_s += time.perf_counter() - start
            rows += record_metrics(model, tokenizer, [record])
            restore(model, original)
        edited = single
    else:
        records = facts[:n]
        start = time.perf_counter()
        if editor is not None:
            editor(model, tokenizer, records)
        edit_s = time.perf_counter() - start
        rows = record_metrics(model, tokenizer, records)
        restore(model, original)
        edited = n
    summary = summarize(rows)
    return {
        "label": label,
        "method": method,
        "edits_at_once": n,
        "records": edited,
        "edit_seconds": edit_s,
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "texts"} for r in rows],
    }


def write_table(record: dict[str, Any]) -> None:
    runs = record["runs"]
    header = ["edits at once", "method", *[h for h, _, _ in TABLE_COLUMNS], "edit time (s)"]
    lines = [
        "<!-- --8<-- [start:edit] -->",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "--:|" * (len(header) - 2),
    ]
    for name in RUNS:
        if name not in runs:
            continue
        r = runs[name]
        cells = [str(r["edits_at_once"]) if r["method"] != "none" else "—", r["label"]]
        for _, key, percent in TABLE_COLUMNS:
            stat = r["summary"].get(key)
            if stat is None or stat.get("mean") is None:
                cells.append("—")
                continue
            scale = 100.0 if percent else 1.0
            ci = stat.get("ci95")
            mean = float(stat["mean"]) * scale
            cells.append(f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {float(ci) * scale:.1f}")
        cells.append(f"{r['edit_seconds']:.0f}" if r["method"] != "none" else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("<!-- --8<-- [end:edit] -->")
    setup = record["setup"]
    missing = [n for n in RUNS if n not in runs]
    lines += [
        "",
        f"{setup['model']}; facts: {setup['facts']}. ROME at layer {setup['rome_layer']}, MEMIT "
        f"at layers {setup['memit_layers']}, FT-L at layer {FT_LAYER} (its L-infinity bound "
        "2e-3); key statistics from 100,000 tokens of wiki-sample. Single edits: the first "
        f"{setup['single']} records, each written alone and scored; 10 and 100: the first 10 / "
        "100 written together and all scored on the one model. Scores and magnitudes in percent "
        "(± 95% interval over records), fluency in bits (2- and 3-gram entropy of 100 sampled "
        "tokens), consistency: TF-IDF similarity to reference texts about the new object. Edit "
        "time: seconds spent editing for the row (the single-edit rows: all ten edits), on the "
        "CPU threads given (`--threads`, default 2), which other jobs sometimes shared.",
        "",
        f"Literature anchor (ROME, GPT-2 XL on CounterFact): efficacy {ANCHOR['efficacy']}, "
        f"paraphrase {ANCHOR['paraphrase']}, neighbourhood {ANCHOR['neighbourhood']}.",
    ]
    if missing:
        lines += ["", f"Not yet run: {', '.join(missing)}."]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=RUNS, choices=RUNS)
    parser.add_argument("--single", type=int, default=10, help="records edited one at a time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = (
        json.loads(JSON.read_text()) if JSON.exists() and not args.fresh else {"runs": {}}
    )
    if args.table_only:
        write_table(record)
        return
    pre = pretrained.load(MODEL)
    model, tokenizer = pre.model, pre.tokenizer
    facts = load_facts()
    record["setup"] = {
        "model": MODEL,
        "facts": f"{len(facts)} records of groundwork/edit/smollm2_facts.json",
        "rome_layer": default_layer(model),
        "memit_layers": list(default_layers(model)),
        "single": args.single,
    }
    record["machine"] = machine()
    for name in args.runs:
        if name in record["runs"]:
            print(f"{name}: done before, skipped", flush=True)
            continue
        start = time.perf_counter()
        result = run(name, model, tokenizer, facts, args.single)
        s = result["summary"]
        print(
            f"{name}: efficacy {s['efficacy_score']['mean']:.3f}, paraphrase "
            f"{s['paraphrase_score']['mean']:.3f}, neighbourhood "
            f"{s['neighbourhood_score']['mean']:.3f}, fluency {s['fluency']['mean']:.2f}; "
            f"edit {result['edit_seconds']:.0f} s, total {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        record["runs"][name] = result
        JSON.parent.mkdir(parents=True, exist_ok=True)
        JSON.write_text(json.dumps(record, indent=1) + "\n")
    write_table(record)


if __name__ == "__main__":
    main()
