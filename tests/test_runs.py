"""`groundwork.runs.load_run` and run kinds as plugins: a kind whose loader lives in a higher layer
(``task-head``, in :mod:`groundwork.adapt.runs`) is found through its entry point, so a run loads
from code that never imported that layer; an unknown kind is still a clear error."""

import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import helpers
from groundwork import runs
from groundwork.errors import CheckpointError

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "rain again today"]


def _task_head_run(root: Path) -> Path:
    """A tiny untrained ``task-head`` run (a sequence head over a 1-layer BERT), as
    `groundwork finetune` writes one."""
    from groundwork.adapt import head_for
    from groundwork.train.checkpoint import save_model

    bert = helpers.tiny_bert_run(root, TEXTS)
    backbone, _, _ = runs.load_run(bert, device="cpu")
    head = head_for(backbone, "sequence", 2)
    out = root / "head"
    out.mkdir()
    runs.write_config(
        out,
        kind="task-head",
        model=backbone.config,
        model_class=type(backbone).__name__,
        head={"kind": "sequence", "pooling": "cls", "num_labels": 2, "labels": ["no", "yes"]},
        task="toy",
        max_tokens=32,
    )
    save_model(head, out / runs.MODEL_FILE)
    shutil.copyfile(bert / runs.TOKENIZER_FILE, out / runs.TOKENIZER_FILE)
    return out


@pytest.fixture(scope="module")
def task_head_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _task_head_run(tmp_path_factory.mktemp("runs"))


def test_the_task_head_kind_is_an_installed_entry_point() -> None:
    assert "task-head" in runs.known_kinds()


def test_a_task_head_run_loads_without_importing_adapt_first(task_head_run: Path) -> None:
    """In a fresh interpreter, so that what this test process imported cannot hide the bug."""
    script = textwrap.dedent(
        """
        import sys
        import groundwork.runs as runs
        assert "groundwork.adapt" not in sys.modules, "runs must not import adapt"
        head, tokenizer, config = runs.load_run(sys.argv[1], device="cpu")
        print(type(head).__name__, head.num_labels, config["kind"], tokenizer is not None)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(task_head_run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SequenceClassifier", "2", "task-head", "True"]


def test_an_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    runs.write_config(tmp_path, kind="task-heads")
    with pytest.raises(CheckpointError, match=r"unknown run kind 'task-heads': did you mean"):
        runs.load_run(tmp_path)


def test_a_registered_loader_comes_before_the_entry_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runs, "_LOADERS", dict(runs._LOADERS))
    runs.register_kind("task-head", lambda run_dir, config, weights: ("mine", None))
    runs.write_config(tmp_path, kind="task-head")
    assert runs.load_run(tmp_path).model == "mine"


def test_a_broken_entry_point_names_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = EntryPoint("toy-kind", "groundwork.no_such_module:load", runs.ENTRY_POINT_GROUP)
    monkeypatch.setattr(runs, "_LOADERS", dict(runs._LOADERS))
    monkeypatch.setattr(runs, "entry_points", lambda group, name=None: [broken])
    runs.write_config(tmp_path, kind="toy-kind")
    with pytest.raises(CheckpointError, match=r"toy-kind.*no_such_module.*reinstall"):
        runs.load_run(tmp_path)


def test_an_entry_point_is_imported_once_then_registered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    imports: list[str] = []

    def loader(run_dir: Path, config: dict[str, object], weights: bool) -> tuple[str, None]:
        return "toy", None

    def load(self: EntryPoint) -> object:
        imports.append(self.value)
        return loader

    monkeypatch.setattr(EntryPoint, "load", load)
    monkeypatch.setattr(runs, "_LOADERS", dict(runs._LOADERS))
    point = EntryPoint("toy-kind", "toy.module:loader", runs.ENTRY_POINT_GROUP)
    monkeypatch.setattr(runs, "entry_points", lambda group, name=None: [point])
    runs.write_config(tmp_path, kind="toy-kind")
    assert runs.load_run(tmp_path).model == runs.load_run(tmp_path).model == "toy"
    assert runs._LOADERS["toy-kind"] is loader and imports == ["toy.module:loader"]
