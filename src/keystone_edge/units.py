"""Durations and sizes as recipes, deployments and agent config write them.

Rules (strict on purpose: a typo in a timeout must not silently become zero):

- A duration is a string of one or more ``<number><unit>`` terms, units in decreasing
  order and each at most once: ``"500ms"``, ``"10s"``, ``"1h30m"``, ``"1.5s"``. Units are
  ``d h m s ms us``. ``"0"`` alone means zero. Bare numbers, negative values, spaces and
  unknown units are errors.
- A size is a non-negative integer number of bytes, or a string ``<number><unit>`` with
  units ``B``, decimal ``K M G T`` (also ``KB MB GB TB``) or binary ``Ki Mi Gi Ti``:
  ``"128Mi"``, ``"1G"``, ``"512"``.

Both parse into float/int subclasses so arithmetic just works, and remember the text they
came from so that rendering a recipe shows what the author wrote.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

__all__ = ["Duration", "Size", "parse_duration", "parse_size"]

_DURATION_UNITS: dict[str, float] = {
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
}
_DURATION_ORDER = list(_DURATION_UNITS)
# ASCII digits only: ``\d`` would also accept other scripts' digits, which float() reads.
_DURATION_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|us|d|h|m|s)", re.ASCII)

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]*)", re.ASCII)
# Largest size accepted: what a signed 64-bit field (SQLite, cgroup files) can hold.
_SIZE_MAX = 2**63 - 1


class Duration(float):
    """A non-negative duration in seconds that remembers how it was written."""

    text: str

    def __new__(cls, seconds: float, text: str | None = None) -> Duration:
        self = super().__new__(cls, seconds)
        self.text = text if text is not None else _format_duration(float(seconds))
        return self

    @classmethod
    def parse(cls, value: Any) -> Duration:
        return parse_duration(value)

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:
        return (Duration, (float(self), self.text))


class Size(int):
    """A non-negative size in bytes that remembers how it was written."""

    text: str

    def __new__(cls, nbytes: int, text: str | None = None) -> Size:
        self = super().__new__(cls, nbytes)
        self.text = text if text is not None else _format_size(int(nbytes))
        return self

    @classmethod
    def parse(cls, value: Any) -> Size:
        return parse_size(value)

    def __repr__(self) -> str:
        return f"Size({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:
        return (Size, (int(self), self.text))


def parse_duration(value: Any) -> Duration:
    """Parse a duration string; raise ``ValueError``/``TypeError`` saying what was expected."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise TypeError(
            f"expected a duration string such as '500ms', '10s' or '1h30m', "
            f"got {type(value).__name__} {value!r}"
        )
    if value == "0":
        return Duration(0.0, value)
    pos = 0
    total = 0.0
    last_rank = -1
    while pos < len(value):
        match = _DURATION_TERM.match(value, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {value!r}: expected terms like '500ms', '10s' or '1h30m' "
                f"(units: {', '.join(_DURATION_ORDER)})"
            )
        number, unit = match.groups()
        rank = _DURATION_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"invalid duration {value!r}: units must appear once each, largest first"
            )
        last_rank = rank
        total += float(number) * _DURATION_UNITS[unit]
        pos = match.end()
    if not value:
        raise ValueError("invalid duration '': expected a value such as '10s'")
    if not math.isfinite(total):
        raise ValueError(f"invalid duration {value!r}: too large")
    return Duration(total, value)


def parse_size(value: Any) -> Size:
    """Parse a size; raise ``ValueError``/``TypeError`` saying what was expected."""
    if isinstance(value, Size):
        return value
    if isinstance(value, bool):
        raise TypeError(f"expected a size such as '128Mi' or '1G', got bool {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        if value > _SIZE_MAX:
            raise ValueError(f"invalid size {value}: too large")
        return Size(value, str(value))
    if not isinstance(value, str):
        raise TypeError(
            f"expected a size such as '128Mi' or '1G', got {type(value).__name__} {value!r}"
        )
    match = _SIZE_RE.fullmatch(value)
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {value!r}: expected a number with an optional unit "
            f"(B, K, M, G, T, KB, MB, GB, TB, Ki, Mi, Gi, Ti), such as '128Mi' or '1G'"
        )
    number, unit = match.groups()
    # Exact arithmetic: a float would overflow on long digit strings and round
    # "1.0000000000000001K" to a whole number of bytes.
    nbytes = Fraction(number) * _SIZE_UNITS[unit]
    if nbytes.denominator != 1:
        raise ValueError(f"invalid size {value!r}: not a whole number of bytes")
    if nbytes > _SIZE_MAX:
        raise ValueError(f"invalid size {value!r}: too large")
    return Size(int(nbytes), value)


def _format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}us"
    parts: list[str] = []
    rest = seconds
    for unit in ("d", "h", "m"):
        whole = int(rest // _DURATION_UNITS[unit])
        if whole:
            parts.append(f"{whole}{unit}")
            rest -= whole * _DURATION_UNITS[unit]
    if rest or not parts:
        parts.append(f"{round(rest, 6):g}s")
    return "".join(parts)


def _format_size(nbytes: int) -> str:
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if nbytes and nbytes % _SIZE_UNITS[unit] == 0:
            return f"{nbytes // _SIZE_UNITS[unit]}{unit}"
    return str(nbytes)
