r"""Chapter 15, prompting: in-context learning and chain of thought with SmolLM2-135M-Instruct on
2 CPU cores, measured on real tasks.

* ``icl``: SMS spam detection (the SMS Spam Collection's test split, balanced: the first
  ``--n-per-class`` spam and ham messages of its shuffled order), shots from the training split.
  The k-shot curve (k = 0, 1, 2, 4, 8; ``--prompts`` different random prompts per k, each used
  for every test message, as Zhao et al. 2021 do), each prompt's accuracy before and after
  contextual calibration; order sensitivity (one 4-shot prompt, two of each label, in
  ``--orders`` orders); random vs nearest-neighbour (MiniLM, KATE) shots at k = 4.
* ``vote``: the majority label of those 4 nearest neighbours, with no language model.
* ``cot``: ASDiv word problems with numeric answers (the first ``--problems`` of the harness's
  file): direct answers, chain of thought (4 worked exemplars), zero-shot "Let's think step by
  step", and self-consistency (majority over ``--paths`` sampled chains, temperature 0.7).

Writes ``docs/results/prompting.md``, ``docs/chapters/img/icl-shots.png`` and
``benchmarks/results/prompting-cpu.json``::

    python scripts/prompting_runs.py                  # both parts (about 30 min on 2 cores)
    python scripts/prompting_runs.py --parts cot      # one part; the other is kept from the record
    python scripts/prompting_runs.py --from-record    # tables and figure from the record
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from groundwork.tables import markdown_table  # noqa: E402
from machine import machine  # noqa: E402

TABLE = ROOT / "docs/results/prompting.md"
PLOT = ROOT / "docs/chapters/img/icl-shots.png"
RECORD = ROOT / "benchmarks/results/prompting-cpu.json"
MODEL = "smollm2-135m-instruct"
SHOTS = (0, 1, 2, 4, 8)
SELECTION_NAMES = {
    "random": "random shots",
    "nearest": "nearest neighbours (KATE)",
    "vote": "the neighbours' majority label, no language model",
}


def balanced_test(task: Any, n_per_class: int) -> list[dict[str, Any]]:
    docs = task.docs()
    spam = [d for d in docs if d["label"] == "spam"][:n_per_class]
    ham = [d for d in docs if d["label"] == "ham"][:n_per_class]
    return [d for pair in zip(spam, ham, strict=True) for d in pair]


def accuracy(probs: torch.Tensor, gold: list[int]) -> float:
    pred = probs.argmax(dim=1).tolist()
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def score_prompt(pre: Any, task: Any, docs: list[Any], shots: list[Any]) -> dict[str, float]:
    """Accuracy of one fixed prompt on every document, raw and contextually calibrated."""
    from groundwork.evaluate.harness import score_multiple_choice
    from groundwork.prompting.calibration import (
        CONTENT_FREE,
        calibrate,
        content_free_probs,
        label_probs,
    )

    examples = [task.render(d, shots) for d in docs]
    scores = score_multiple_choice(pre.model, pre.tokenizer, examples, batch_size=8)
    probs = label_probs([e["loglikelihoods"] for e in scores["examples"]])
    gold = [int(e.gold) for e in examples]
    cf_docs = [{"text": t, "label": "ham"} for t in CONTENT_FREE]
    p_cf = content_free_probs(pre.model, pre.tokenizer, task, shots, cf_docs)
    return {
        "acc": accuracy(probs, gold),
        "acc_calibrated": accuracy(calibrate(probs, p_cf.to(probs.dtype)), gold),
        "p_cf_spam": round(float(p_cf[1]), 4),
        "said_spam": float((probs.argmax(1) == 1).float().mean()),
    }


def run_icl(pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    from groundwork.evaluate.embeddings import sentence_embeddings
    from groundwork.evaluate.harness import score_multiple_choice
    from groundwork.evaluate.task import get_task
    from groundwork.pretrained import load
    from groundwork.prompting.fewshot import nearest_shots, orderings, random_shots

    task = get_task("sms-spam")
    assert task.fewshot_docs is not None
    pool = task.fewshot_docs()
    docs = balanced_test(task, args.n_per_class)
    started = time.perf_counter()
    curve: dict[str, list[dict[str, float]]] = {}
    for k in SHOTS:
        n_prompts = 1 if k == 0 else args.prompts
        rows = []
        for p in range(n_prompts):
            shots = [pool[i] for i in random_shots(len(pool), k, seed=1000 * k + p)]
            rows.append(score_prompt(pre, task, docs, shots))
            print(f"k={k} prompt {p}: {rows[-1]}", flush=True)
        curve[str(k)] = rows
    # order sensitivity: two spam and two ham shots, in several orders
    spam = [d for d in pool if d["label"] == "spam"][:2]
    ham = [d for d in pool if d["label"] == "ham"][:2]
    base = [spam[0], ham[0], spam[1], ham[1]]
    orders = []
    for perm in orderings(4, args.orders, seed=0):
        shots = [base[i] for i in perm]
        row = score_prompt(pre, task, docs, shots)
        row["order"] = "".join("S" if s["label"] == "spam" else "H" for s in shots)
        row["permutation"] = list(perm)
        orders.append(row)
        print(f"order {row['order']}: {row}", flush=True)
    # random vs nearest neighbours (KATE), k = 4, one prompt per message
    minilm = load("all-minilm-l6-v2")
    pool_emb = sentence_embeddings(minilm.model, minilm.tokenizer, [d["text"] for d in pool])
    query_emb = sentence_embeddings(minilm.model, minilm.tokenizer, [d["text"] for d in docs])
    selection = {}
    for name in ("random", "nearest"):
        shots_per_doc = [
            [pool[i] for i in random_shots(len(pool), 4, seed=7 + j)]
            if name == "random"
            else [pool[i] for i in nearest_shots(query_emb[j], pool_emb, 4)]
            for j in range(len(docs))
        ]
        examples = [task.render(d, s) for d, s in zip(docs, shots_per_doc, strict=True)]
        scores = score_multiple_choice(pre.model, pre.tokenizer, examples, batch_size=8)
        spam_shots = sum(s["label"] == "spam" for ss in shots_per_doc for s in ss)
        selection[name] = {
            "acc": scores["acc"],
            "spam_shot_fraction": spam_shots / (4 * len(docs)),
        }
        print(f"{name}: {selection[name]}", flush=True)
    return {
        "task": "sms-spam",
        "n_test": len(docs),
        "curve": curve,
        "orders": orders,
        "selection": selection,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_vote(args: argparse.Namespace) -> dict[str, Any]:
    """The label most frequent among each message's 4 nearest training messages (MiniLM), no
    language model: how much of nearest-neighbour prompting the neighbours' labels explain. A
    2-2 tie goes to the nearest neighbour's label."""
    from groundwork.evaluate.embeddings import sentence_embeddings
    from groundwork.evaluate.task import get_task
    from groundwork.pretrained import load
    from groundwork.prompting.fewshot import nearest_shots

    task = get_task("sms-spam")
    assert task.fewshot_docs is not None
    pool = task.fewshot_docs()
    docs = balanced_test(task, args.n_per_class)
    minilm = load("all-minilm-l6-v2")
    pool_emb = sentence_embeddings(minilm.model, minilm.tokenizer, [d["text"] for d in pool])
    query_emb = sentence_embeddings(minilm.model, minilm.tokenizer, [d["text"] for d in docs])
    right = 0
    for j, doc in enumerate(docs):
        labels = [pool[i]["label"] for i in nearest_shots(query_emb[j], pool_emb, 4)]
        spam = labels.count("spam")
        vote = "spam" if spam > 2 or (spam == 2 and labels[-1] == "spam") else "ham"
        right += vote == doc["label"]
    return {"acc": right / len(docs), "spam_shot_fraction": None}


