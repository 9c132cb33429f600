"""The metrics log: JSON lines, and a warning (once) when TensorBoard files cannot be written."""

import sys
from pathlib import Path

import pytest

from groundwork.train import MetricsLogger, read_metrics
from groundwork.train import metrics as metrics_module


def test_rows_and_non_finite_values(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, loss=2.5, lr=1e-3)
    logger.log(2, loss=float("nan"))
    logger.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 2.5, "lr": 1e-3},
        {"step": 2, "loss": None},
    ]


def test_missing_tensorboard_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(metrics_module, "_warned_no_tensorboard", False)
    for run in ("a", "b"):
        MetricsLogger(tmp_path / run, tensorboard=True).close()
    err = capsys.readouterr().err
    assert err.count("warning: tensorboard is not installed") == 1
    assert "pip install tensorboard" in err and "--train.tensorboard false" in err
    assert not (tmp_path / "a" / "tb").exists()
    MetricsLogger(tmp_path / "c", tensorboard=False).close()
    assert capsys.readouterr().err == ""
