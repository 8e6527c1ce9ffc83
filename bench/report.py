"""What a suite hands back, and how it is shown: tables, goals with PASS/MISS, notes.

A suite returns a :class:`SuiteResult`: ``data`` (JSON-able raw samples and summaries, as
the suite likes them), ``tables`` for stdout, ``goals`` checked against KeyStone's figures
and ``configurations`` (the exact command lines and files each supervisor ran with). The
runner prints the tables and writes everything to the results JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Goal", "SuiteResult", "Table", "fmt", "render_table"]

Status = Literal["PASS", "MISS", "N/A"]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]

    def render(self) -> str:
        return render_table(self.title, self.headers, self.rows)


@dataclass
class Goal:
    """A target for one of KeyStone's figures: ``value <op> target`` in ``unit``."""

    metric: str
    target: float
    unit: str
    value: float | None  # None: not measured in this run (e.g. a smoke run, a failure)
    op: Literal["<=", "<"] = "<="
    why_missing: str = ""

    @property
    def status(self) -> Status:
        if self.value is None or math.isnan(self.value):
            return "N/A"
        ok = self.value <= self.target if self.op == "<=" else self.value < self.target
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        shown = fmt(self.value) if self.value is not None else "-"
        goal = f"goal {self.op} {fmt(self.target)}"
        text = f"{self.status:4}  {self.metric}: {shown} {self.unit} ({goal})"
        if self.status == "N/A" and self.why_missing:
            text += f"  [{self.why_missing}]"
        if self.status == "MISS":
            text += "  <- KeyStone misses this goal"
        return text

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass
class SuiteResult:
    name: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    configurations: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "configurations": self.configurations,
            "skipped": self.skipped,
            "data": self.data,
            "goals": [g.as_json() for g in self.goals],
            "tables": [asdict(t) for t in self.tables],
            "notes": self.notes,
            "errors": self.errors,
        }


def fmt(value: float | None, digits: int = 3) -> str:
    """Three significant digits, plain notation (``0.000123``, ``1.39``, ``2140``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [title, line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)
