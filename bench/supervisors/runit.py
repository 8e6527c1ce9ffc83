"""runit: ``runsvdir`` over a service directory, one ``runsv`` per child.

Defaults throughout: ``runsvdir DIR`` (no ``-P``, no log argument), each service a
``run`` script that execs the workload. runsv's own throttle: when ``./run`` exits less
than one second after it started, runsv waits one second before starting it again; the
bench spaces its kills further apart than that, so the figure is the fast path.

Binaries: the system's when ``runsvdir`` is on PATH, else the ones the bench extracted from
the Debian package into ``bench/.peers/runit`` (see :mod:`bench.install` for why it does
not install the package).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from bench import procs
from bench.install import Installer, InstallError
from bench.supervisors.base import Config, Running, Supervisor, Workload, sh_run_script

__all__ = ["Runit"]


class Runit(Supervisor):
    name = "runit"
    restart_setting = "defaults (runsv restarts at once; 1 s pause if run lived < 1 s)"

    def __init__(self, peers_dir: Path) -> None:
        self.extracted = peers_dir / "runit"

    def _bindir(self) -> Path | None:
        system = shutil.which("runsvdir")
        if system and shutil.which("runsv"):
            return Path(system).parent
        local = self.extracted / "usr" / "bin"
        if (local / "runsvdir").exists() and (local / "runsv").exists():
            return local
        return None

    def ensure(self, installer: Installer) -> str | None:
        if self._bindir() is not None:
            return None
        try:
            installer.apt_extract("runit", self.extracted)
        except InstallError as exc:
            return f"runit: {exc}"
        return None if self._bindir() is not None else "runit: no runsvdir in the package"

    def version(self) -> str:
        bindir = self._bindir()
        if bindir is None:
            return "not installed"
        if bindir == self.extracted / "usr" / "bin":
            return (self.extracted / "VERSION").read_text().strip() + " (binaries extracted)"
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "runit"],
            capture_output=True,
            text=True,
            check=False,
        )
        return f"runit {done.stdout.strip() or 'unknown'}"

    def _env(self) -> dict[str, str]:
        bindir = self._bindir()
        assert bindir is not None
        # runsvdir starts runsv by name, through PATH.
        return {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def prepare(self, workload: Workload) -> Config:
        services = workload.run_dir / "service"
        script = sh_run_script(workload)
        for i in range(workload.n):
            service = services / workload.name(i)
            service.mkdir(parents=True)
            run = service / "run"
            run.write_text(script)
            run.chmod(0o755)
        bindir = self._bindir()
        return Config(
            command=[f"{bindir}/runsvdir", str(services)],
            env=self._env(),
            files={f"service/c0/run (one per child, c0..c{workload.n - 1})": script},
            notes=["stop: SIGHUP to runsvdir (it sends TERM to every runsv, then exits)"],
        )

    def start(self, workload: Workload) -> Running:
        bindir = self._bindir()
        log = workload.run_dir / "runsvdir.out"
        env = {**os.environ, **self._env()}
        proc = procs.spawn(
            [f"{bindir}/runsvdir", str(workload.run_dir / "service")],
            cwd=workload.run_dir,
            log=log,
            env=env,
            death_signal=signal.SIGHUP,
        )
        return Running(proc, workload, log, stop_signal=signal.SIGHUP)
