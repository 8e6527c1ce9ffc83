"""An optional PNG of restart latency distributions, when matplotlib happens to be there.

The bench never installs matplotlib; without it there is simply no plot.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["plot_restart_latency"]


def plot_restart_latency(runs: list[dict[str, Any]], out: Path) -> Path | None:
    series = [
        (f"{r['supervisor']}\nN={r['n']}", r["restart_latency_ms"])
        for r in runs
        if r.get("restart_latency_ms")
    ]
    if not series:
        return None
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    fig, ax = pyplot.subplots(figsize=(max(6, 1.2 * len(series)), 4.5))
    ax.boxplot([s for _, s in series], labels=[label for label, _ in series], whis=(5, 95))
    ax.set_yscale("log")
    ax.set_ylabel("restart latency, ms (log scale)")
    ax.set_title("kill -9 of one child -> replacement's start stamp (whiskers p5-p95)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    pyplot.close(fig)
    return out
