"""Optional observability costs nothing when it is off: what a running agent imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RUN_AGENT = """
import asyncio, sys
from pathlib import Path
from keystone_edge.agent import Agent
from keystone_edge.config import load_agent_config
from keystone_edge.layout import Layout

layout = Layout(Path(sys.argv[1]))
agent = Agent(layout, load_agent_config(layout.config_file))

async def main():
    task = asyncio.create_task(agent.run())
    while True:  # until the API answers
        try:
            reader, writer = await asyncio.open_unix_connection(str(agent.socket_path))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.write(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        status = await reader.readline()
        writer.close()
        break
    agent.stopping.set()
    await task
    print(status.decode().strip())

asyncio.run(main())
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def run_agent(root: Path, config: str) -> tuple[str, set[str]]:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "agent.toml").write_text(config)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUN_AGENT), str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    return out[-2], set(out[-1].split())


def test_metrics_disabled_leaves_prometheus_client_unloaded(tmp_path: Path) -> None:
    status, loaded = run_agent(tmp_path, "[metrics]\nenabled = false\n")
    assert status.startswith("HTTP/1.1 404")
    assert "prometheus_client" not in loaded
    assert "opentelemetry" not in loaded
    assert "httpcore" not in loaded  # no Loki sink configured


def test_default_agent_loads_metrics_but_nothing_of_opentelemetry(tmp_path: Path) -> None:
    status, loaded = run_agent(tmp_path, "")
    assert status.startswith("HTTP/1.1 200")
    assert "prometheus_client" in loaded
    assert "opentelemetry" not in loaded
    assert {"google", "requests"} & loaded == set()  # the OTLP exporter's dependencies


def test_tracing_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from keystone_edge.errors import AgentConfigError
    from keystone_edge.observe import tracing

    # As if the otel extra were not installed (None in sys.modules makes the import fail).
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(AgentConfigError, match=r"install keystone-edge\[otel\]"):
        tracing.start_tracing(
            "http://127.0.0.1:1/v1/traces",
            headers={},
            timeout=1.0,
            service_name="keystone-agent",
            service_version="1",
            device_id="d",
        )
