"""Runners: how a component's processes are started, stopped and logged.

:class:`Runner` is the plug point (a container runner will sit beside
:class:`ProcessRunner`); :mod:`.logfile` captures output with bounded rotation.
"""

from keystone_edge.runners.base import (
    ExitStatus,
    LaunchSpec,
    ProcessHandle,
    Runner,
    ScriptResult,
    ScriptSpec,
    split_run_as,
)
from keystone_edge.runners.logfile import LogStream, RotatingLog, follow, tail
from keystone_edge.runners.process import (
    Identity,
    Process,
    ProcessRunner,
    install_child_watcher,
    resolve_run_as,
)

__all__ = [
    "ExitStatus",
    "Identity",
    "LaunchSpec",
    "LogStream",
    "Process",
    "ProcessHandle",
    "ProcessRunner",
    "RotatingLog",
    "Runner",
    "ScriptResult",
    "ScriptSpec",
    "follow",
    "install_child_watcher",
    "resolve_run_as",
    "split_run_as",
    "tail",
]
