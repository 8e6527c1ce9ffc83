"""Reading documents: formats, syntax errors with lines, key paths, every problem at once."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from keystone_edge.deploy.document import DeploymentDocument, load_deployment
from keystone_edge.documents import (
    Problem,
    Source,
    combine_errors,
    decode,
    format_key,
    parse_document,
    prune_point,
    read_document,
    validate,
    without,
)
from keystone_edge.errors import DeploymentError, RecipeError
from keystone_edge.units import Duration, Size


class Probe(msgspec.Struct, forbid_unknown_fields=True):
    check: str
    interval: Duration = msgspec.field(default_factory=lambda: Duration.parse("10s"))
    failure_threshold: int = 3


class Item(msgspec.Struct, forbid_unknown_fields=True):
    uri: str
    size: Size | None = None


class Doc(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    mode: Literal["fast", "slow"] = "fast"
    probe: Probe | None = None
    items: list[Item] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path) -> Doc:
    source = read_document(path, RecipeError, name=path.name)
    return decode(source.data, Doc, source, RecipeError)


def messages(exc: RecipeError | DeploymentError) -> list[str]:
    return [p.reason for p in (exc.problems or (exc,))]


# ------------------------------------------------------------------ key paths and formats


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("lifecycle", "run", "health", "interval"), "lifecycle.run.health.interval"),
        (("artifacts", 0, "uri"), "artifacts[0].uri"),
        (("components", "com.example.hello", "version"), 'components."com.example.hello".version'),
        (("env", "with space"), 'env."with space"'),
        (("matrix", 1, 2), "matrix[1][2]"),
    ],
)
def test_key_paths_are_dotted_with_indices_and_quotes(path: tuple[Any, ...], text: str) -> None:
    assert format_key(path) == text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("doc.toml", 'name = "a"\n[probe]\ncheck = "cmd:true"\n'),
        ("doc.yaml", "name: a\nprobe:\n  check: cmd:true\n"),
        ("doc.yml", "name: a\nprobe: {check: 'cmd:true'}\n"),
        ("doc.json", '{"name": "a", "probe": {"check": "cmd:true"}}'),
    ],
)
def test_the_format_follows_the_extension(tmp_path: Path, name: str, text: str) -> None:
    doc = load(write(tmp_path, name, text))
    assert doc.name == "a"
    assert doc.probe is not None
    assert doc.probe.check == "cmd:true"
    assert doc.probe.interval == 10.0


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "doc.toml"
    path.write_bytes('\ufeffname = "a"\n'.encode())
    assert load(path).name == "a"


def test_an_empty_yaml_file_is_an_empty_table(tmp_path: Path) -> None:
    source = read_document(write(tmp_path, "empty.yaml", ""), RecipeError)
    assert source.data == {}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "doc.txt",
            "x",
            "doc.txt: unsupported file type '.txt': expected .toml, .yaml, .yml or .json",
        ),
        ("doc.toml", 'name = "a"\nx = \n', "doc.toml:2: invalid TOML: invalid value (column 5)"),
        (
            "doc.toml",
            "[a]\nb = 1\n[a]\n",
            "doc.toml:3: invalid TOML: cannot declare ('a',) twice (column 3)",
        ),
        ("doc.yaml", "name: [a, b\n", "doc.yaml:2: invalid YAML: did not find expected ',' or ']'"),
        ("doc.yaml", "a: 1\na: 2\n", "doc.yaml:2: invalid YAML: duplicate key 'a'"),
        ("doc.yaml", "- a\n- b\n", "doc.yaml: expected a table at the top level, got an array"),
        (
            "doc.yaml",
            "a: 1\n---\nb: 2\n",
            "doc.yaml:2: invalid YAML: but found another document (expected a single document",
        ),
        (
            "doc.json",
            '{"name": "a",\n}',
            "doc.json:2: invalid JSON: Expecting property name enclosed in double quotes",
        ),
        ("doc.json", '{"a": 1, "a": 2}', "doc.json: invalid JSON: duplicate key 'a'"),
        ("doc.json", "[1]", "doc.json: expected a table at the top level, got an array"),
    ],
)
def test_syntax_errors_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    with pytest.raises(RecipeError) as caught:
        read_document(write(tmp_path, name, text), RecipeError, name=name)
    assert str(caught.value).startswith(expected)


def test_unreadable_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="missing.toml: no such file"):
        read_document(tmp_path / "missing.toml", RecipeError, name="missing.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(RecipeError, match="is a directory"):
        read_document(tmp_path / "dir.toml", RecipeError)
    (tmp_path / "latin1.toml").write_bytes(b'a = "x"\nb = "\xe9"\n')
    with pytest.raises(RecipeError) as caught:
        read_document(tmp_path / "latin1.toml", RecipeError, name="latin1.toml")
    assert str(caught.value) == "latin1.toml:2: not valid UTF-8 text"


def test_yaml_keys_that_are_not_strings_are_reported_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        read_document(write(tmp_path, "doc.yaml", "env:\n  on: 1\n  2: x\n"), RecipeError)
    assert messages(caught.value) == [
        "key True is not a string (YAML reads on/off/yes/no as booleans: quote the key)",
        "key 2 is not a string",
    ]


def test_yaml_aliases_of_tables_are_refused(tmp_path: Path) -> None:
    text = "base: &b {x: 1}\nother: *b\nscalar: &s 5\nagain: *s\n"
    with pytest.raises(RecipeError) as caught:
        read_document(write(tmp_path, "doc.yaml", text), RecipeError, name="doc.yaml")
    assert str(caught.value) == (
        "doc.yaml:2: other: a YAML alias repeats a table or array here; write it out "
        "(or share it through imports)"
    )


def test_recursive_yaml_is_refused_not_followed(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="YAML alias"):
        read_document(write(tmp_path, "doc.yaml", "a: &a [*a]\n"), RecipeError)


def test_yaml_values_outside_plain_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="x: unsupported value of type bytes"):
        read_document(write(tmp_path, "doc.yaml", "x: !!binary aGVsbG8=\n"), RecipeError)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    deep = "a = " + "[" * 70 + "]" * 70 + "\n"
    with pytest.raises(RecipeError, match="nested too deeply"):
        read_document(write(tmp_path, "doc.toml", deep), RecipeError)
    deeper = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(RecipeError, match="nested too deeply"):
        read_document(write(tmp_path, "doc.json", deeper), RecipeError)


# ------------------------------------------------------------------ validation


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "doc.toml",
        """\
        nmae = "a"
        mode = "medium"

        [probe]
        check = "cmd:true"
        intervall = "10s"
        failure_threshold = "3"

        [[items]]
        uri = "a"
        size = "12 Mi"

        [[items]]
        size = 1

        [env]
        PORT = 8080
        """,
    )
    with pytest.raises(RecipeError) as caught:
        load(path)
    assert str(caught.value).splitlines() == [
        "doc.toml:1: unknown key `nmae` (did you mean `name`?)",
        "doc.toml:2: mode: invalid value 'medium': expected one of 'fast', 'slow'",
        "doc.toml:6: probe: unknown key `intervall` (did you mean `interval`?)",
        "doc.toml:7: probe.failure_threshold: expected an integer, got string '3'",
        "doc.toml:11: items[0].size: invalid size '12 Mi': expected a number with an optional "
        "unit (B, K, M, G, T, KB, MB, GB, TB, Ki, Mi, Gi, Ti), such as '128Mi' or '1G'",
        "doc.toml:13: items[1]: missing required key `uri`",
        "doc.toml:17: env.PORT: expected a string, got integer 8080",
        "doc.toml: missing required key `name`",
    ]
    assert len(caught.value.problems) == 8


def test_wrong_container_types_say_what_was_expected() -> None:
    problems = validate({"name": "a", "probe": "cmd:true", "items": {"uri": "x"}, "env": []}, Doc)
    assert [(format_key(p.path), p.message) for p in problems] == [
        ("probe", "expected a table, got string 'cmd:true'"),
        ("items", "expected an array, got a table"),
        ("env", "expected a table, got an array"),
    ]


def test_null_is_refused_except_in_free_form_data() -> None:
    problems = validate({"name": "a", "probe": None, "extra": {"x": None}}, Doc)
    assert [(format_key(p.path), p.message) for p in problems] == [
        ("probe", "null is not allowed: leave the key out to mean 'not set'"),
    ]


def test_a_valid_document_converts_with_durations_and_sizes() -> None:
    data = {
        "name": "a",
        "probe": {"check": "x", "interval": "1m30s"},
        "items": [{"uri": "u", "size": "1Ki"}],
    }
    doc = decode(data, Doc, Source(name="<test>", data=data), RecipeError)
    assert doc.probe is not None
    assert doc.probe.interval == 90.0
    assert doc.probe.interval.text == "1m30s"
    assert doc.items[0].size == 1024


def test_a_single_problem_is_raised_as_itself() -> None:
    data = {"name": 5}
    with pytest.raises(RecipeError) as caught:
        decode(data, Doc, Source(name="<test>", data=data), RecipeError)
    assert caught.value.problems == ()
    assert caught.value.key == "name"
    assert str(caught.value) == "<test>: name: expected a string, got integer 5"


def test_combining_errors_flattens_and_keeps_the_only_one() -> None:
    one = RecipeError("a", file="x")
    two = RecipeError("b", file="x")
    assert combine_errors([one], RecipeError) is one
    both = combine_errors([combine_errors([one, two], RecipeError), one], RecipeError)
    assert both.problems == (one, two, one)
    assert both.file == "x"


# ------------------------------------------------------------------ lines


def test_toml_lines_follow_headers_dotted_keys_and_arrays_of_tables() -> None:
    text = textwrap.dedent(
        '''\
        top = 1
        "quoted.key" = 2
        [a.b]
        c.d = 3
        script = """
        fake = "not a key"
        [not.a.header]
        """
        e = 'x' # comment
        arr = [
          1,
          2,
        ]
        f = { g = 1 }

        [[items]]
        uri = "x"
        [[items]]
        uri = "y"
        [items.sub]
        z = 1
        '''
    )
    source = parse_document(text, "toml", RecipeError, name="t.toml")
    expected = {
        ("top",): 1,
        ("quoted.key",): 2,
        ("a", "b"): 3,
        ("a", "b", "c", "d"): 4,
        ("a", "b", "script"): 5,
        ("a", "b", "e"): 9,
        ("a", "b", "arr"): 10,
        ("a", "b", "f", "g"): 14,  # inside an inline table: the key's own line
        ("items", 0, "uri"): 17,
        ("items", 1, "uri"): 19,
        ("items", 1, "sub", "z"): 21,
        ("not", "a", "header"): None,
        ("a", "b", "fake"): 3,  # no such key: the nearest enclosing one
    }
    assert {path: source.line_of(path) for path in expected} == expected


def test_yaml_and_json_lines_come_from_the_node_tree() -> None:
    yaml_source = parse_document(
        "a:\n  b:\n    - x\n    - y: 1\n", "yaml", RecipeError, name="t.yaml"
    )
    assert yaml_source.line_of(("a", "b", 1, "y")) == 4
    assert yaml_source.line_of(("a", "b", 0)) == 3
    json_source = parse_document(
        '{\n  "a": {\n    "b": [1,\n 2]\n  }\n}', "json", RecipeError, name="t.json"
    )
    assert json_source.line_of(("a", "b")) == 3
    assert json_source.line_of(("a", "b", 1)) == 4


def test_aliases_point_errors_at_what_the_author_wrote() -> None:
    source = Source(name="s.yaml", data={}, aliases={("a", "b_c"): ("spec", "a", "bC")}, camel=True)
    assert source.locate(("a", "b_c", "d")).key == "spec.a.bC.d"
    assert source.spell(("a",), "b_c") == "bC"
    assert source.spell(("x",), "failure_threshold") == "failureThreshold"


# ------------------------------------------------------------------ pruning


def test_prune_points_are_the_nearest_optional_field() -> None:
    assert prune_point(Doc, ("probe", "interval")) == ("probe", "interval")
    assert prune_point(Doc, ("probe", "check")) == ("probe",)
    assert prune_point(Doc, ("items", 1, "uri")) == ("items",)
    assert prune_point(Doc, ("name",)) is None
    assert prune_point(Doc, ("nope", "x")) is None


def test_without_copies_and_leaves_out_paths() -> None:
    data = {"a": {"b": 1, "c": [1, 2]}, "d": 2}
    assert without(data, [("a", "b"), ("d",), ("x", "y")]) == {"a": {"c": [1, 2]}}
    assert data == {"a": {"b": 1, "c": [1, 2]}, "d": 2}


def test_problems_know_the_line_of_an_key() -> None:
    assert Problem(("a",), "m", key="k").at == ("a", "k")
    assert Problem(("a",), "m").at == ("a",)


# ------------------------------------------------------------------ deployment documents


def test_a_deployment_document_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "deployment.toml",
        """\
        [deployment]
        id = "d1"
        timeout = "5m"

        [components."com.example.hello"]
        version = "^1.1.0"
        config = { message = "hi" }
        """,
    )
    doc = load_deployment(path)
    assert isinstance(doc, DeploymentDocument)
    assert doc.deployment.timeout == 300.0
    assert doc.components["com.example.hello"].config == {"message": "hi"}


def test_deployment_problems_come_together_with_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "deployment.yaml",
        """\
        deployment:
          failure_policy: retry
          timout: 5m
        components:
          Com.Bad:
            version: "1.0.0"
          com.ok:
            verison: "1.0.0"
        """,
    )
    with pytest.raises(DeploymentError) as caught:
        load_deployment(path)
    text = str(caught.value).replace(str(tmp_path) + "/", "")
    assert text.splitlines() == [
        "deployment.yaml:2: deployment.failure_policy: invalid value 'retry': expected one of "
        "'rollback', 'do_nothing'",
        "deployment.yaml:3: deployment: unknown key `timout` (did you mean `timeout`?)",
        "deployment.yaml:5: components.\"Com.Bad\": invalid key 'Com.Bad': expected a lower-case "
        "dotted name such as 'com.example.hello', got string 'Com.Bad'",
        'deployment.yaml:8: components."com.ok": unknown key `verison` (did you mean `version`?)',
    ]


def test_deployment_errors_keep_their_old_message_shape() -> None:
    assert str(DeploymentError("bad", file="d.toml", key="components")) == "d.toml: components: bad"
    assert str(DeploymentError("bad", file="d.toml", line=3)) == "d.toml:3: bad"
    assert str(DeploymentError("bad")) == "bad"


@pytest.mark.parametrize(
    ("message", "path", "text"),
    [
        (
            "Expected `int` >= 1 - at `$.probe.failure_threshold`",
            ("probe", "failure_threshold"),
            "expected `int` >= 1",
        ),
        (
            "Expected `str`, got `int` - at `$.items[2].uri`",
            ("items", 2, "uri"),
            "expected `str`, got `int`",
        ),
        ("Expected `str`, got `int` - at `key` in `$.env`", ("env",), "expected `str`, got `int`"),
        ("Object missing required field `name`", (), "object missing required field `name`"),
    ],
)
def test_msgspec_paths_become_key_paths(message: str, path: tuple[Any, ...], text: str) -> None:
    # The safety net for when msgspec rejects what validate() let through.
    from keystone_edge.documents import _problem_from_msgspec

    assert _problem_from_msgspec(message) == Problem(path, text)
