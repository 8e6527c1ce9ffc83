"""The benchmark suite still runs: ``python -m bench --smoke`` end to end.

Benchmarks are not tests, so this asserts only that the bench ran, wrote well-formed
results, met no error and left no process behind; never a figure or a goal. Peers the
machine lacks are skipped (``--no-install``: a test run never installs anything); KeyStone
itself always runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SUPERVISORS = {"keystone", "runit", "s6", "supervisord"}
RUN_KEYS = {"supervisor", "n", "cold_start_s", "restart_latency_ms", "memory", "idle_cpu"}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _check_goals(suite: dict[str, Any]) -> None:
    assert isinstance(suite["goals"], list)
    assert suite["goals"], "every suite prints KeyStone's goals"
    for goal in suite["goals"]:
        assert goal["status"] in {"PASS", "MISS", "N/A"}
        assert {"metric", "target", "unit", "value"} <= goal.keys()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Not tmp_path: the agent's socket sits deep below the work directory, and Unix socket
    # paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ksb-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler to build the workload (bench/stamp.c)",
)
def test_smoke_run_writes_well_formed_results(tmp_path: Path, short_dir: Path) -> None:
    work = short_dir
    results = tmp_path / "results"
    argv = [
        sys.executable, "-m", "bench", "--smoke", "--no-install",
        "--suite", "supervisors", "--suite", "agent",
        "--results-dir", str(results), "--workdir", str(work),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "=== suite supervisors" in done.stdout
    assert "KeyStone's goals:" in done.stdout

    files = list(results.glob("*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert doc["schema"] == "keystone-bench/1"
    assert doc["status"] == "complete"
    assert doc["options"]["smoke"] is True
    machine = doc["machine"]
    for key in ("cpu_model", "cores_online", "kernel", "python", "versions"):
        assert machine[key], key
    assert set(machine["versions"]) == SUPERVISORS

    supervisors = doc["suites"]["supervisors"]
    runs = supervisors["data"]["runs"]
    ran = {run["supervisor"] for run in runs}
    assert ran | set(supervisors["skipped"]) == SUPERVISORS
    assert "keystone" in ran
    for run in runs:
        assert run.keys() >= RUN_KEYS
        assert run["n"] == 3
        assert run["errors"] == []
        assert len(run["cold_start_s"]) == 1
        assert run["memory"]["pss_kb"] > 0
        assert run["idle_cpu"]["window_s"] > 0
        assert len(run["restart_latency_ms"]) == doc["options"]["kills"]
    for name in ran:
        assert supervisors["configurations"][name]["by_n"]["3"]["command"]
    _check_goals(supervisors)

    agent = doc["suites"]["agent"]
    assert agent["data"].keys() >= {"idle_run", "deploys", "deploy_summary", "cli_deploy"}
    assert agent["errors"] == []
    _check_goals(agent)

    assert _processes_mentioning(str(work)) == [], "the bench left processes behind"
    assert not list(work.iterdir()), "the bench left its scratch directory behind"
