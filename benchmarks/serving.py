"""Continuous batching on CPU: the same 16 requests served one at a time, then 4 and 16 at once.

``groundwork serve``'s application runs in this process (uvicorn in a thread) with
SmolLM2-135M-Instruct, 16 slots; clients are threads using the official ``openai`` client, each
streaming one completion (greedy, ``--new-tokens`` tokens, no early stop: the prompts are plain
text, the completions end at ``max_tokens``). With concurrency ``c``, ``c`` clients take the 16
requests from a shared list, so at most ``c`` are in flight. Columns:

* throughput: completion tokens of all 16 requests / wall time from the first request sent to
  the last answer received; the speedup is against concurrency 1 (one request at a time, what a
  server without batching gives);
* latency p50/p95: per request, from sending it to its last token; time to first token (TTFT)
  p50/p95: to its first streamed token;
* every answer is checked: complete (``max_tokens`` tokens, finish reason ``length``) and, at
  every concurrency, equal to the one served alone (greedy decoding).

Then 24 requests arrive one every 0.4 s, each wanting 8 to 96 tokens, and their timeline (each
request's wait, prefill and decoding; the decode batch size over time: requests joining and
leaving) is drawn into ``docs/chapters/img/serving-timeline.png``.

    python benchmarks/serving.py                 # 1 thread (what results/ holds)
    python benchmarks/serving.py --quantize w4a8 --out benchmarks/results/serving-cpu-w4a8.json \
        --plot /tmp/serving-timeline-w4a8.png    # the model with w4a8 layers (chapter 18.7)

Results: ``benchmarks/results/serving-cpu.json`` (fp32), ``serving-cpu-w4a8.json``.
"""

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine

PROMPTS = [
    "The history of the printing press begins",
    "To make bread at home, you first",
    "The river flowed slowly past the old mill, and",
    "In mathematics, a prime number is",
    "The weather in the mountains changes quickly because",
    "She opened the letter and read the first line:",
    "A good way to learn a new language is",
    "The train left the station at dawn, carrying",
    "Photosynthesis is the process by which plants",
    "The museum's newest exhibit shows",
    "When the power went out, the family",
    "The recipe calls for two cups of flour and",
    "Computers store numbers in binary, which means",
    "The old lighthouse keeper climbed the stairs and",
    "Honeybees communicate with each other by",
    "The city council met on Tuesday to discuss",
]
CONCURRENCY = (1, 4, 16)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run(
    url: str, concurrency: int, new_tokens: int, arrivals: list[tuple[float, int]] | None = None
) -> dict[str, Any]:
    """Serve every prompt with ``concurrency`` clients; per-request times and texts. With
    ``arrivals``, request ``i`` is sent ``arrivals[i][0]`` seconds after the start and asks for
    ``arrivals[i][1]`` tokens (the prompts are reused in turn)."""
    import openai

    def ask(i: int) -> dict[str, Any]:
        prompt = PROMPTS[i % len(PROMPTS)]
        wanted = new_tokens
        if arrivals is not None:
            time.sleep(max(0.0, start + arrivals[i][0] - time.perf_counter()))
            wanted = arrivals[i][1]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        sent = time.perf_counter()
        first, pieces, finish = None, [], None
        stream = client.completions.create(
            model="smollm2", prompt=prompt, max_tokens=wanted, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        tokens = 0
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            if not chunk.choices:
                continue
            if first is None and chunk.choices[0].text:
                first = time.perf_counter()
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        done = time.perf_counter()
        return {
            "text": "".join(pieces),
            "tokens": tokens,
            "finish": finish,
            "latency": done - sent,
            "ttft": (first or done) - sent,
        }

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(ask, range(len(PROMPTS) if arrivals is None else len(arrivals))))
    wall = time.perf_counter() - start
    tokens = sum(a["tokens"] for a in answers)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "answers": answers}


