"""What every suite gets: the options, the workload binary, a scratch directory, a logger."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.install import Installer
from bench.stamps import StampLog
from bench.supervisors import ApplyMode, Workload

__all__ = ["BENCH_DIR", "Context", "Options"]

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Options:
    """Sizes and durations of one bench run (``--smoke`` shrinks them)."""

    ns: tuple[int, ...] = (10, 100)
    trials: int = 5  # cold starts per configuration (the last one stays up for the rest)
    kills: int = 20  # kill -9 per configuration for restart latency
    kill_spacing: float = 1.5  # seconds between kills: longer than every backoff reset
    settle: float = 3.0  # seconds after the cold start before memory is read
    idle: float = 30.0  # idle CPU window, seconds (supervisors suite)
    agent_idle: float = 60.0  # idle CPU window, seconds (agent suite)
    start_timeout: float = 60.0  # seconds for all N children to stamp
    keystone_apply: ApplyMode = "api"
    smoke: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Context:
    options: Options
    stamp: Path  # the compiled workload
    workdir: Path  # scratch space for this bench run
    installer: Installer
    peers_dir: Path
    only: tuple[str, ...] = ()  # supervisors to run (empty: all)
    log: Callable[[str], None] = _log
    _runs: int = field(default=0, init=False)

    def new_workload(self, label: str, n: int) -> tuple[Workload, StampLog]:
        """A fresh run directory with an empty stamps file, and a reader for it.

        Names stay short: the agent's API socket lives three levels below, and a Unix
        socket path is limited to 107 bytes.
        """
        self._runs += 1
        run_dir = self.workdir / f"{self._runs:02d}-{label}{n}"
        run_dir.mkdir(parents=True)
        workload = Workload(
            n=n, stamp=self.stamp, stamps_file=run_dir / "stamps.log", run_dir=run_dir
        )
        return workload, StampLog(workload.stamps_file)

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only
