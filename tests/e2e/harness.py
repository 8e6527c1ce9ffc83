"""End-to-end harness: a real ``keystone-agent`` process on a temp root, driven through
its real Unix-socket API (``AgentClient``) and the real ``keystonectl``.

Children are small Python or shell programs the tests write. Waiting is always on a
condition with a deadline (polling the agent's API), never a bare sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from keystone_edge.api.client import AgentClient
from keystone_edge.api.control import DeploymentRequest
from keystone_edge.errors import KeyStoneError, TransportError
from keystone_edge.store import ComponentRecord, DeploymentRecord

BIN = Path(sys.executable).parent
T = TypeVar("T")

TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}


def wait_for(probe: Callable[[], T | None], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = probe()
        except KeyStoneError as exc:
            last = exc
        else:
            last = result
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.05)


@dataclass
class Agent:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.root.parent / f"{self.root.name}-agent.log"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "agent.sock"

    def start(self) -> Agent:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "keystone-agent"), "--root", str(self.root), "--log-level", "debug"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        wait_for(self._healthy, timeout=30, what="the agent's API")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with AgentClient(self.socket, timeout=5) as client:
                return bool(client.health()["status"] == "ok")
        except TransportError:
            return False

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def client(self) -> AgentClient:
        return AgentClient(self.socket, timeout=30)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "keystonectl"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    # -- convenience --------------------------------------------------------------------

    def component(self, name: str) -> ComponentRecord:
        with self.client() as client:
            return client.get_component(name).component

    def wait_state(self, name: str, *states: str, timeout: float = 20.0) -> ComponentRecord:
        def probe() -> ComponentRecord | None:
            record = self.component(name)
            return record if record.state in states else None

        return wait_for(probe, timeout=timeout, what=f"{name} in {states}")

    def deploy(self, document: dict[str, Any], recipes: list[dict[str, Any]]) -> DeploymentRecord:
        with self.client() as client:
            return client.submit_deployment(DeploymentRequest(document=document, recipes=recipes))

    def wait_deployment(self, deployment_id: str, timeout: float = 60.0) -> DeploymentRecord:
        def probe() -> DeploymentRecord | None:
            with self.client() as client:
                record = client.get_deployment(deployment_id)
            return record if record.status in TERMINAL else None

        return wait_for(probe, timeout=timeout, what=f"deployment {deployment_id} to finish")

    def deploy_and_wait(
        self, document: dict[str, Any], recipes: list[dict[str, Any]], timeout: float = 60.0
    ) -> DeploymentRecord:
        return self.wait_deployment(self.deploy(document, recipes).id, timeout)


def recipe(
    name: str,
    version: str = "1.0.0",
    *,
    script: str | None = None,
    argv: list[str] | None = None,
    run: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A canonical recipe as plain data (what ``recipe_to_builtins`` produces)."""
    data: dict[str, Any] = {"metadata": {"name": name, "version": version}}
    run_section: dict[str, Any] = dict(run or {})
    if script is not None:
        run_section["script"] = script
    if argv is not None:
        run_section["exec"] = {"command": argv[0], "args": argv[1:]}
    if run_section:
        data.setdefault("lifecycle", {})["run"] = run_section
    for key, value in sections.items():
        if key in ("install", "shutdown"):
            data.setdefault("lifecycle", {})[key] = value
        else:
            data[key] = value
    return data


def deployment(
    *components: str | tuple[str, str] | tuple[str, str, dict[str, Any]], **settings: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {"deployment": settings, "components": {}}
    for item in components:
        if isinstance(item, str):
            doc["components"][item] = {}
        elif len(item) == 2:
            doc["components"][item[0]] = {"version": item[1]}
        else:
            doc["components"][item[0]] = {"version": item[1], "config": item[2]}
    return doc


def write_program(path: Path, source: str) -> Path:
    path.write_text(source)
    path.chmod(0o755)
    return path


def python_argv(path: Path, *args: str) -> list[str]:
    return [sys.executable, str(path), *args]


def dump(data: Any) -> str:
    return json.dumps(data, indent=2)
