"""docs/grafana-dashboard.json: every query is valid PromQL over metrics the agent has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.observe.test_metrics import sample_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")


def expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_metric_in_the_dashboard_exists() -> None:
    exposed = set(re.findall(r"^(keystone_\w+?)(?:\{| )", sample_metrics().decode(), re.M))
    used = {name for expr in expressions() for name in re.findall(r"keystone_\w+", expr)}
    assert used, "the dashboard queries nothing"
    assert used - exposed == set()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian package prometheus)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = []
    for index, expr in enumerate(expressions()):
        concrete = expr.replace("$__rate_interval", "5m")
        concrete = re.sub(r"\$(instance|component)", ".*", concrete)
        rules.append({"record": f"keystone:dashboard_{index}", "expr": concrete})
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
