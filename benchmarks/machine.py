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
