"""keystonectl recipe validate | render | schema, through click's runner."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from click.testing import CliRunner

from keystone_edge.cli import cli
from keystone_edge.recipe._schema import recipe_schema_text
from tests.recipe.helpers import EXAMPLES, MINIMAL, Write

HELLO = str(EXAMPLES / "hello" / "com.wisewolf.hello.recipe.toml")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_validate_prints_ok_for_each_good_recipe() -> None:
    seed = EXAMPLES / "seed"
    code, out, err = run(
        "recipe",
        "validate",
        str(seed / "com.keylab.hello.recipe.yaml"),
        str(seed / "com.wisewolf.web.recipe.toml"),
    )
    assert code == 0, err
    assert out.splitlines() == [
        f"ok: {seed}/com.keylab.hello.recipe.yaml (com.keylab.hello@1.0.0)",
        f"ok: {seed}/com.wisewolf.web.recipe.toml (com.wisewolf.web@1.0.0)",
    ]
    assert err == ""


def test_validate_lists_every_error_of_every_file_and_fails(write: Write) -> None:
    write("good.recipe.toml", MINIMAL)
    write("bad.recipe.toml", MINIMAL + '[resources]\nnice = 50\n[security]\nrun_as = "a:b:c"\n')
    write("worse.recipe.toml", "[metadata\n")
    code, out, err = run(
        "recipe", "validate", "good.recipe.toml", "bad.recipe.toml", "worse.recipe.toml"
    )
    assert code == 1
    assert out == "ok: good.recipe.toml (com.example.app@1.0.0)\n"
    assert err.splitlines() == [
        "error: bad.recipe.toml:5: resources.nice: expected an integer <= 19, got integer 50",
        "error: bad.recipe.toml:7: security.run_as: invalid run_as 'a:b:c': expected `user` or "
        "`user:group`",
        "error: worse.recipe.toml:1: invalid TOML: expected ']' at the end of a table "
        "declaration (column 10)",
        "error: bad.recipe.toml, worse.recipe.toml: 2 of 3 invalid",
    ]


def test_validate_takes_directories(write: Write) -> None:
    write("recipes/a.recipe.toml", MINIMAL)
    write("recipes/deployment.toml", "not = [a recipe\n")
    code, out, _ = run("recipe", "validate", "recipes")
    assert code == 0
    assert out == "ok: recipes/a.recipe.toml (com.example.app@1.0.0)\n"


def test_validate_refuses_a_directory_without_recipes(write: Write) -> None:
    write("empty/notes.txt", "nothing here\n")
    code, out, err = run("recipe", "validate", "empty")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "error: empty: no recipe files (.recipe.toml, .recipe.yaml, .recipe.yml, .recipe.json)",
        "error: empty: 1 of 1 invalid",
    ]


def test_validate_speaks_json(write: Write) -> None:
    write("good.recipe.toml", MINIMAL)
    write("bad.recipe.toml", "[metadata]\nname = 'x'\n")
    code, out, _ = run("recipe", "validate", "-o", "json", "good.recipe.toml", "bad.recipe.toml")
    assert code == 1
    assert json.loads(out) == [
        {"file": "good.recipe.toml", "ok": True, "name": "com.example.app", "version": "1.0.0"},
        {
            "file": "bad.recipe.toml",
            "ok": False,
            "errors": [
                {
                    "file": "bad.recipe.toml",
                    "line": 1,
                    "key": "metadata",
                    "message": "missing required key `version`",
                }
            ],
        },
    ]


def test_validate_needs_a_path() -> None:
    code, _, err = run("recipe", "validate")
    assert code == 2
    assert "Missing argument" in err


def test_render_applies_layers_and_interpolation(write: Write) -> None:
    write("device.yaml", "port: 18100\nmessage: from the device\n")
    code, out, err = run(
        "recipe",
        "render",
        HELLO,
        "--device-config",
        "device.yaml",
        "--config",
        "message=hi there",
        "--config",
        "interval_seconds=5",
        "--artifacts-path",
        "/srv/hello",
        "--work-path",
        "/var/hello",
    )
    assert code == 0, err
    rendered = tomllib.loads(out)
    assert rendered["config"]["defaults"] == {
        "log_level": "INFO",
        "interval_seconds": 5,
        "message": "hi there",
        "port": 18100,
    }
    run_section = rendered["lifecycle"]["run"]
    assert run_section["exec"]["command"] == "/srv/hello/hello"
    assert run_section["exec"]["args"] == [
        "--log-level",
        "INFO",
        "--interval",
        "5",
        "--message",
        "hi there",
        "--port",
        "18100",
    ]
    assert run_section["exec"]["working_dir"] == "/var/hello"
    assert run_section["health"]["check"] == "http://127.0.0.1:18100/health"
    assert rendered["lifecycle"]["install"]["script"] == 'chmod +x "/srv/hello/hello"\n'
    assert rendered["artifacts"][0]["uri"] == (EXAMPLES / "hello" / "hello").as_uri()


def test_render_defaults_to_the_agent_paths_and_speaks_json() -> None:
    code, out, _ = run("-o", "json", "recipe", "render", HELLO, "--config", "db.host=x")
    assert code == 1  # the schema allows no `db`
    code, out, err = run("recipe", "render", HELLO, "-o", "json", "--device-id", "edge-7")
    assert code == 0, err
    rendered = json.loads(out)
    assert rendered["lifecycle"]["run"]["exec"]["command"] == (
        "/opt/keystone/runtime/components/com.wisewolf.hello/1.0.0/hello"
    )
    assert rendered["lifecycle"]["run"]["exec"]["working_dir"] == (
        "/opt/keystone/runtime/work/com.wisewolf.hello"
    )


def test_render_reports_config_errors_with_their_layer() -> None:
    code, out, err = run(
        "recipe", "render", HELLO, "--config", "port=80", "--config", "log_level=LOUD"
    )
    assert code == 1
    assert out == ""
    assert sorted(err.splitlines()) == [
        f"error: {HELLO}: config.log_level: must be one of ['DEBUG', 'INFO', 'WARNING', "
        "'ERROR'], got string 'LOUD' (from the deployment overrides)",
        f"error: {HELLO}: config.port: must be bigger than or equal to 1024, got integer 80 "
        "(from the deployment overrides)",
    ]


def test_render_rejects_malformed_assignments() -> None:
    code, _, err = run("recipe", "render", HELLO, "--config", "novalue")
    assert code == 2
    assert "expected KEY=VALUE" in err


def test_render_says_when_toml_cannot_hold_the_result(write: Write) -> None:
    path = write(
        "app.recipe.yaml",
        "metadata: {name: com.example.app, version: 1.0.0}\nconfig: {defaults: {a: null}}\n",
    )
    code, _, err = run("recipe", "render", str(path))
    assert code == 1
    assert err.splitlines() == [
        "error: app.recipe.yaml: TOML has no null (at config.defaults.a)",
        "hint: use -o json to see it",
    ]
    code, out, _ = run("recipe", "render", str(path), "-o", "json")
    assert code == 0
    assert json.loads(out)["config"]["defaults"] == {"a": None}


def test_schema_prints_the_shipped_schema() -> None:
    code, out, _ = run("recipe", "schema")
    assert code == 0
    assert out == recipe_schema_text()
    shipped = Path(__file__).resolve().parents[2] / "src/keystone_edge/recipe/recipe.schema.json"
    assert out == shipped.read_text()
