"""A small TOML writer, for ``keystonectl recipe render``.

The standard library reads TOML but cannot write it. This writer covers what plain
recipe data holds: tables, arrays of tables, strings (multi-line ones as ``\"\"\"``
blocks, so scripts stay readable), integers, floats, booleans, dates and times, arrays
and inline tables inside arrays. ``tomllib.loads(dumps(data)) == data`` for all of it
(tested with generated data). TOML has no null: a ``None`` raises
:class:`TomlEncodeError`.

Layout: a table's plain keys come first, then its sub-tables, then its arrays of tables,
as TOML requires; a table's header is written only when it has plain keys or is empty.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["TomlEncodeError", "dumps"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


class TomlEncodeError(ValueError):
    """A value TOML cannot represent (null, or a type that is not plain data)."""


def dumps(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _table(data, (), lines, header=False)
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines) + "\n" if lines else ""


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(
    table: Mapping[str, Any], path: tuple[str, ...], out: list[str], *, header: bool
) -> None:
    plain = [
        (k, v) for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)
    ]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    if header and (plain or not (tables or arrays)):
        out.extend(("", f"[{_dotted(path)}]"))
    for key, value in plain:
        out.append(f"{_key(key)} = {_value(value, (*path, key))}")
    for key, value in tables:
        _table(value, (*path, key), out, header=True)
    for key, items in arrays:
        for item in items:
            out.extend(("", f"[[{_dotted((*path, key))}]]"))
            _table(item, (*path, key), out, header=False)


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TomlEncodeError(f"TOML keys are strings, got {key!r}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(part) for part in path)


def _string(text: str) -> str:
    return '"' + "".join(_escape(char) for char in text) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\u{ord(char):04x}"
    return char


def _multiline(text: str) -> str:
    body = ""
    for char in text:
        if char == "\n":
            body += "\n"
        elif char == "\t":
            body += "\t"
        elif char == '"':
            # Escape a quote that would start or extend a run of three.
            body += '\\"' if body.endswith('""') else '"'
        else:
            body += _escape(char)
    if body.endswith('"') and not body.endswith('\\"'):
        body = body[:-1] + '\\"'  # a final quote would merge with the closing delimiter
    # The newline right after the opening delimiter is dropped by readers.
    return f'"""\n{body}"""'


def _value(value: Any, path: tuple[str, ...]) -> str:
    if value is None:
        raise TomlEncodeError(f"TOML has no null (at {'.'.join(path)})")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _multiline(value) if "\n" in value else _string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item, path) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v, (*path, k))}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TomlEncodeError(f"cannot write {type(value).__name__} as TOML (at {'.'.join(path)})")
