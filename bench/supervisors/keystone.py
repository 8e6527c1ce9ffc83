"""KeyStone: ``keystone-agent --root DIR`` plus one deployment of N components.

Each child is a component ``com.bench.cN`` 1.0.0 whose recipe runs the workload with
``restart_policy = "always"`` and ``backoff.reset_after = "1s"``: a run that lasted a
second was stable, so its restart is immediate (KeyStone's rule: the first restart after
a stable run has no delay). Everything else is the agent's default configuration (no
``etc/agent.toml``).

Timed start = launch the agent, wait for its API to answer ``GET /healthz``, then apply the
deployment. The apply goes, by default, straight to the API (``POST /v1/deployments`` with
the deployment document and the recipes, the request ``keystonectl deploy apply`` sends), so
the figure is the agent's and not the CLI interpreter's start-up; ``--keystone-apply cli``
runs ``keystonectl deploy apply -f deployment.toml --recipes DIR --wait`` instead.
"""

from __future__ import annotations

import importlib.metadata
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

from bench import procs
from bench.agent_api import AgentApi, ApiError
from bench.install import Installer
from bench.supervisors.base import Config, Running, Supervisor, Workload

__all__ = ["ApplyMode", "KeyStone", "KeyStoneRunning"]

ApplyMode = Literal["api", "cli"]

_TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}

_RECIPE = """\
[metadata]
name = "{name}"
version = "1.0.0"

[lifecycle.run]
restart_policy = "always"

[lifecycle.run.exec]
command = "{stamp}"
args = ["{stamps}"]

[lifecycle.run.backoff]
reset_after = "1s"
"""


def component_name(index: int) -> str:
    return f"com.bench.c{index}"


