"""The supervisors the bench can drive: KeyStone and its peers."""

from __future__ import annotations

from pathlib import Path

from bench.supervisors.base import Config, Running, Supervisor, Workload
from bench.supervisors.keystone import ApplyMode, KeyStone, KeyStoneRunning
from bench.supervisors.runit import Runit
from bench.supervisors.s6 import S6
from bench.supervisors.supervisord import Supervisord

__all__ = [
    "PEER_NAMES",
    "ApplyMode",
    "Config",
    "KeyStone",
    "KeyStoneRunning",
    "Running",
    "Supervisor",
    "Workload",
    "peers",
]

PEER_NAMES = ("runit", "s6", "supervisord")


def peers(peers_dir: Path) -> dict[str, Supervisor]:
    return {"runit": Runit(peers_dir), "s6": S6(), "supervisord": Supervisord(peers_dir)}
