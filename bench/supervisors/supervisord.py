"""supervisord (PyPI ``supervisor``), from its own virtualenv under ``bench/.peers/venv``.

Configuration: the stock sections ``echo_supervisord_conf`` prints (the control socket and
RPC interface that ``supervisorctl`` needs, so the process is the one people run), in the
foreground (``-n``), and one ``[program:cN]`` per child with ``autorestart=true
startsecs=0`` (the fastest sane restart: the child counts as started at once).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from bench import procs
from bench.install import Installer, InstallError
from bench.supervisors.base import Config, Running, Supervisor, Workload

__all__ = ["Supervisord"]

_HEADER = """\
[unix_http_server]
file=%(here)s/supervisor.sock

[supervisord]
nodaemon=true
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s/childlogs

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock
"""

_PROGRAM = """
[program:{name}]
command={stamp} {stamps}
autostart=true
autorestart=true
startsecs=0
"""


class Supervisord(Supervisor):
    name = "supervisord"
    restart_setting = "autorestart=true startsecs=0"

    def __init__(self, peers_dir: Path) -> None:
        self.venv = peers_dir / "venv"
        self.binary = self.venv / "bin" / "supervisord"

    def ensure(self, installer: Installer) -> str | None:
        if self.binary.exists():
            return None
        try:
            installer.venv_pip(self.venv, "supervisor")
        except InstallError as exc:
            return f"supervisord: {exc}"
        return None if self.binary.exists() else f"pip left no {self.binary}"

    def version(self) -> str:
        if not self.binary.exists():
            return "not installed"
        done = subprocess.run(
            [str(self.binary), "--version"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() or "unknown"

    def _conf(self, workload: Workload, indices: range) -> str:
        programs = "".join(
            _PROGRAM.format(
                name=workload.name(i), stamp=workload.stamp, stamps=workload.stamps_file
            )
            for i in indices
        )
        return _HEADER + programs

    def prepare(self, workload: Workload) -> Config:
        (workload.run_dir / "childlogs").mkdir(parents=True, exist_ok=True)
        conf = workload.run_dir / "supervisord.conf"
        conf.write_text(self._conf(workload, range(workload.n)))
        shown = (
            self._conf(workload, range(1))
            + f"\n# ... and so on up to [program:c{workload.n - 1}]\n"
        )
        return Config(
            command=[str(self.binary), "-n", "-c", str(conf)],
            files={"supervisord.conf": shown},
            notes=["stop: SIGTERM to supervisord (it stops every program, then exits)"],
        )

    def start(self, workload: Workload) -> Running:
        conf = workload.run_dir / "supervisord.conf"
        log = workload.run_dir / "supervisord.out"
        proc = procs.spawn([str(self.binary), "-n", "-c", str(conf)], cwd=workload.run_dir, log=log)
        return Running(proc, workload, log, stop_signal=signal.SIGTERM)
