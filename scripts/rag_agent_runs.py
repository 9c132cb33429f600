r"""Chapter 15, retrieval: sparse vs dense retrieval, retrieve-then-read, and a ReAct agent, on the
wiki-sample corpus (Wikipedia articles and the Lee news texts) with SmolLM2-135M-Instruct on
2 CPU cores.

* ``retrieval``: the inverse cloze task (a sentence as the query, removed from the index; its
  document's passages are the targets), ``--queries`` queries: recall@1/5/20 and MRR of BM25,
  MiniLM (exact cosine) and their reciprocal-rank fusion.
* ``rag``: ``--questions`` fill-in-the-year questions from corpus sentences: the model alone
  (closed book) vs reading the top 3 BM25 passages; accuracy (the year in the answer), whether
  the retrieved passages hold the answer, and whether the answer cites the right passage.
* ``agent``: the ReAct agent (calculator, search over the corpus, lookup) on ``--agent-questions``
  ASDiv word problems and as many fill-in-the-year questions: accuracy, steps, how runs ended.

Writes ``docs/results/retrieval.md`` and ``benchmarks/results/retrieval-cpu.json``::

    python scripts/rag_agent_runs.py                       # all three parts
    python scripts/rag_agent_runs.py --parts agent         # one part; the others kept
    python scripts/rag_agent_runs.py --from-record         # the tables from the record
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from groundwork.tables import markdown_table  # noqa: E402
from machine import machine  # noqa: E402

TABLE = ROOT / "docs/results/retrieval.md"
RECORD = ROOT / "benchmarks/results/retrieval-cpu.json"
MODEL = "smollm2-135m-instruct"
CORPUS = "wiki-sample"


def run_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    from groundwork.corpus.documents import load_documents
    from groundwork.pretrained import load
    from groundwork.retrieval.bm25 import BM25Retriever
    from groundwork.retrieval.datasets import sentence_queries
    from groundwork.retrieval.dense import DenseRetriever
    from groundwork.retrieval.fusion import HybridRetriever
    from groundwork.retrieval.metrics import mean_reciprocal_rank, recall_at_k

    passages, queries = sentence_queries(load_documents(CORPUS), n=args.queries, seed=0)
    texts = [p.text for p in passages]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    bm25 = BM25Retriever(texts)
    timings["bm25_index"] = time.perf_counter() - started
    minilm = load("all-minilm-l6-v2")
    started = time.perf_counter()
    dense = DenseRetriever(minilm.model, minilm.tokenizer, texts)
    timings["dense_index"] = time.perf_counter() - started
    methods = {"BM25": bm25, "MiniLM": dense, "hybrid (RRF)": HybridRetriever([bm25, dense])}
    relevant = [q.relevant for q in queries]
    results = {}
    for name, retriever in methods.items():
        started = time.perf_counter()
        ranked = [[h.index for h in retriever.retrieve(q.text, 100)] for q in queries]
        seconds = time.perf_counter() - started
        results[name] = {
            **{f"recall@{k}": recall_at_k(ranked, relevant, k) for k in (1, 5, 20)},
            "mrr": mean_reciprocal_rank(ranked, relevant),
            "ms_per_query": 1000 * seconds / len(queries),
        }
        print(name, results[name], flush=True)
    return {
        "passages": len(passages),
        "queries": len(queries),
        "methods": results,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def run_rag(pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    from groundwork.corpus.documents import load_documents
    from groundwork.recipes.retrieve import chat_renderer, model_completer
    from groundwork.retrieval.bm25 import BM25Retriever
    from groundwork.retrieval.chunking import chunk_documents
    from groundwork.retrieval.datasets import cloze_questions
    from groundwork.retrieval.rag import RAGPipeline

    docs = load_documents(CORPUS)
    passages = chunk_documents(docs, size=100, overlap=20)
    texts = [p.text for p in passages]
    questions = cloze_questions(docs, n=args.questions, seed=0)
    retriever = BM25Retriever(texts)
    complete = model_completer(
        pre.model, pre.tokenizer, max_new_tokens=32, stop=("\n\n",), batch_size=8
    )
    render = chat_renderer(pre.chat_template)
    out: dict[str, Any] = {"questions": len(questions)}
    samples = []
    for name, k in (("closed book", 0), ("BM25 top-3 passages", 3)):
        started = time.perf_counter()
        pipeline = RAGPipeline(retriever, texts, complete, render=render, k=k)
        answers = pipeline.answer_many([q.question for q in questions])
        right = [q.answer in a.answer for q, a in zip(questions, answers, strict=True)]
        row: dict[str, Any] = {"accuracy": sum(right) / len(questions)}
        if k:
            holds = [
                any(q.answer in texts[i] and passages[i].doc_id == q.doc_id for i in a.passages)
                for q, a in zip(questions, answers, strict=True)
            ]
            cited = [bool(a.citations) for a in answers]
            cited_right = [
                any(q.answer in texts[i] for i in a.cited_passages)
                for q, a in zip(questions, answers, strict=True)
            ]
            row |= {
                "retrieved_holds_answer": sum(holds) / len(questions),
                "accuracy_when_retrieved": sum(r for r, h in zip(right, holds, strict=True) if h)
                / max(1, sum(holds)),
                "cites": sum(cited) / len(questions),
                "cites_passage_with_answer": sum(cited_right) / len(questions),
            }
        row["seconds"] = round(time.perf_counter() - started, 1)
        out[name] = row
        samples.append(
            {
                "setting": name,
                "question": questions[0].question,
                "gold": questions[0].answer,
                "answer": answers[0].answer,
            }
        )
        print(name, row, flush=True)
    out["samples"] = samples
    return out


def run_agent(pre: Any, args: argparse.Namespace) -> dict[str, Any]:
    from groundwork.corpus.documents import load_documents
    from groundwork.evaluate.task import get_task
    from groundwork.evaluate.tasks import normalize_number
    from groundwork.prompting.agents import answer_matches
    from groundwork.recipes.retrieve import build_agent
    from groundwork.retrieval.bm25 import BM25Retriever
    from groundwork.retrieval.chunking import chunk_documents
    from groundwork.retrieval.datasets import cloze_questions

    docs = load_documents(CORPUS)
    passages = chunk_documents(docs, size=100, overlap=20)
    retriever = BM25Retriever([p.text for p in passages])
    tools = {"ASDiv (calculator)": ("calculator",), "wiki years (search)": ("search", "lookup")}
    runners = {
        name: build_agent(
            pre.model,
            pre.tokenizer,
            passages=passages,
            retriever=retriever,
            max_steps=args.max_steps,
            max_new_tokens=48,
            tools=tools[name],
        )
        for name in tools
    }
    sets: dict[str, list[tuple[str, str]]] = {"ASDiv (calculator)": [], "wiki years (search)": []}
    for d in get_task("asdiv").docs()[200:]:  # past the problems of the prompting runs
        gold = normalize_number(str(d["answer"]))
        if (
            gold.replace(".", "", 1).isdigit()
            and len(sets["ASDiv (calculator)"]) < args.agent_questions
        ):
            sets["ASDiv (calculator)"].append(
                (f"{d['passage'].strip()} {d['question'].strip()}", gold)
            )
    for q in cloze_questions(docs, n=args.agent_questions, seed=1):
        sets["wiki years (search)"].append((q.question, q.answer))
    out: dict[str, Any] = {"sets": {}}
    traces = []
    for name, items in sets.items():
        started = time.perf_counter()
        transcripts = [runners[name].run(question) for question, _ in items]
        right = [
            answer_matches(t.answer, gold) for t, (_, gold) in zip(transcripts, items, strict=True)
        ]
        tools_used: dict[str, int] = {}
        for t in transcripts:
            for s in t.steps:
                tools_used[s.action or "(invalid)"] = tools_used.get(s.action or "(invalid)", 0) + 1
        statuses: dict[str, int] = {}
        for t in transcripts:
            statuses[t.status] = statuses.get(t.status, 0) + 1
        out["sets"][name] = {
            "questions": len(items),
            "accuracy": sum(right) / len(items),
            "mean_steps": sum(len(t.steps) for t in transcripts) / len(items),
            "statuses": statuses,
            "actions": tools_used,
            "seconds": round(time.perf_counter() - started, 1),
        }
        traces.append(transcripts[0].render())
        print(name, out["sets"][name], flush=True)
    out["traces"] = traces
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def section(name: str, lines: list[str]) -> list[str]:
    """``lines`` between snippet markers, so the chapter can include just this part."""
    return [f"<!-- --8<-- [start:{name}] -->", *lines, f"<!-- --8<-- [end:{name}] -->", ""]


def tables(record: dict[str, Any]) -> str:
    m = record["machine"]
    out = [
        "<!-- written by scripts/rag_agent_runs.py; do not edit -->",
        f"Machine: {m['processor']}, {m['cpu_count']} cores; corpus {CORPUS}; model {MODEL}.",
        "",
    ]
    r = record.get("retrieval")
    if r:
        out += section(
            "retrieval",
            [
                f"**Retrieval, inverse cloze task** ({r['queries']} sentence queries over "
                f"{r['passages']} passages of 100 words; a hit is any passage of the sentence's "
                "document):",
                "",
                markdown_table(
                    ["method", "recall@1", "recall@5", "recall@20", "MRR", "ms / query"],
                    [
                        [
                            n,
                            pct(v["recall@1"]),
                            pct(v["recall@5"]),
                            pct(v["recall@20"]),
                            f"{v['mrr']:.3f}",
                            f"{v['ms_per_query']:.1f}",
                        ]
                        for n, v in r["methods"].items()
                    ],
                ),
                "",
                f"Index time: BM25 {r['timings_s']['bm25_index']} s, MiniLM embeddings "
                f"{r['timings_s']['dense_index']} s.",
            ],
        )
    g = record.get("rag")
    if g:
        rows = []
        for name in ("closed book", "BM25 top-3 passages"):
            row = g[name]
            rows.append(
                [
                    name,
                    pct(row["accuracy"]),
                    pct(row["retrieved_holds_answer"]) if "retrieved_holds_answer" in row else "",
                    pct(row["cites"]) if "cites" in row else "",
                    pct(row["cites_passage_with_answer"]) if "cites" in row else "",
                ]
            )
        out += section(
            "rag",
            [
                f"**Retrieve-then-read** ({g['questions']} fill-in-the-year questions from corpus "
                "sentences; right = the year appears in the answer; %):",
                "",
                markdown_table(
                    [
                        "setting",
                        "accuracy",
                        "answer in the passages",
                        "cites a passage",
                        "cites the passage with the answer",
                    ],
                    rows,
                ),
            ],
        )
    a = record.get("agent")
    if a:
        rows = []
        for name, v in a["sets"].items():
            ended = ", ".join(f"{k} {n}" for k, n in sorted(v["statuses"].items()))
            used = ", ".join(f"{k} {n}" for k, n in sorted(v["actions"].items()))
            rows.append(
                [name, v["questions"], pct(v["accuracy"]), f"{v['mean_steps']:.1f}", ended, used]
            )
        out += section(
            "agent",
            [
                "**ReAct agent** (the calculator for ASDiv; search and lookup for the wiki "
                "questions; at most "
                f"{record['agent_max_steps']} model turns):",
                "",
                markdown_table(["questions", "n", "accuracy %", "turns", "ended", "actions"], rows),
            ],
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["retrieval", "rag", "agent"],
        choices=["retrieval", "rag", "agent"],
    )
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--agent-questions", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--from-record", action="store_true")
    args = parser.parse_args()
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    if not args.from_record:
        import groundwork

        pre = groundwork.load(MODEL) if {"rag", "agent"} & set(args.parts) else None
        for part in args.parts:
            started = time.perf_counter()
            if part == "retrieval":
                result = run_retrieval(args)
            elif part == "rag":
                result = run_rag(pre, args)
            else:
                result = run_agent(pre, args)
                record["agent_max_steps"] = args.max_steps
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            result["command"] = "python scripts/rag_agent_runs.py " + " ".join(sys.argv[1:])
            record[part] = result
        record["machine"] = machine()
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(tables(record) + "\n")
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
