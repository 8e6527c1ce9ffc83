"""Reading the documents operators write (recipes, deployments, agent config) into models.

Rules this module enforces, for every kind of document:

- **Format by extension**: ``.toml`` is TOML (stdlib ``tomllib``), ``.yaml``/``.yml`` is
  YAML (PyYAML's safe loader, the C one when available; imported only when a YAML file is
  read, to keep it out of the agent's resident memory otherwise), ``.json`` is JSON.
  Syntax errors name the file and, where the parser reports it, the line.
- **Plain data only**: the top level is a table; keys are strings (YAML turns ``on``/``yes``
  keys into booleans: those are reported); values are strings, numbers, booleans, arrays,
  tables and TOML/YAML dates. Nesting deeper than :data:`MAX_DEPTH` is refused, and so is a
  YAML alias that makes two places share one table or array (a cycle or a "billion laughs"
  document would otherwise make every later walk explode). Duplicate keys are errors in
  YAML and JSON, as they are in TOML.
- **Every problem at once**: :func:`validate` walks the whole document against a msgspec
  Struct and collects unknown keys (with a "did you mean" from the model's field names),
  missing required keys, wrong types and bad values; :func:`decode` raises one error
  listing them all, then converts with ``msgspec.convert`` (durations and sizes through
  :func:`dec_hook`). There is no null: a ``null`` where the model expects a value is an
  error (leave the key out instead); only free-form data (``dict[str, Any]``) may hold one.
- **Key paths** are dotted, list indices in brackets: ``lifecycle.run.health.interval``,
  ``artifacts[0].uri``; keys that are not bare TOML keys are quoted:
  ``components."com.example.hello".version``.
- **Lines**: YAML lines come from the composed node tree; TOML lines from a small scan of
  the text (table headers ``[a.b]``/``[[a]]`` and ``key =`` lines, dotted keys included);
  JSON, best effort, through the YAML composer (JSON is YAML). A path with no line of its
  own reports the line of the nearest enclosing key that has one.

Errors are built by the caller's error class (``RecipeError``, ``DeploymentError``, ...),
which must accept ``message, *, file, key, line, problems`` (:class:`ErrorType`).
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, Union

import msgspec

from keystone_edge.errors import KeyStoneError
from keystone_edge.units import Duration, Size

__all__ = [
    "MAX_DEPTH",
    "ErrorType",
    "Format",
    "KeyPath",
    "Location",
    "Locator",
    "Problem",
    "Source",
    "camel_case",
    "check_plain",
    "combine_errors",
    "dec_hook",
    "decode",
    "describe",
    "enc_hook",
    "errors_for",
    "format_for",
    "format_key",
    "parse_document",
    "prune_point",
    "read_document",
    "suggest",
    "to_builtins",
    "validate",
    "without",
]

KeyPath = tuple[str | int, ...]
Format = Literal["toml", "yaml", "json"]

E = TypeVar("E", bound=KeyStoneError)
T = TypeVar("T")

# Deep enough for any sane recipe or config (a recipe's own schema is ~6 levels); shallow
# enough that every recursive walk below stays far from Python's recursion limit.
MAX_DEPTH = 64

_EXTENSIONS: dict[str, Format] = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_SCALARS = (str, int, float, bool, datetime.date, datetime.time)


class ErrorType(Protocol[E]):
    """An error class that can report a located problem, or several at once."""

    def __call__(
        self,
        message: str,
        *,
        file: str | None = ...,
        key: str | None = ...,
        line: int | None = ...,
        problems: Sequence[E] = ...,
    ) -> E: ...


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a document: where (a key path in the model's terms) and what.

    ``key`` is set when the problem is about one key of the table at ``path`` that is not
    a model field (an unknown or repeated key): it is reported against the table, at the
    line of the key itself.
    """

    path: KeyPath
    message: str
    key: str | None = None

    @property
    def at(self) -> KeyPath:
        """The key path whose line to report."""
        return self.path if self.key is None else (*self.path, self.key)


@dataclass(frozen=True, slots=True)
class Location:
    file: str | None
    key: str
    line: int | None


class Locator(Protocol):
    """Turns model key paths into what the author sees: file, key as written, line."""

    def locate(self, path: KeyPath) -> Location: ...

    def spell(self, path: KeyPath, name: str) -> str:
        """How the model field ``name`` of the table at ``path`` is written by the author."""
        ...