def run_cot(pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    from groundwork.evaluate.task import get_task
    from groundwork.evaluate.tasks import normalize_number
    from groundwork.generate.config import GenerationConfig
    from groundwork.generate.stream import generate_texts
    from groundwork.prompting.cot import (
        STOP,
        arithmetic_prompt,
        extract_answer,
        is_correct,
        majority_vote,
    )

    docs = []
    for d in get_task("asdiv").docs():
        gold = normalize_number(str(d["answer"]))
        if gold.replace(".", "", 1).replace("-", "", 1).isdigit():
            docs.append((f"{d['passage'].strip()} {d['question'].strip()}", gold))
        if len(docs) == args.problems:
            break
    results: dict[str, Any] = {"n": len(docs)}
    examples: dict[str, list[str]] = {}
    for style, tokens in (("direct", 16), ("cot", 128), ("zero-shot-cot", 128)):
        started = time.perf_counter()
        config = GenerationConfig(max_new_tokens=tokens, temperature=0.0, stop_strings=STOP)
        prompts = [arithmetic_prompt(q, style) for q, _ in docs]  # type: ignore[arg-type]
        texts = generate_texts(pre.model, pre.tokenizer, prompts, config, batch_size=16)
        answers = [extract_answer(t) for t in texts]
        correct = [is_correct(a, g) for a, (_, g) in zip(answers, docs, strict=True)]
        results[style] = {
            "accuracy": sum(correct) / len(docs),
            "no_number": sum(a is None for a in answers) / len(docs),
            "seconds": round(time.perf_counter() - started, 1),
        }
        examples[style] = texts[:3]
        print(style, results[style], flush=True)
    started = time.perf_counter()
    config = GenerationConfig(
        max_new_tokens=128, temperature=0.7, top_p=0.95, stop_strings=STOP, seed=0
    )
    prompts = [arithmetic_prompt(q, "cot") for q, _ in docs for _ in range(args.paths)]
    texts = generate_texts(pre.model, pre.tokenizer, prompts, config, batch_size=16)
    paths = [extract_answer(t) for t in texts]
    by_problem = [paths[i * args.paths : (i + 1) * args.paths] for i in range(len(docs))]
    sc = {}
    for n in sorted({1, 3, args.paths}):
        votes = [majority_vote(p[:n]) for p in by_problem]
        sc[str(n)] = sum(is_correct(v, g) for v, (_, g) in zip(votes, docs, strict=True)) / len(
            docs
        )
    any_right = sum(
        any(is_correct(a, g) for a in p) for p, (_, g) in zip(by_problem, docs, strict=True)
    )
    results["self_consistency"] = {
        "paths": args.paths,
        "accuracy_by_paths": sc,
        "oracle": any_right / len(docs),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("self-consistency", results["self_consistency"], flush=True)
    results["examples"] = {"question": docs[0][0], "gold": docs[0][1], **examples}
    return results


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def section(name: str, lines: list[str]) -> list[str]:
    """``lines`` between snippet markers, so the chapter can include just this part."""
    return [f"<!-- --8<-- [start:{name}] -->", *lines, f"<!-- --8<-- [end:{name}] -->", ""]


def tables(record: dict[str, Any]) -> str:
    out = [
        "<!-- written by scripts/prompting_runs.py; do not edit -->",
        f"Machine: {record['machine']['processor']}, {record['machine']['cpu_count']} cores; "
        f"model {MODEL}.",
        "",
    ]
    icl = record.get("icl")
    if icl:
        part: list[str] = []
        rows = []
        for k, runs in icl["curve"].items():
            rows.append(
                [
                    k,
                    len(runs),
                    mean_std([r["acc"] for r in runs]),
                    mean_std([r["acc_calibrated"] for r in runs]),
                    mean_std([r["said_spam"] for r in runs]),
                ]
            )
        part += [
            f"**In-context learning, SMS spam** ({icl['n_test']} test messages, half spam; "
            "accuracy %, mean ± standard deviation over prompts):",
            "",
            markdown_table(
                ["shots k", "prompts", "accuracy", "calibrated", "answers 'yes' (spam)"], rows
            ),
            "",
        ]
        accs = [r["acc"] for r in icl["orders"]]
        cal = [r["acc_calibrated"] for r in icl["orders"]]
        part += [
            f"**Order sensitivity** (the same 4 shots, 2 spam S and 2 ham H, in {len(accs)} "
            f"orders): accuracy {100 * min(accs):.1f}–{100 * max(accs):.1f} % "
            f"(mean {mean_std(accs)}); calibrated {100 * min(cal):.1f}–{100 * max(cal):.1f} %.",
            "",
            markdown_table(
                ["labels in order (S spam, H ham)", "accuracy", "calibrated"],
                [
                    [r["order"], f"{100 * r['acc']:.1f}", f"{100 * r['acc_calibrated']:.1f}"]
                    for r in icl["orders"]
                ],
            ),
            "",
        ]
        sel = icl["selection"]
        part += [
            "**Which shots** (k = 4, shots chosen per message):",
            "",
            markdown_table(
                ["selection", "accuracy", "spam among the shots"],
                [
                    [
                        SELECTION_NAMES.get(n, n),
                        f"{100 * s['acc']:.1f}",
                        ""
                        if s["spam_shot_fraction"] is None
                        else f"{100 * s['spam_shot_fraction']:.0f} %",
                    ]
                    for n, s in sel.items()
                ],
            ),
            "",
        ]
        out += section("icl", part)
    cot = record.get("cot")
    if cot:
        sc = cot["self_consistency"]
        rows = [
            [name, f"{100 * cot[key]['accuracy']:.1f}", f"{100 * cot[key]['no_number']:.0f} %"]
            for name, key in (
                ("direct (4 shots)", "direct"),
                ("chain of thought (4 shots)", "cot"),
                ("zero-shot chain of thought", "zero-shot-cot"),
            )
        ]
        for n, acc in sc["accuracy_by_paths"].items():
            rows.append([f"self-consistency, {n} sampled chains", f"{100 * acc:.1f}", ""])
        rows.append(
            [f"any of the {sc['paths']} chains right (oracle)", f"{100 * sc['oracle']:.1f}", ""]
        )
        out += section(
            "cot",
            [
                f"**Arithmetic word problems, ASDiv** ({cot['n']} problems; exact numeric answer):",
                "",
                markdown_table(["prompting", "accuracy %", "no number given"], rows),
            ],
        )
    return "\n".join(out)


def plot(record: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    icl = record["icl"]
    ks = [int(k) for k in icl["curve"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("acc", "few-shot"), ("acc_calibrated", "calibrated")):
        runs = [[r[key] for r in icl["curve"][str(k)]] for k in ks]
        means = [100 * statistics.mean(r) for r in runs]
        for k, r in zip(ks, runs, strict=True):
            ax.scatter([k] * len(r), [100 * v for v in r], s=12, alpha=0.5)
        ax.plot(ks, means, marker="o", label=label)
    ax.axhline(50, color="grey", linestyle=":", label="chance (balanced)")
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("shots k")
    ax.set_ylabel("accuracy %")
    ax.set_title(f"SMS spam, {MODEL}, one dot per prompt")
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["icl", "vote", "cot"], choices=["icl", "vote", "cot"]
    )
    parser.add_argument("--n-per-class", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--orders", type=int, default=8)
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--paths", type=int, default=5)
    parser.add_argument("--from-record", action="store_true")
    args = parser.parse_args()
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    if not args.from_record:
        import groundwork

        pre = groundwork.load(MODEL)
        for part in args.parts:
            if part == "vote":  # one more row of the icl part's selection table
                record["icl"]["selection"]["vote"] = run_vote(args)
                continue
            started = time.perf_counter()
            result = run_icl(pre, args) if part == "icl" else run_cot(pre, args)
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            result["command"] = "python scripts/prompting_runs.py " + " ".join(sys.argv[1:])
            record[part] = result
        record["machine"] = machine()
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(tables(record) + "\n")
    if "icl" in record:
        plot(record)
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