def plot_timeline(engine: Any, since: float, path: Path) -> None:
    """Each request's wait / prefill+first token / decoding, and the decode batch over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(
        (r for r in engine.finished if r["submitted"] >= since), key=lambda r: r["submitted"]
    )
    steps = [r for r in engine.timeline if r["time"] >= since]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for i, r in enumerate(records):
        t0, t1, t2, t3 = (
            r[k] - since for k in ("submitted", "admitted", "first_token", "finished")
        )
        top.barh(i, t1 - t0, left=t0, color="#cccccc", label="waiting" if i == 0 else None)
        top.barh(i, t2 - t1, left=t1, color="#e8a33d", label="prefill" if i == 0 else None)
        top.barh(i, t3 - t2, left=t2, color="#3f51b5", label="decoding" if i == 0 else None)
    top.set_ylabel("request")
    top.invert_yaxis()
    top.legend(loc="lower right")
    top.set_title(
        f"{len(records)} requests arriving over time, continuous batching (SmolLM2-135M, CPU)"
    )
    bottom.step(
        [s["time"] - since for s in steps], [s["decode_batch"] for s in steps], where="post"
    )
    bottom.set_ylabel("decode batch")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving-cpu.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/chapters/img/serving-timeline.png"))
    parser.add_argument(
        "--quantize",
        default="none",
        choices=["none", "int8", "int4", "w8a8", "w4a8"],
        help="quantised linear layers, as `groundwork serve --quantize`",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import groundwork
    from groundwork.recipes.generate import prepare_for_decoding
    from groundwork.serve import Engine, background_server, create_app

    pre = groundwork.load("smollm2-135m-instruct")
    model = prepare_for_decoding(pre.model.eval(), "float32", args.quantize)
    engine = Engine(model, pre.tokenizer, slots=16, max_len=256)
    app = create_app(engine, model_name="smollm2", chat_template=pre.chat_template)
    results: dict[int, dict[str, Any]] = {}
    # the timeline: 24 requests, one every 0.4 s, wanting 8 to 96 tokens (joins and leaves)
    arrivals = [(0.4 * i, 8 + (i * 37) % 89) for i in range(24)]
    with background_server(app) as url:
        run(url, 4, 4)  # warm-up
        for c in CONCURRENCY:
            results[c] = run(url, c, args.new_tokens)
        since = time.perf_counter()
        staggered = run(url, len(arrivals), 0, arrivals)
        plot_timeline(engine, since, args.plot)
    alone = [a["text"] for a in results[1]["answers"]]
    rows = []
    print(f"{'concurrency':>11} {'tok/s':>7} {'speedup':>7} {'lat p50':>8} {'lat p95':>8} "
          f"{'TTFT p50':>8} {'TTFT p95':>8}  complete  same as alone")  # fmt: skip
    for c, r in results.items():
        lat = [a["latency"] for a in r["answers"]]
        ttft = [a["ttft"] for a in r["answers"]]
        complete = all(
            a["tokens"] == args.new_tokens and a["finish"] == "length" for a in r["answers"]
        )
        same = sum(a["text"] == t for a, t in zip(r["answers"], alone, strict=True))
        row = {
            "concurrency": c,
            "requests": len(PROMPTS),
            "completion_tokens": r["tokens"],
            "wall_s": round(r["wall_s"], 2),
            "tokens_per_s": round(r["tokens_per_s"], 2),
            "speedup_vs_one_at_a_time": round(r["tokens_per_s"] / results[1]["tokens_per_s"], 2),
            "latency_p50_s": round(statistics.median(lat), 2),
            "latency_p95_s": round(percentile(lat, 0.95), 2),
            "ttft_p50_s": round(statistics.median(ttft), 3),
            "ttft_p95_s": round(percentile(ttft, 0.95), 3),
            "all_complete": complete,
            "same_text_as_alone": f"{same}/{len(PROMPTS)}",
        }
        rows.append(row)
        print(
            f"{c:>11} {row['tokens_per_s']:>7.1f} {row['speedup_vs_one_at_a_time']:>6.2f}x "
            f"{row['latency_p50_s']:>7.2f}s {row['latency_p95_s']:>7.2f}s "
            f"{row['ttft_p50_s']:>7.3f}s {row['ttft_p95_s']:>7.3f}s  {complete!s:>8}  "
            f"{same}/{len(PROMPTS)}"
        )
    record = {
        "benchmark": "serving: continuous batching vs one request at a time",
        "command": "python " + " ".join(sys.argv),
        "model": "smollm2-135m-instruct (fp32)"
        + ("" if args.quantize == "none" else f", {args.quantize} linear layers"),
        "new_tokens": args.new_tokens,
        "slots": 16,
        "machine": machine(),
        "results": rows,
        "staggered": {
            "requests": len(arrivals),
            "arrivals": "one every 0.4 s, max_tokens 8 + (37 i mod 89)",
            "wall_s": round(staggered["wall_s"], 2),
            "completion_tokens": staggered["tokens"],
            "largest_decode_batch": max(
                r["decode_batch"] for r in engine.timeline if r["time"] >= since
            ),
        },
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
