"""The registry of benchmark suites: ``python -m bench --suite NAME``.

A suite is a module with a ``SUITE`` object that has ``name``, ``summary`` and
``run(ctx) -> SuiteResult``. To add one (download throughput, scrape cost, isolation
overhead, a 10-component chain with health probes...): write ``bench/suites/<name>.py``,
add one line to :data:`REGISTRY`, print each figure next to its goal with
:class:`bench.report.Goal`. Suites are imported only when selected, so a suite that needs
something unusual costs the others nothing.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from bench.context import Context
from bench.report import SuiteResult

__all__ = ["REGISTRY", "Suite", "load"]

# name -> module; "all" runs them in this order.
REGISTRY: dict[str, str] = {
    "supervisors": "bench.suites.supervisors",  # issue 7: KeyStone vs supervisord, runit, s6
    "agent": "bench.suites.agent",  # issue 3: the agent runtime's own figures
}


class Suite(Protocol):
    name: str
    summary: str

    def run(self, ctx: Context) -> SuiteResult: ...


def load(name: str) -> Suite:
    if name not in REGISTRY:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(REGISTRY)}")
    return cast("Suite", importlib.import_module(REGISTRY[name]).SUITE)
