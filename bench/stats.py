"""Summaries of repeated samples: median and p95 (nearest rank), plus min, max and count.

p95 is the nearest-rank percentile: the smallest sample with at least 95 % of the samples
at or below it. With fewer than 20 samples that is the maximum, which is what a reader
should expect from "p95 of 5 trials".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["percentile", "summarize"]


def percentile(samples: Sequence[float], pct: float) -> float:
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """``{"n", "median", "p95", "min", "max"}``; ``{"n": 0}`` when there are no samples."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p95": percentile(samples, 95.0),
        "min": min(samples),
        "max": max(samples),
    }
