"""The scaling sweep: the plan follows the budgets, runs resume from results.json, and each
result is the run's own trained loss."""

import math
from pathlib import Path

import pytest

import helpers
from groundwork.corpus import Document, TokenShards, prepare_shards
from groundwork.errors import ConfigError
from groundwork.fileio import read_json
from groundwork.scaling.sweep import ModelSize, SweepConfig, plan_sweep, run_sweep

TEXT = "to be or not to be, that is the question. " * 40
SIZES = [ModelSize(d_model=16, n_layers=1, n_heads=2), ModelSize(d_model=32, n_layers=2, n_heads=2)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    docs = {
        "train": [Document(id=f"t{i}", text=TEXT, source="test") for i in range(4)],
        "val": [Document(id="v", text=TEXT, source="test")],
    }
    prepare_shards(docs, lambda s: list(s.encode()), 256, out, eot_id=None, progress=False)
    return out


def _train() -> object:
    return helpers.tiny_train(batch_size=2, seq_len=16, lr=3e-3)


def test_plan_gives_each_budget_its_tokens() -> None:
    sweep = SweepConfig(models=SIZES, budgets=[2e8, 6e8], min_steps=2, max_steps=10**6)
    runs = plan_sweep(sweep, _train(), vocab_size=256)
    assert len(runs) == 4
    for run in runs:
        # the whole steps that fit the budget, and no more
        assert run.flops <= run.budget < run.flops + run.flops_per_token * 2 * 16
        assert run.tokens == run.steps * 2 * 16
        # N is the weights that multiply: the per-token FLOPs are 6N plus attention 12 L d T
        attention = 12 * run.model.n_layers * run.model.d_model * 16
        assert run.flops_per_token == 6 * run.params + attention
    small, large = runs[0], runs[1]
    assert small.params < large.params and small.tokens > large.tokens  # one IsoFLOP family


def test_plan_skips_pairs_outside_the_step_range() -> None:
    sweep = SweepConfig(models=SIZES, budgets=[2e8], min_steps=2, max_steps=50)
    names = [r.name for r in plan_sweep(sweep, _train(), vocab_size=256)]
    assert names == ["d32-l2-c2e08"]  # the small model would need more than 50 steps
    with pytest.raises(ConfigError, match="no \\(model, budget\\) pair"):
        plan_sweep(SweepConfig(models=SIZES, budgets=[1e3]), _train(), vocab_size=256)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(models=[], budgets=[1e9]), "non-empty"),
        (dict(models=SIZES, budgets=[-1.0]), "positive FLOPs"),
        (dict(models=SIZES, budgets=[1e9], min_steps=5, max_steps=4), "min_steps"),
    ],
)
def test_bad_sweeps_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SweepConfig(**kwargs)


def test_runs_are_recorded_and_resumed(shards: Path, tmp_path: Path) -> None:
    sweep = SweepConfig(models=SIZES, budgets=[3e7], min_steps=1, max_steps=100, eval_batches=2)
    runs = plan_sweep(sweep, _train(), vocab_size=256)
    results = tmp_path / "results.json"
    train, val = TokenShards(shards, "train"), TokenShards(shards, "val")
    first = run_sweep(runs[:1], train, val, _train(), results, eval_batches=2, log=lambda s: None)
    assert len(read_json(results)["runs"]) == 1
    lines: list[str] = []
    both = run_sweep(runs, train, val, _train(), results, eval_batches=2, log=lines.append)
    assert len(lines) == 1  # the first run was not trained again
    assert both[0] == first[0] and len(read_json(results)["runs"]) == 2
    for record in both:
        assert 0 < record["loss"] < math.log(256)  # better than uniform over the 256 bytes
        assert record["flops"] == record["tokens"] * record["flops_per_token"]
