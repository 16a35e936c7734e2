"""stages.warm: a stage run through the warm server behaves as the same stage run in its own process (arguments,
output, exit status, environment, results), reuses one server, and never runs a stale project module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO as ROOT

PROBE = """
import os, sys
import helper
print(json.dumps({"args": sys.argv[1:], "value": helper.VALUE, "server": os.getppid(), "pid": os.getpid(),
                  "env": os.environ.get("PROBE_ENV"), "cwd": os.getcwd(), "main": __name__}))
if sys.argv[1:2] == ["fail"]:
    sys.exit("error: probe failed on purpose")
if sys.argv[1:2] == ["crash"]:
    raise RuntimeError("probe crashed")
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with stages/warm.py, a probe stage and a helper module it imports."""
    (tmp_path / "stages").mkdir()
    shutil.copy(ROOT / "stages" / "warm.py", tmp_path / "stages" / "warm.py")
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "probe.py").write_text("import json\n" + PROBE)
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    return tmp_path


def _warm(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WARM_STAGES_PRELOAD": "json", "WARM_STAGES_IDLE_S": "20", **env}
    return subprocess.run([sys.executable, "-m", "stages.warm", "probe", *args], cwd=project, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_a_warm_run_gets_the_arguments_environment_and_exit_status_of_a_cold_one(project):
    first = _warm(project, "3", "--x", PROBE_ENV="a")
    assert first.returncode == 3, first.stderr
    seen = json.loads(first.stdout)
    assert seen["args"] == ["3", "--x"] and seen["env"] == "a" and seen["main"] == "__main__"
    assert Path(seen["cwd"]) == project and seen["server"] != os.getpid()
    again = json.loads(_warm(project, "0", PROBE_ENV="a").stdout)
    assert again["server"] == seen["server"] and again["pid"] != seen["pid"]  # one server, a fresh child each time
    other = json.loads(_warm(project, "0", PROBE_ENV="b").stdout)
    assert other["server"] != seen["server"] and other["env"] == "b"  # another environment, another server


def test_errors_reach_the_caller_as_they_would_from_the_stage_itself(project):
    failed = _warm(project, "fail")
    assert failed.returncode == 1 and "error: probe failed on purpose" in failed.stderr
    crashed = _warm(project, "crash")
    assert crashed.returncode == 1 and "RuntimeError: probe crashed" in crashed.stderr


def test_an_edited_project_module_is_never_stale(project):
    before = json.loads(_warm(project, "0").stdout)
    (project / "helper.py").write_text("VALUE = 2\n")
    after = json.loads(_warm(project, "0").stdout)
    assert after["server"] == before["server"] and (before["value"], after["value"]) == (1, 2)


def test_warm_stages_0_runs_the_stage_in_the_calling_process(project):
    done = _warm(project, "5", WARM_STAGES="0")
    assert done.returncode == 5 and json.loads(done.stdout)["main"] == "__main__"


def test_a_real_stage_writes_the_same_result_warm_and_cold(tmp_path, tiny_params):
    params = tiny_params
    env = {**os.environ, "WARM_STAGES_IDLE_S": "20", "WARM_STAGES_PRELOAD": "numpy,sklearn.linear_model"}
    for stage in (["demo"], ["ingest"]):
        subprocess.run([sys.executable, "-m", f"stages.{stage[0]}", "--domain", "medical", "--params", str(params)],
                       cwd=ROOT, check=True, capture_output=True)
    results = []
    for command in (["-m", "stages.floor"], ["-m", "stages.warm", "floor"]):
        subprocess.run([sys.executable, *command, "--domain", "medical", "--task", "seg", "--params", str(params)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        result = json.loads((tmp_path / "evaluate" / "medical" / "seg_floor.json").read_text())
        result.pop("wall_s")
        results.append(result)
    assert results[0] == results[1]
