"""The architecture holds: the import-linter layers contract is kept, no module of
``src/groundwork`` takes part in an import cycle (lazy imports inside functions count), every
architecture is listed once (the registry), and no module grows past the size we read comfortably
without saying why (docs/architecture.md)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "groundwork"
MAX_LINES = 500
"""Modules longer than this must say why in their docstring (a line containing 'long because')."""


def _import_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("groundwork")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_import_graph())
    assert cycles == [], f"import cycles among groundwork modules: {cycles}"


def test_layers_contract_is_kept() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed")
    root = SRC.parents[1]
    result = subprocess.run(
        [lint, "--no-cache"], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_layers_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The contract is not vacuous: a copy of the package in which ``nn`` imports a recipe
    breaks it, and the report names the offending import."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed")
    root = SRC.parents[1]
    shutil.copytree(SRC, tmp_path / "src" / "groundwork")
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    norms = tmp_path / "src" / "groundwork" / "nn" / "norms.py"
    norms.write_text(norms.read_text() + "\nfrom groundwork.recipes import pretrain  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    result = subprocess.run(
        [lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode != 0
    assert "groundwork.nn.norms -> groundwork.recipes.pretrain" in result.stdout


def test_long_modules_say_why() -> None:
    long = []
    for path in sorted(SRC.rglob("*.py")):
        n_lines = len(path.read_text(encoding="utf-8").splitlines())
        if n_lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if "long because" not in doc:
            long.append(f"{path.relative_to(SRC)} ({n_lines} lines)")
    assert long == [], f"modules over {MAX_LINES} lines without a stated reason: {long}"


def _names_in_code(path: Path) -> set[str]:
    """Identifiers the code of ``path`` uses (docstrings and comments do not count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def test_architectures_are_listed_once() -> None:
    """Only the registry names the model config classes together; nothing else keeps a table
    of architectures."""
    # The registry, the files that define the families, and the package's export list.
    allowed = {"registry.py", "gpt.py", "gpt_hf.py", "llama.py", "llama_hf.py", "rnn.py"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "models" and (path.name in allowed or rel == Path("models/__init__.py")):
            continue
        used = _names_in_code(path)
        named = [c for c in ("GPTConfig", "LlamaConfig", "LSTMConfig") if c in used]
        if len(named) >= 2:
            offenders.append(f"{path.relative_to(SRC)}: {named}")
    assert offenders == [], f"architecture lists outside the registry: {offenders}"
