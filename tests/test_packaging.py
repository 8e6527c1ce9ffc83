"""The systemd unit shipped in packaging/ is valid for systemd itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "keystone-agent.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's agent.
    agent = Path(sys.executable).parent / "keystone-agent"
    text = UNIT.read_text()
    assert "ExecStart=/opt/keystone/venv/bin/keystone-agent" in text
    unit = tmp_path / "keystone-agent.service"
    unit.write_text(text.replace("/opt/keystone/venv/bin/keystone-agent", str(agent)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in text
