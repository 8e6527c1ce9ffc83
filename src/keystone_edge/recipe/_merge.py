"""Deep merge of plain data: how imports and config layers combine.

Rules (deterministic, and the same for recipe imports and config layering):

- tables merge key by key, recursively;
- any other value from the later document replaces the earlier one: arrays are replaced
  whole, never concatenated (a list of artifacts or args is one value to its author);
- a table replaced by a non-table (or the reverse) takes the later value.

The result is a new structure: neither input is changed, and the result shares no table
or array with them, so callers may mutate it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["deep_merge"]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged onto ``base`` (see the module rules)."""
    out: dict[str, Any] = {key: _copy(value) for key, value in base.items()}
    for key, value in override.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = _copy(value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
