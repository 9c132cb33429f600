"""Atomic writes, weights and optimizer state without pickle, RNG round trips, bad checkpoints."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from groundwork.errors import CheckpointError
from groundwork.fileio import atomic_write, read_json, write_json
from groundwork.train import build_adamw, load_model_weights, save_model
from groundwork.train.checkpoint import load_optimizer, rng_state, save_optimizer, set_rng_state


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"step": 1})

    def crash(f: object) -> None:
        f.write(b'{"step": 2, "half')  # type: ignore[attr-defined]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert read_json(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temporary file left"


def test_corrupt_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"step": ')
    with pytest.raises(CheckpointError, match="corrupt"):
        read_json(tmp_path / "s.json")


class Tied(nn.Module):
    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, d)
        self.head = nn.Linear(d, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def test_weights_round_trip_with_tied_parameters(tmp_path: Path) -> None:
    a, b = Tied(), Tied()
    save_model(a, tmp_path / "m.safetensors")
    load_model_weights(b, tmp_path / "m.safetensors")
    torch.testing.assert_close(a.embed.weight, b.embed.weight, rtol=0, atol=0)
    assert b.head.weight is b.embed.weight, "still tied after loading"


def test_mismatched_shapes_name_the_key(tmp_path: Path) -> None:
    save_model(Tied(d=4), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"embed.weight has shape \(7, 4\).*\(7, 8\)"):
        load_model_weights(Tied(d=8), tmp_path / "m.safetensors")


def test_truncated_weights_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(Tied(), path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model_weights(Tied(), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model_weights(Tied(), tmp_path / "missing.safetensors")


def test_optimizer_state_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tied()
    opt = build_adamw(model, lr=1e-2)
    for _ in range(3):
        model(torch.randint(0, 7, (2, 3))).sum().backward()
        opt.step()
        opt.zero_grad()
    save_optimizer(opt, tmp_path / "o.safetensors")
    other = Tied()
    other.load_state_dict(model.state_dict())
    opt2 = build_adamw(other, lr=1e-2)
    load_optimizer(opt2, tmp_path / "o.safetensors")
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert json.dumps(s1["param_groups"]) == json.dumps(s2["param_groups"])
    for idx, state in s1["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(s2["state"][idx][name], value, rtol=0, atol=0)


def test_rng_round_trip() -> None:
    gen = torch.Generator().manual_seed(3)
    saved = rng_state(gen)
    first = (torch.rand(3), torch.rand(3, generator=gen))
    set_rng_state(saved, gen)
    second = (torch.rand(3), torch.rand(3, generator=gen))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