def format_key(path: KeyPath) -> str:
    """``("artifacts", 0, "uri")`` -> ``artifacts[0].uri``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{text}" if out else text
    return out


def format_for(path: Path) -> Format | None:
    return _EXTENSIONS.get(path.suffix.lower())


def describe(value: Any) -> str:
    """A short description of a value for error messages: ``integer 5``, ``string 'x'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}" if len(str(value)) <= 40 else "a (very long) integer"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime):
        return f"date-time {value.isoformat()}"
    if isinstance(value, datetime.date):
        return f"date {value.isoformat()}"
    if isinstance(value, datetime.time):
        return f"time {value.isoformat()}"
    return type(value).__name__


def suggest(word: str, choices: Sequence[str]) -> str | None:
    """The closest of ``choices`` to a misspelled ``word``, if one is close enough."""
    import difflib  # only when something is misspelled

    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --------------------------------------------------------------------------- sources


@dataclass(eq=False)
class Source:
    """One parsed document, and how to point at places in it.

    ``aliases`` maps model key paths to the paths as written, for documents whose author
    form differs from the model's (the seed's YAML recipe form, moved keys); ``camel``
    says that model field names are written in camelCase there.
    """

    name: str
    data: dict[str, Any]
    path: Path | None = None
    format: Format | None = None
    text: str | None = None
    aliases: dict[KeyPath, KeyPath] = field(default_factory=dict)
    camel: bool = False
    _lines: dict[KeyPath, int] | None = field(default=None, repr=False)

    def written_path(self, path: KeyPath) -> KeyPath:
        """The path as the author wrote it (longest aliased prefix, then the rest as is)."""
        if self.aliases:
            for cut in range(len(path), 0, -1):
                alias = self.aliases.get(path[:cut])
                if alias is not None:
                    return alias + path[cut:]
        return path

    def line_of(self, written: KeyPath) -> int | None:
        """Line of a written key path, else of its nearest enclosing key; None if unknown."""
        if self._lines is None:
            self._lines = _index_lines(self.text, self.format)
        for cut in range(len(written), 0, -1):
            line = self._lines.get(written[:cut])
            if line is not None:
                return line
        return None

    def locate(self, path: KeyPath) -> Location:
        written = self.written_path(path)
        return Location(self.name, format_key(written), self.line_of(written))

    def spell(self, path: KeyPath, name: str) -> str:
        alias = self.aliases.get((*path, name))
        if alias and isinstance(alias[-1], str):
            return alias[-1]
        return camel_case(name) if self.camel else name


def camel_case(name: str) -> str:
    """``failure_threshold`` -> ``failureThreshold``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def read_document(path: Path, error: ErrorType[E], *, name: str | None = None) -> Source:
    """Read and parse ``path`` (format by extension) into a :class:`Source`."""
    shown = name if name is not None else str(path)
    fmt = format_for(path)
    if fmt is None:
        raise error(
            f"unsupported file type {path.suffix or '(none)'!r}: "
            "expected .toml, .yaml, .yml or .json",
            file=shown,
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error("no such file", file=shown) from None
    except IsADirectoryError:
        raise error("is a directory, not a file", file=shown) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", file=shown) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error("not valid UTF-8 text", file=shown, line=line) from exc
    return parse_document(text, fmt, error, name=shown, path=path)


def parse_document(
    text: str, fmt: Format, error: ErrorType[E], *, name: str, path: Path | None = None
) -> Source:
    """Parse ``text`` as ``fmt``; the result's data is checked to be plain data."""
    if text.startswith("\ufeff"):  # a BOM some editors write; not part of the document
        text = text[1:]
    try:
        if fmt == "toml":
            data: Any = _parse_toml(text)
        elif fmt == "yaml":
            data = _parse_yaml(text)
        else:
            data = _parse_json(text)
    except _ParseError as exc:
        raise error(exc.message, file=name, line=exc.line) from exc.__cause__
    except RecursionError:
        raise error(f"nested too deeply (more than {MAX_DEPTH} levels)", file=name) from None
    source = Source(name=name, data={}, path=path, format=fmt, text=text)
    if data is None and fmt == "yaml":
        data = {}  # an empty YAML file is an empty table, as an empty TOML file is
    if not isinstance(data, dict):
        raise error(f"expected a table at the top level, got {describe(data)}", file=name)
    problems = check_plain(data)
    if problems:
        raise combine_errors(errors_for(problems, source, error), error, file=name)
    source.data = data
    return source


