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
from tests.fixtures.paths import REPO

ROOT = REPO
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


def stage_files(cmd: str) -> set[str]:
    """Project files a stage command runs: its module's import closure (``-m stages.warm <stage>`` runs
    ``stages.<stage>`` in a process forked from the warm server, so both count)."""
    warm = re.search(r"-m stages\.warm (\w+)", cmd)
    if warm:
        return imported_files("stages.warm") | imported_files(f"stages.{warm.group(1)}")
    return imported_files(re.search(r"-m (stages\.\w+)", cmd).group(1))


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_every_imported_project_file(name):
    stage = _stages()[name]
    deps = [dep.rstrip("/") for dep in stage["deps"] if "${" not in dep]
    missing = sorted(path for path in stage_files(stage["cmd"])
                     if not any(path == dep or path.startswith(dep + "/") for dep in deps))
    assert not missing, f"dvc.yaml stage {name}: add to deps {missing}"


def test_import_closure_follows_imports_at_any_depth():
    files = imported_files("stages.evaluate")
    assert {"stages/evaluate.py", "pipeline/transfer/classification.py", "pipeline/transfer/engine.py",
            "pipeline/runtime.py"} <= files
    assert "pipeline/io/dicom.py" not in files  # training never reads DICOM
