"""Every DVC stage lists as deps every project file its entry point imports, directly or not.

A module missing from ``deps`` is a stale-result bug that no other test sees: editing it changes what the stage
would compute, but ``dvc repro`` skips the stage and keeps the old metrics. Imports are followed statically
(``import pipeline…`` / ``from stages… import``, at any depth, including under ``if __name__ == "__main__"``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("pipeline", "stages")


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None  # an attribute imported from a module (``from pipeline.x import function``)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in PROJECT_PACKAGES}


def imported_files(module: str) -> set[str]:
    """Project files (relative paths) that ``module`` needs, itself included; package ``__init__``s left out."""
    found, todo = set(), [module]
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in found:
            continue
        found.add(path)
        todo += _imported_modules(path)
    return {path.relative_to(ROOT).as_posix() for path in found if path.name != "__init__.py"}


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_every_imported_project_file(name):
    stage = _stages()[name]
    module = re.search(r"-m (stages\.\w+)", stage["cmd"]).group(1)
    deps = [dep.rstrip("/") for dep in stage["deps"] if "${" not in dep]
    missing = sorted(path for path in imported_files(module)
                     if not any(path == dep or path.startswith(dep + "/") for dep in deps))
    assert not missing, f"dvc.yaml stage {name}: add to deps {missing}"


def test_import_closure_follows_imports_at_any_depth():
    files = imported_files("stages.evaluate")
    assert {"stages/evaluate.py", "pipeline/tasks/evaluate.py", "pipeline/tasks/classification.py",
            "pipeline/runtime.py"} <= files
    assert "pipeline/io/dicom.py" not in files  # training never reads DICOM