class _ParseError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_WHERE.search(message)
        line = None
        if match:
            message = f"{message[: match.start()]} (column {match.group(2)})"
            line = int(match.group(1))
        message = message.replace(" (at end of document)", " (at the end of the file)")
        message = message[:1].lower() + message[1:]
        raise _ParseError(f"invalid TOML: {message}", line) from exc


@functools.cache
def _yaml_loader() -> Any:
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc]
        """The safe loader, refusing duplicate keys (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[str] = set()
            for key_node, _value in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                        )
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

    return Loader


def _parse_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context})"
        raise _ParseError(f"invalid YAML: {what}", mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise _ParseError(f"invalid YAML: {exc}", None) from exc


def _parse_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _ParseError(f"invalid JSON: duplicate key {key!r}", None)
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise _ParseError(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from exc


def check_plain(data: Any) -> list[Problem]:
    """Problems that make ``data`` something other than plain document data (see rules)."""
    problems: list[Problem] = []
    _check_plain(data, (), 0, set(), problems)
    return problems


def _check_plain(value: Any, path: KeyPath, depth: int, seen: set[int], out: list[Problem]) -> None:
    if depth > MAX_DEPTH:
        out.append(Problem(path, f"nested too deeply (more than {MAX_DEPTH} levels)"))
        return
    if isinstance(value, dict | list):
        # Only a YAML alias can make two places hold the same table or array.
        if id(value) in seen:
            out.append(
                Problem(
                    path,
                    "a YAML alias repeats a table or array here; write it out "
                    "(or share it through imports)",
                )
            )
            return
        seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                hint = " (YAML reads on/off/yes/no as booleans: quote the key)"
                out.append(
                    Problem(
                        path,
                        f"key {key!r} is not a string" + (hint if isinstance(key, bool) else ""),
                    )
                )
                continue
            _check_plain(item, (*path, key), depth + 1, seen, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, (*path, index), depth + 1, seen, out)
    elif value is not None and not isinstance(value, _PLAIN_SCALARS):
        out.append(Problem(path, f"unsupported value of type {type(value).__name__}"))


# --------------------------------------------------------------------------- lines


def _index_lines(text: str | None, fmt: Format | None) -> dict[KeyPath, int]:
    if text is None or fmt is None:
        return {}
    try:
        if fmt == "toml":
            return _toml_lines(text)
        return _yaml_lines(text)  # JSON is YAML for this purpose
    except Exception:  # noqa: BLE001 - lines are best effort: never hide the real problem
        return {}


def _yaml_lines(text: str) -> dict[KeyPath, int]:
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    root = yaml.compose(text, Loader=loader)
    lines: dict[KeyPath, int] = {}

    def walk(node: Any, path: KeyPath, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    sub = (*path, key_node.value)
                    lines.setdefault(sub, key_node.start_mark.line + 1)
                    walk(value_node, sub, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                sub = (*path, index)
                lines.setdefault(sub, item.start_mark.line + 1)
                walk(item, sub, depth + 1)

    walk(root, (), 0)
    return lines


class _TomlScanner:
    """Finds the line of every table header and key in a TOML text that parsed.

    Only top-level statements are read; values (strings, arrays, inline tables) are
    skipped, multi-line ones included, so that a line inside a script is never taken
    for a key.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def advance(self, n: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def skip_blank(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        arrays: dict[KeyPath, int] = {}  # array-of-tables path -> index of its last element
        while self.pos < len(self.text):
            self.skip_blank()
            char = self.peek()
            if char == "":
                break
            if char in "\r\n":
                self.advance()
            elif char == "#":
                self.skip_comment()
            elif char == "[":
                is_array = self.peek(2) == "[["
                self.pos += 2 if is_array else 1
                keys = self.read_key()
                self.skip_blank()
                self.pos += 2 if is_array else 1
                line = self.line
                parent = self.resolve(keys[:-1], arrays)
                for cut in range(1, len(parent) + 1):
                    self.lines.setdefault(parent[:cut], line)
                path = (*parent, keys[-1])
                if is_array:
                    index = arrays.get(path, -1) + 1
                    arrays[path] = index
                    self.lines.setdefault(path, line)
                    table = (*path, index)
                else:
                    table = self.resolve(keys, arrays)
                self.lines.setdefault(table, line)
                self.skip_line_rest()
            else:
                line = self.line
                keys = self.read_key()
                for cut in range(1, len(keys) + 1):
                    self.lines.setdefault((*table, *keys[:cut]), line)
                self.skip_blank()
                if self.peek() != "=":
                    break  # not TOML we understand: keep what we have
                self.pos += 1
                self.skip_value()
        return self.lines

    @staticmethod
    def resolve(keys: Sequence[str], arrays: Mapping[KeyPath, int]) -> KeyPath:
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in arrays:
                path = (*path, arrays[path])
        return path

    def read_key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_blank()
            char = self.peek()
            if char == '"':
                keys.append(self.read_basic_string())
            elif char == "'":
                end = self.text.index("'", self.pos + 1)
                keys.append(self.text[self.pos + 1 : end])
                self.pos = end + 1
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise ValueError("not a key")
                keys.append(match.group())
                self.pos = match.end()
            self.skip_blank()
            if self.peek() != ".":
                return keys
            self.pos += 1

    def read_basic_string(self) -> str:
        end = self.pos + 1
        while self.text[end] != '"':
            end += 2 if self.text[end] == "\\" else 1
        raw = self.text[self.pos : end + 1]
        self.pos = end + 1
        return str(tomllib.loads(f"k = {raw}")["k"])

    def skip_line_rest(self) -> None:
        self.skip_blank()
        if self.peek() == "#":
            self.skip_comment()

    def skip_value(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            if self.peek(3) in ('"""', "'''"):
                self.skip_multiline_string(self.peek(3))
                continue
            char = self.peek()
            if char == '"':
                self.read_basic_string()
            elif char == "'":
                self.pos = self.text.index("'", self.pos + 1) + 1
            elif char == "#":
                self.skip_comment()
            elif char in "[{":
                depth += 1
                self.pos += 1
            elif char in "]}":
                depth -= 1
                self.pos += 1
            elif char == "\n":
                self.advance()
                if depth <= 0:
                    return
            else:
                self.pos += 1

    def skip_multiline_string(self, quote: str) -> None:
        pos = self.pos + 3
        while True:
            if quote == '"""' and self.text[pos] == "\\":
                pos += 2
                continue
            if self.text.startswith(quote, pos):
                # In a run of 4 or 5 quotes the first ones belong to the string.
                run = 3
                while run < 5 and self.text[pos + run : pos + run + 1] == quote[0]:
                    run += 1
                pos += run
                break
            pos += 1
        self.advance(pos - self.pos)


def _toml_lines(text: str) -> dict[KeyPath, int]:
    return _TomlScanner(text).scan()


# --------------------------------------------------------------------------- validation


def dec_hook(type_: type, value: Any) -> Any:
    """msgspec decoding of the types msgspec does not know: durations and sizes."""
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Size:
        return Size.parse(value)
    raise NotImplementedError(f"cannot decode {type_!r}")


def enc_hook(value: Any) -> Any:
    """msgspec encoding of durations and sizes: the text the author wrote."""
    if isinstance(value, Duration | Size):
        return value.text
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def to_builtins(obj: Any) -> Any:
    """A model as plain data (durations and sizes as their text)."""
    return msgspec.to_builtins(obj, enc_hook=enc_hook)


def validate(
    data: Any,
    type_: Any,
    *,
    path: KeyPath = (),
    spell: Callable[[KeyPath, str], str] | None = None,
) -> list[Problem]:
    """Every problem of ``data`` as an instance of ``type_``, in document order.

    ``spell(table_path, field)`` says how a model field is written by the author (for
    "did you mean" and "missing key" messages).
    """
    problems: list[Problem] = []
    _Validator(spell or (lambda _path, name: name), problems).check(data, type_, path)
    return problems


def decode(data: Any, type_: type[T], locator: Locator, error: ErrorType[E]) -> T:
    """Validate then convert ``data`` to ``type_``; all problems in one raised error."""
    problems = validate(data, type_, spell=locator.spell)
    if problems:
        raise combine_errors(errors_for(problems, locator, error), error)
    try:
        return msgspec.convert(data, type_, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        # validate() mirrors msgspec's rules; this is the safety net if they ever diverge.
        problem = _problem_from_msgspec(str(exc))
        raise combine_errors(errors_for([problem], locator, error), error) from exc


def errors_for(problems: Sequence[Problem], locator: Locator, error: ErrorType[E]) -> list[E]:
    """One located error per problem (duplicates dropped, order kept)."""
    out: list[E] = []
    seen: set[tuple[str | None, str, str]] = set()
    for problem in problems:
        where = locator.locate(problem.path)
        at = where if problem.key is None else locator.locate(problem.at)
        ident = (at.file, where.key, problem.message)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(error(problem.message, file=at.file, key=where.key or None, line=at.line))
    return out


def combine_errors(errors: Sequence[E], error: ErrorType[E], *, file: str | None = None) -> E:
    """One error for many: the only one, or one whose ``problems`` list them all."""
    flat: list[E] = []
    for exc in errors:
        nested: Sequence[E] = getattr(exc, "problems", ())
        flat.extend(nested or (exc,))
    if len(flat) == 1:
        return flat[0]
    if file is None:
        files = {getattr(exc, "file", None) for exc in flat}
        file = files.pop() if len(files) == 1 else None
    return error(f"{len(flat)} problems", file=file, problems=flat)


def prune_point(type_: Any, path: KeyPath) -> KeyPath | None:
    """The nearest enclosing optional field of ``path`` in the model ``type_``, or None.

    Leaving that field out drops the bad value at ``path`` and still converts: this is how
    a loader checks the rest of a document that has problems in one place. List items are
    never dropped alone (the indices of the others would shift), their field is.
    """
    best: KeyPath | None = None
    current = type_
    for depth, part in enumerate(path):
        base = _strip_optional(_strip_annotated(current))
        origin = typing.get_origin(base)
        args = typing.get_args(base)
        if isinstance(base, type) and issubclass(base, msgspec.Struct):
            info = next((f for f in msgspec.structs.fields(base) if f.encode_name == part), None)
            if info is None:
                break
            if not info.required:
                best = path[: depth + 1]
            current = info.type
        elif origin is list and args and isinstance(part, int):
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        else:
            break
    return best


def without(data: Mapping[str, Any], paths: Iterable[KeyPath]) -> dict[str, Any]:
    """A copy of ``data`` with the values at ``paths`` left out (missing paths ignored)."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for path in sorted(set(paths), key=len, reverse=True):
        node: Any = out
        for part in path[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if path and isinstance(node, dict):
                node.pop(path[-1], None)
    return out


class _Validator:
    def __init__(self, spell: Callable[[KeyPath, str], str], out: list[Problem]) -> None:
        self.spell = spell
        self.out = out

    def add(self, path: KeyPath, message: str, key: str | None = None) -> None:
        self.out.append(Problem(path, message, key))

    def check(self, value: Any, type_: Any, path: KeyPath) -> None:
        base = _strip_annotated(type_)
        if base is Any:
            return
        if value is None:
            self.add(path, "null is not allowed: leave the key out to mean 'not set'")
            return
        base = _strip_optional(base)
        if isinstance(base, type) and issubclass(base, msgspec.Struct):
            self.check_struct(value, base, path)
            return
        origin = typing.get_origin(base)
        args = typing.get_args(base)
        if origin is list and args:
            if not isinstance(value, list):
                self.add(path, f"expected an array, got {describe(value)}")
                return
            for index, item in enumerate(value):
                self.check(item, args[0], (*path, index))
            return
        if origin is dict and len(args) == 2:
            if not isinstance(value, dict):
                self.add(path, f"expected a table, got {describe(value)}")
                return
            for key, item in value.items():
                self.check_leaf(key, args[0], (*path, key), what="key")
                self.check(item, args[1], (*path, key))
            return
        self.check_leaf(value, type_, path)

    def check_struct(self, value: Any, struct: type[msgspec.Struct], path: KeyPath) -> None:
        if not isinstance(value, dict):
            self.add(path, f"expected a table, got {describe(value)}")
            return
        fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
        for key, item in value.items():
            info = fields.get(key)
            if info is None:
                spelled = [self.spell(path, name) for name in fields]
                written = self.spell(path, key)
                close = suggest(written, spelled)
                hint = f" (did you mean `{close}`?)" if close else ""
                self.add(path, f"unknown key `{written}`{hint}", key=key)
            else:
                self.check(item, info.type, (*path, key))
        for name, info in fields.items():
            if info.required and name not in value:
                self.add(path, f"missing required key `{self.spell(path, name)}`")

    def check_leaf(self, value: Any, type_: Any, path: KeyPath, what: str = "value") -> None:
        try:
            msgspec.convert(value, type_, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            message = _humanize(str(exc), type_, value)
            self.add(path, f"invalid key {value!r}: {message}" if what == "key" else message)
        except (OverflowError, RecursionError) as exc:
            self.add(path, f"invalid value: {exc}")


def _strip_annotated(type_: Any) -> Any:
    while typing.get_origin(type_) is typing.Annotated:
        type_ = typing.get_args(type_)[0]
    return type_


def _strip_optional(type_: Any) -> Any:
    if typing.get_origin(type_) in (Union, types.UnionType):
        args = [a for a in typing.get_args(type_) if a is not type(None)]
        if len(args) == 1:
            return _strip_annotated(args[0])
    return type_


_MSGSPEC_WHERE = re.compile(
    r"^(?P<msg>.*?)(?: - at `(?P<at>[^`]*)`(?: in `(?P<in>[^`]*)`)?)?$", re.S
)
_MSGSPEC_EXPECTED = re.compile(
    r"^Expected `(?P<type>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rest>.*)$", re.S
)
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "array": "an array",
    "object": "a table",
    "null": "null",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


def _metas(type_: Any) -> Iterator[msgspec.Meta]:
    """The ``msgspec.Meta`` constraints of an annotation (through ``X | None``)."""
    if typing.get_origin(type_) is typing.Annotated:
        yield from (m for m in type_.__metadata__ if isinstance(m, msgspec.Meta))
        yield from _metas(typing.get_args(type_)[0])
    elif typing.get_origin(type_) in (Union, types.UnionType):
        for arg in typing.get_args(type_):
            yield from _metas(arg)


def _humanize(message: str, type_: Any, value: Any) -> str:
    """msgspec's validation message, reworded for someone editing a TOML file."""
    match = _MSGSPEC_WHERE.match(message)
    text = match.group("msg") if match else message
    base = _strip_optional(_strip_annotated(type_))
    if text.startswith("Invalid enum value") and typing.get_origin(base) is Literal:
        choices = ", ".join(repr(c) for c in typing.get_args(base))
        return f"invalid value {value!r}: expected one of {choices}"
    expected = _MSGSPEC_EXPECTED.match(text)
    if expected is None:
        return text  # already ours (durations, sizes) or already plain
    # "int | null" for an optional field: null is never accepted, so leave it unsaid.
    names = [n for n in expected.group("type").split(" | ") if n != "null"]
    want = " or ".join(_TYPE_NAMES.get(n, f"`{n}`") for n in names)
    rest = expected.group("rest").strip()
    if rest.startswith("matching regex"):
        # The model describes its patterns (Meta.description); a regex is a poor message.
        described = next((m.description for m in _metas(type_) if m.pattern), None)
        if described:
            return f"expected {described}, got {describe(value)}"
    if rest:
        want = f"{want} {rest}"
    return f"expected {want}, got {describe(value)}"


def _problem_from_msgspec(message: str) -> Problem:
    match = _MSGSPEC_WHERE.match(message)
    path: KeyPath = ()
    text = message
    if match:
        text = match.group("msg")
        at = match.group("in") or match.group("at") or "$"
        path = tuple(_walk_msgspec_path(at))
    return Problem(path, text[:1].lower() + text[1:])


def _walk_msgspec_path(at: str) -> Iterator[str | int]:
    for part in re.finditer(r"\.([^.\[]+)|\[(\d+)\]", at.removeprefix("$")):
        if part.group(1) is not None:
            yield part.group(1)
        else:
            yield int(part.group(2))
