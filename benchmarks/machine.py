"""What every benchmark records about the machine it ran on (imported by the benchmark scripts,
which run as ``python benchmarks/NAME.py``)."""

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU, Python (and PyTorch, when the benchmark uses it), the 1-minute load average
    at the time of the call, then ``extra``."""
    record: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch"] = torch.__version__
        record["torch_threads"] = torch.get_num_threads()
    record["load_average_1min"] = round(os.getloadavg()[0], 2)
    return {**record, **extra}


def alternating_times(
    steps: dict[str, Any], *, n: int, rounds: int, warmup: int = 1, cuda: bool = False
) -> dict[str, list[float]]:
    """Seconds for ``n`` calls of each ``steps[name]()``, ``rounds`` times, the order swapped
    every round so that machine noise hits every contender alike (after ``warmup`` calls each)."""
    import time

    def timed(name: str, calls: int) -> float:
        if cuda:
            import torch

            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            steps[name]()
        if cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in steps:
        timed(name, warmup)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # neither always goes first
        for name in order:
            times[name].append(timed(name, n))
    return times


def report_ratio(
    benchmark: str, tok_s: dict[str, float], result: dict[str, Any], device: str
) -> None:
    """Print ours vs reference tokens/s and their ratio, and write ``result`` to
    ``benchmarks/results/<benchmark>-<device>.json``."""
    import json

    ratio = tok_s["ours"] / tok_s["reference"]
    print(f"ours       {tok_s['ours']:>12,.0f} tokens/s")
    print(f"reference  {tok_s['reference']:>12,.0f} tokens/s")
    print(f"ratio      {ratio:>12.3f}  (ours / reference)")
    out = Path(__file__).parent / "results" / f"{benchmark}-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"recorded in {out}")
