"""s6: ``s6-svscan`` over a scan directory, one ``s6-supervise`` per child.

Defaults throughout: ``s6-svscan DIR``, each service a ``run`` script that execs the
workload, no ``finish`` script. s6-supervise's own throttle: after ``./run`` dies it starts it
again no sooner than one second later (s6 2.11; it keeps a crashing service from spinning
the CPU), so s6's restart latency is about a second by design. The bench does not work
around it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

from bench import procs
from bench.install import Installer, InstallError
from bench.supervisors.base import Config, Running, Supervisor, Workload, sh_run_script

__all__ = ["S6"]


class S6(Supervisor):
    name = "s6"
    restart_setting = "defaults (s6-supervise restarts ./run 1 s after it died)"

    def ensure(self, installer: Installer) -> str | None:
        if shutil.which("s6-svscan") and shutil.which("s6-supervise"):
            return None
        try:
            installer.apt_install(["s6"])
        except InstallError as exc:
            return f"s6: {exc}"
        return None if shutil.which("s6-svscan") else "s6: no s6-svscan after install"

    def version(self) -> str:
        if not shutil.which("s6-svscan"):
            return "not installed"
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "s6"],
            capture_output=True,
            text=True,
            check=False,
        )
        return f"s6 {done.stdout.strip() or 'unknown'}"

    def prepare(self, workload: Workload) -> Config:
        scan = workload.run_dir / "scan"
        script = sh_run_script(workload)
        for i in range(workload.n):
            service = scan / workload.name(i)
            service.mkdir(parents=True)
            run = service / "run"
            run.write_text(script)
            run.chmod(0o755)
        return Config(
            command=[shutil.which("s6-svscan") or "s6-svscan", str(scan)],
            files={f"scan/c0/run (one per child, c0..c{workload.n - 1})": script},
            notes=["stop: SIGTERM to s6-svscan (it brings every s6-supervise down, then exits)"],
        )

    def start(self, workload: Workload) -> Running:
        log = workload.run_dir / "s6-svscan.out"
        proc = procs.spawn(
            [shutil.which("s6-svscan") or "s6-svscan", str(workload.run_dir / "scan")],
            cwd=workload.run_dir,
            log=log,
        )
        return Running(proc, workload, log, stop_signal=signal.SIGTERM)
