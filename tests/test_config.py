"""The agent config: the documented example is valid, and mistakes are named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keystone_edge import config as config_module
from keystone_edge.config import AgentConfig, load_agent_config
from keystone_edge.errors import AgentConfigError


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = config_module.__doc__ or ""
    match = re.search(r"```toml\n(.*?)```", doc, re.DOTALL)
    assert match is not None
    path = tmp_path / "agent.toml"
    path.write_text(match.group(1))
    loaded = load_agent_config(path)
    assert loaded.agent.device_id == "edge-0042"
    assert loaded.isolation.namespaces_for("com.example.hello") == ["pid", "net", "mount"]
    assert loaded.backoff == {"initial": "100ms", "max": "30s"}
    assert loaded.device_config["com.example.hello"] == {"message": "hello from this device"}


def test_a_missing_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_agent_config(tmp_path / "absent.toml") == AgentConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[logs]\nmax_bytes = "10 MB"\n', "agent.toml:2: logs.max_bytes: invalid size '10 MB'"),
        ("[api]\nsokcet = 'x'\n", "unknown key `sokcet` (did you mean `socket`?)"),
        ('[backoff]\ninitial = "soon"\n', "backoff.initial: invalid duration 'soon'"),
        ('[isolation]\nmode = "lenient"\n', "isolation.mode"),
    ],
)
def test_mistakes_name_the_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path)
    assert message in str(caught.value)
