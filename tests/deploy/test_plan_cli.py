"""`keystonectl deploy plan`: real TOML files in temp directories, through click."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keystone_edge.cli import cli


def write_recipe(
    directory: Path, name: str, version: str, deps: str = "", *, file: str | None = None
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (file or f"{name}-{version}.recipe.toml")
    path.write_text(
        textwrap.dedent(
            f"""\
            [metadata]
            name = "{name}"
            version = "{version}"

            [lifecycle.run.exec]
            command = "/bin/true"
            """
        )
        + textwrap.dedent(deps)
    )
    return path


def hard(name: str, version: str) -> str:
    return f'\n[[dependencies]]\nname = "{name}"\nversion = "{version}"\n'


def soft(name: str, version: str) -> str:
    return hard(name, version) + 'type = "soft"\n'


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    write_recipe(d, "com.example.hello", "1.0.0")
    write_recipe(d, "com.example.hello", "1.1.2", hard("com.example.sidecar", ">=1.0.0 <2.0.0"))
    write_recipe(d, "com.example.hello", "2.0.0", hard("com.example.sidecar", "^2.0.0"))
    write_recipe(d, "com.example.sidecar", "1.4.0")
    write_recipe(d, "com.example.sidecar", "2.0.0")
    write_recipe(d, "com.example.metrics", "1.0.0", soft("com.example.hello", "^1.0.0"))
    return d


def write_deployment(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(textwrap.dedent(body))
    return path


def run(*args: str | Path) -> Result:
    # A wide terminal: rich wraps table cells to the width it believes it has.
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_plan_table_shows_versions_ranges_why_and_layers(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(
        tmp_path,
        """\
        [components."com.example.hello"]
        version = "^1.1.0"

        [components."com.example.metrics"]
        version = "*"
        """,
    )
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 0, result.output
    # Columns are at least two spaces apart; text within a cell has single spaces.
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    assert rows[:5] == [
        ["COMPONENT", "VERSION", "RANGES", "WHY", "LAYER"],
        [
            "com.example.sidecar",
            "1.4.0",
            ">=1.0.0 <2.0.0 (required by com.example.hello@1.1.2)",
            "com.example.hello",
            "0",
        ],
        [
            "com.example.hello",
            "1.1.2",
            "^1.0.0 (soft dependency of com.example.metrics@1.0.0)",
            "deployment",
            "1",
        ],
        # The second range of com.example.hello, on its own line within the cell.
        ["^1.1.0 (deployment)"],
        ["com.example.metrics", "1.0.0", "* (deployment)", "deployment", "2"],
    ]
    assert result.stdout.endswith(
        "layer 0: com.example.sidecar\nlayer 1: com.example.hello\nlayer 2: com.example.metrics\n"
    )


def test_plan_json(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(
        tmp_path,
        """\
        remove = ["com.example.old"]

        [components."com.example.hello"]
        version = "*"
        """,
    )
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "components": {"com.example.hello": "2.0.0", "com.example.sidecar": "2.0.0"},
        "layers": [["com.example.sidecar"], ["com.example.hello"]],
        "removals": ["com.example.old"],
    }


def test_global_output_option_applies_to_plan(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(tmp_path, '[components."com.example.sidecar"]\nversion = "1.4.0"\n')
    result = run("-o", "json", "deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["components"] == {"com.example.sidecar": "1.4.0"}


def test_recipes_from_several_directories(tmp_path: Path, recipes: Path) -> None:
    extra = tmp_path / "extra"
    write_recipe(extra, "com.example.sidecar", "1.9.0")
    doc = write_deployment(tmp_path, '[components."com.example.hello"]\nversion = "~1.1.0"\n')
    result = run(
        "deploy", "plan", "-f", doc, "--recipes", recipes, "--recipes", extra, "-o", "json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["components"]["com.example.sidecar"] == "1.9.0"


def test_removals_are_listed(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(
        tmp_path,
        """\
        remove = ["com.example.old"]

        [components."com.example.sidecar"]
        version = "*"
        """,
    )
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("layer 0: com.example.sidecar\nremove: com.example.old\n")


def test_empty_deployment(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(tmp_path, '[deployment]\ndescription = "nothing"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 0, result.output
    assert result.stdout == "nothing to deploy\n"


def test_conflict_exits_1_with_the_resolver_message(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(
        tmp_path,
        """\
        [components."com.example.hello"]
        version = "2.0.0"

        [components."com.example.sidecar"]
        version = "<2.0.0"
        """,
    )
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: com.example.sidecar: no version satisfies ^2.0.0 (required by "
        "com.example.hello@2.0.0) and <2.0.0 (deployment); available: 1.4.0, 2.0.0\n"
    )


def test_missing_dependency_shows_chain_and_exits_1(tmp_path: Path) -> None:
    d = tmp_path / "recipes"
    write_recipe(d, "com.app", "1.0.0", hard("com.lib", "^1.0.0"))
    write_recipe(d, "com.lib", "1.0.0", hard("com.base", ">=2.0.0 <3.0.0"))
    doc = write_deployment(tmp_path, '[components."com.app"]\nversion = "*"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", d)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: com.lib@1.0.0 requires com.base >=2.0.0 <3.0.0, but no recipe for com.base "
        "is available\n  chain: deployment -> com.app@1.0.0 -> com.lib@1.0.0 -> com.base\n"
    )


def test_cycle_exits_1_with_a_hint(tmp_path: Path) -> None:
    d = tmp_path / "recipes"
    write_recipe(d, "com.a", "1.0.0", hard("com.b", "*"))
    write_recipe(d, "com.b", "1.0.0", soft("com.a", "*"))
    doc = write_deployment(tmp_path, '[components."com.a"]\nversion = "*"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", d)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: cycle: com.a -> com.b -> com.a",
        "hint: dependencies (hard or soft) must not form a cycle: none of them could start",
    ]


def test_invalid_recipe_is_reported_with_its_file(tmp_path: Path, recipes: Path) -> None:
    broken = write_recipe(recipes, "com.example.broken", "1.0.0", "\nbogus = 1\n")
    doc = write_deployment(tmp_path, '[components."com.example.hello"]\nversion = "*"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {broken}")
    assert "bogus" in result.stderr


def test_recipes_directory_is_required(tmp_path: Path) -> None:
    doc = write_deployment(tmp_path, '[components."com.a"]\nversion = "*"\n')
    result = run("deploy", "plan", "-f", doc)
    assert result.exit_code == 2
    assert "Missing option '--recipes'" in result.stderr


def test_bad_range_in_the_deployment_exits_1_with_a_hint(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(tmp_path, '[components."com.example.hello"]\nversion = ">= 1.0"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        'error: deployment: components."com.example.hello".version: invalid version range '
        "'>= 1.0'",
        "hint: ranges use npm syntax, without a space after the operator: '>=1.0.0 <2.0.0', "
        "'^1.2', '~1.2.3', '1.x', '*' or an exact '1.2.3'",
    ]


def test_malformed_deployment_names_file_line_and_key(tmp_path: Path, recipes: Path) -> None:
    doc = write_deployment(tmp_path, '[components."com.example.hello"]\nversoin = "^1"\n')
    result = run("deploy", "plan", "-f", doc, "--recipes", recipes)
    # DeploymentError's exit status comes from cli._context.exit_code_for, not from here.
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr == (
        f'error: {doc}:2: components."com.example.hello": unknown key `versoin` '
        "(did you mean `version`?)\n"
    )
