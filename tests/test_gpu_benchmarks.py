"""The GPU benchmarks (``benchmarks/gpu.sh``) on the CPU: their ``--smoke`` paths run tiny
models end to end and record what the real run records; without CUDA the real run refuses with
a message saying so."""

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import benchmarks/machine.py
    return importlib.import_module(name)


def test_train_gpu_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "train.json"
    result = load("train_gpu", monkeypatch).main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["ours_tokens_per_s"] > 0 and result["reference_tokens_per_s"] > 0
    assert result["ours_mfu"] is None  # a CPU has no entry in the peak table: n/a, no guess
    assert result["machine"]["device"] == "cpu" and "command" in result


def test_decode_gpu_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "decode.json"
    result = load("decode_gpu", monkeypatch).main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["complete"]
    assert [(r["model"], r["batch"]) for r in result["rows"]] == [
        ("gpt2", 1),
        ("smollm2", 1),
        ("gpt2", 2),
        ("smollm2", 2),
    ]
    # fp32, eager: our static cache and transformers' agree token for token
    assert all(
        r["rows_with_the_same_greedy_tokens"] == f"{r['batch']}/{r['batch']}"
        for r in result["rows"]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
@pytest.mark.parametrize(
    "command",
    [
        ["bash", "benchmarks/gpu.sh"],
        [sys.executable, "benchmarks/train_gpu.py"],
        [sys.executable, "benchmarks/decode_gpu.py"],
    ],
    ids=["gpu.sh", "train_gpu", "decode_gpu"],
)
def test_without_cuda_the_real_run_says_so(command: list[str]) -> None:
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=BENCHMARKS.parent, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode != 0
    assert "needs" in done.stderr and "CUDA" in done.stderr and "--smoke" in done.stderr