class KeyStoneRunning(Running):
    """A running agent; ``deployment_id`` is the last deployment the bench applied."""

    def __init__(
        self, proc: subprocess.Popen[bytes], workload: Workload, log: Path, root: Path
    ) -> None:
        super().__init__(proc, workload, log, stop_signal=signal.SIGTERM, stop_grace=60.0)
        self.root = root
        self.api = AgentApi(str(root / "run" / "agent.sock"))
        self.deployment_id: str | None = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``GET /healthz`` answers (the agent is serving its API)."""
        sock = Path(self.api.socket_path)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"keystone-agent exited with {self.proc.returncode} before serving its "
                    f"API; its log ends:\n{self.log_tail()}"
                )
            if sock.exists():
                try:
                    self.api.get("/healthz")
                except ApiError:
                    pass
                else:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"keystone-agent did not answer on {sock} within {timeout:.0f} s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            time.sleep(0.002)

    def apply(self, deployment: Path, recipes: Path, mode: ApplyMode) -> None:
        if mode == "cli":
            ctl = Path(sys.executable).parent / "keystonectl"
            argv = [str(ctl), "--socket", self.api.socket_path, "deploy", "apply",
                    "-f", str(deployment), "--recipes", str(recipes), "--wait"]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"`{' '.join(argv)}` exited with {done.returncode}:\n"
                    f"{(done.stdout + done.stderr).strip()[-2000:]}"
                )
            return
        document = tomllib.loads(deployment.read_text())
        recipe_data = [tomllib.loads(p.read_text()) for p in sorted(recipes.glob("*.toml"))]
        record = self.api.post("/v1/deployments", {"document": document, "recipes": recipe_data})
        self.deployment_id = str(record["id"])

    def wait_deployment(self, timeout: float = 120.0) -> dict[str, Any]:
        """Until the last applied deployment ends; raise unless it succeeded."""
        if self.deployment_id is None:
            return {}
        deadline = time.monotonic() + timeout
        while True:
            record: dict[str, Any] = self.api.get(f"/v1/deployments/{self.deployment_id}")
            status = record.get("status")
            if status in _TERMINAL:
                if status != "succeeded":
                    raise RuntimeError(
                        f"deployment {self.deployment_id} ended {status}: "
                        f"{str(record.get('error') or record)[:2000]}"
                    )
                return record
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"deployment {self.deployment_id} still {status} after {timeout:.0f} s"
                )
            time.sleep(0.05)

    def failure(self) -> str | None:
        reason = super().failure()
        if reason or self.deployment_id is None:
            return reason
        try:
            record = self.api.get(f"/v1/deployments/{self.deployment_id}")
        except ApiError as exc:
            return str(exc)
        if record.get("status") in _TERMINAL - {"succeeded"}:
            return f"deployment {self.deployment_id} {record.get('status')}: {record.get('error')}"
        return None

    def components(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.get("/v1/components")
        return found

    def check(self) -> None:
        self.wait_deployment()


class KeyStone(Supervisor):
    name = "keystone"
    restart_setting = 'restart_policy = "always", backoff.reset_after = "1s"'

    def __init__(self, apply_mode: ApplyMode = "api") -> None:
        self.apply_mode: ApplyMode = apply_mode
        self.bindir = Path(sys.executable).parent
        self.agent = self.bindir / "keystone-agent"

    def ensure(self, installer: Installer) -> str | None:
        del installer  # KeyStone is the project itself: scripts/bootstrap installs it
        missing = [p for p in (self.agent, self.bindir / "keystonectl") if not p.exists()]
        if missing:
            return (
                f"keystone: {', '.join(map(str, missing))} not found "
                "(run the bench with the project's .venv/bin/python after scripts/bootstrap)"
            )
        return None

    def version(self) -> str:
        try:
            return f"keystone-edge {importlib.metadata.version('keystone-edge')}"
        except importlib.metadata.PackageNotFoundError:
            return "keystone-edge (not installed)"

    @staticmethod
    def recipe(workload: Workload, index: int) -> str:
        return _RECIPE.format(
            name=component_name(index), stamp=workload.stamp, stamps=workload.stamps_file
        )

    @staticmethod
    def deployment(count: int, description: str) -> str:
        lines = ["[deployment]", f'description = "{description}"', ""]
        for i in range(count):
            lines += [f'[components."{component_name(i)}"]', 'version = "1.0.0"', ""]
        return "\n".join(lines)

    def write_documents(self, workload: Workload) -> tuple[Path, Path]:
        recipes = workload.run_dir / "recipes"
        recipes.mkdir(parents=True, exist_ok=True)
        for i in range(workload.n):
            path = recipes / f"{component_name(i)}.recipe.toml"
            path.write_text(self.recipe(workload, i))
        deployment = workload.run_dir / "deployment.toml"
        deployment.write_text(self.deployment(workload.n, f"bench: {workload.n} stamp children"))
        return deployment, recipes

    def prepare(self, workload: Workload) -> Config:
        deployment, recipes = self.write_documents(workload)
        root = workload.run_dir / "root"
        apply = (
            f"POST /v1/deployments on {root}/run/agent.sock with {deployment.name} and the "
            "recipes, as keystonectl deploy apply sends them"
            if self.apply_mode == "api"
            else f"keystonectl --socket {root}/run/agent.sock deploy apply -f {deployment} "
            f"--recipes {recipes} --wait"
        )
        shown = self.deployment(1, f"bench: {workload.n} stamp children")
        return Config(
            command=[str(self.agent), "--root", str(root)],
            files={
                f"recipes/{component_name(0)}.recipe.toml (one per child)": self.recipe(
                    workload, 0
                ),
                "deployment.toml": shown
                + f"# ... and so on up to {component_name(workload.n - 1)}\n",
            },
            notes=[
                "agent config: defaults (no etc/agent.toml)",
                f"apply ({self.apply_mode}): {apply}",
                "stop: SIGTERM to keystone-agent (it stops every component, then exits)",
            ],
        )

    def launch_agent(self, workload: Workload) -> KeyStoneRunning:
        root = workload.run_dir / "root"
        log = workload.run_dir / "agent.out"
        proc = procs.spawn([str(self.agent), "--root", str(root)], cwd=workload.run_dir, log=log)
        return KeyStoneRunning(proc, workload, log, root)

    def start(self, workload: Workload) -> KeyStoneRunning:
        running = self.launch_agent(workload)
        try:
            running.wait_ready()
            running.phases["agent_ready"] = time.monotonic_ns()
            running.apply(
                workload.run_dir / "deployment.toml", workload.run_dir / "recipes", self.apply_mode
            )
            running.phases["apply_returned"] = time.monotonic_ns()
        except BaseException:
            running.stop()
            raise
        return running
