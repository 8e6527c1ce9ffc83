"""What each side imports: every module stays resident in the agent for its whole life."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVING = """
import asyncio, sys, tempfile
from pathlib import Path
from keystone_edge.api.server import serve

class Control:  # just enough AgentControl for one request
    async def list_components(self):
        return []

async def main():
    root = Path(tempfile.mkdtemp(prefix="ks-"))
    agent = Control()
    shutdown, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(agent, root / "a.sock", shutdown=shutdown, ready=ready))
    await ready.wait()
    reader, writer = await asyncio.open_unix_connection(str(root / "a.sock"))
    writer.write(b"GET /v1/components HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    shutdown.set()
    await task

asyncio.run(main())
print(" ".join(sorted(sys.modules)))
"""


def _modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_a_serving_agent_loads_no_optional_server_parts() -> None:
    loaded = _modules(SERVING)
    assert {"starlette", "uvicorn", "h11"} <= loaded
    # No uvicorn[standard] extras, no client or CLI libraries.
    unwanted = {"httptools", "uvloop", "websockets", "wsproto", "watchfiles", "dotenv"}
    unwanted |= {"httpcore", "rich", "yaml"}
    assert loaded & unwanted == set()


def test_the_cli_loads_no_server_parts() -> None:
    loaded = _modules("import sys, keystone_edge.cli; print(' '.join(sys.modules))")
    assert loaded & {"starlette", "uvicorn", "anyio", "httpcore", "rich"} == set()
    loaded = _modules("import sys, keystone_edge.api.client; print(' '.join(sys.modules))")
    assert loaded & {"starlette", "uvicorn"} == set()
