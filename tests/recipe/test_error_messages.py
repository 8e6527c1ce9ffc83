"""The exact text a user reads for the mistakes people actually make.

Each case is a small recipe with one mistake; the whole message is compared, so a change
in wording is a deliberate change to this file.
"""

from __future__ import annotations

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import load_recipe
from tests.recipe.helpers import Write

HEAD = """\
[metadata]
name = "com.example.app"
version = "1.0.0"

"""

CASES = {
    "bad duration": (
        HEAD + '[lifecycle.run]\nscript = "x"\nstop_timeout = "10 s"\n',
        "app.recipe.toml:7: lifecycle.run.stop_timeout: invalid duration '10 s': expected terms "
        "like '500ms', '10s' or '1h30m' (units: d, h, m, s, ms, us)",
    ),
    "bare number as duration": (
        HEAD + '[lifecycle.run]\nscript = "x"\nstop_timeout = 10\n',
        "app.recipe.toml:7: lifecycle.run.stop_timeout: expected a duration string such as "
        "'500ms', '10s' or '1h30m', got int 10",
    ),
    "unknown key with suggestion": (
        HEAD + '[lifecycle.run]\nscript = "x"\n\n[lifecycle.run.health]\ncheck = "cmd:true"\n'
        'intervall = "10s"\n',
        "app.recipe.toml:10: lifecycle.run.health: unknown key `intervall` (did you mean "
        "`interval`?)",
    ),
    "unknown section": (
        HEAD + '[lifecyle.run]\nscript = "x"\n',
        "app.recipe.toml:5: unknown key `lifecyle` (did you mean `lifecycle`?)",
    ),
    "wrong type": (
        HEAD + '[resources]\nopen_files = "4096"\n',
        "app.recipe.toml:6: resources.open_files: expected an integer, got string '4096'",
    ),
    "wrong enum value": (
        HEAD + '[lifecycle.run]\nscript = "x"\nrestart_policy = "on-fail"\n',
        "app.recipe.toml:7: lifecycle.run.restart_policy: invalid value 'on-fail': expected one "
        "of 'never', 'on-failure', 'always'",
    ),
    "bad name": (
        '[metadata]\nname = "Com.Example.App"\nversion = "1.0.0"\n',
        "app.recipe.toml:2: metadata.name: expected a lower-case dotted name such as "
        "'com.example.hello', got string 'Com.Example.App'",
    ),
    "bad version": (
        '[metadata]\nname = "com.example.app"\nversion = "1.0"\n',
        "app.recipe.toml:3: metadata.version: expected a SemVer version such as '1.0.0' or "
        "'2.1.0-rc.1', got string '1.0'",
    ),
    "missing metadata": (
        '[lifecycle.run]\nscript = "x"\n',
        "app.recipe.toml: missing required key `metadata`",
    ),
    "invalid range": (
        HEAD + '[[dependencies]]\nname = "com.example.db"\nversion = ">= 1.0.0"\n',
        "app.recipe.toml:7: dependencies[0].version: invalid version range '>= 1.0.0': expected "
        "an npm-style range such as '>=1.0.0 <2.0.0', '^1.2', '~1.2.3', '1.x' or '*'",
    ),
    "unsatisfiable range": (
        HEAD + '[[dependencies]]\nname = "com.example.db"\nversion = ">=2.0.0 <1.0.0"\n',
        "app.recipe.toml:7: dependencies[0].version: version range '>=2.0.0 <1.0.0' matches no "
        "version",
    ),
    "unknown interpolation": (
        HEAD + '[config.defaults]\ninterval = 30\n\n[lifecycle.run.exec]\ncommand = "app"\n'
        'args = ["--interval", "${config.intervall}"]\n',
        "app.recipe.toml:10: lifecycle.run.exec.args[1]: unknown reference "
        "`${config.intervall}`: `intervall` is not in config.defaults or the config schema "
        "(did you mean `config.interval`?)",
    ),
    "shell variable in a script": (
        HEAD + '[lifecycle.install]\nscript = "cp app ${HOME}/bin"\n',
        "app.recipe.toml:6: lifecycle.install.script: unknown reference `${HOME}`: names start "
        "with config., component., artifacts., work., device. (write `$${` for a literal `${`)",
    ),
    "bad health check": (
        HEAD + '[lifecycle.run]\nscript = "x"\nhealth = { check = "localhost:8080" }\n',
        "app.recipe.toml:7: lifecycle.run.health.check: invalid health check 'localhost:8080': "
        "expected http://host[:port]/path, https://..., tcp://host:port or cmd:<command>",
    ),
    "missing sha256 for https": (
        HEAD + '[[artifacts]]\nuri = "https://example.com/app.tar.gz"\nunpack = true\n',
        "app.recipe.toml:5: artifacts[0].sha256: missing: a remote artifact (https://) must "
        "have a sha256 to verify it",
    ),
    "placeholder hash": (
        HEAD + '[[artifacts]]\nuri = "https://example.com/app"\nsha256 = "<HASH>"\n',
        "app.recipe.toml:7: artifacts[0].sha256: expected a sha256 digest: 64 lower-case "
        "hexadecimal digits, got string '<HASH>'",
    ),
    "schema violation in config": (
        HEAD + '[config.defaults]\ninterval = "30"\n\n[config.schema]\ntype = "object"\n'
        'properties = { interval = { type = "integer", minimum = 1 } }\n',
        "app.recipe.toml:6: config.defaults.interval: must be integer, got string '30'",
    ),
    "exec and script": (
        HEAD + '[lifecycle.run]\nscript = "x"\n\n[lifecycle.run.exec]\ncommand = "y"\n',
        "app.recipe.toml:5: lifecycle.run: set either `exec` or `script`, not both",
    ),
    "toml syntax": (
        HEAD + '[lifecycle.run]\nscript = "x\n',
        "app.recipe.toml:6: invalid TOML: illegal character '\\n' (column 12)",
    ),
    "missing schema file": (
        HEAD + '[config.schema]\nref = "file://schemas/app.json"\n',
        "app.recipe.toml:6: config.schema.ref: schema file 'file://schemas/app.json' not found "
        "(looked for {cwd}/schemas/app.json)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_message_for_a_common_mistake(write: Write, case: str) -> None:
    text, expected = CASES[case]
    path = write("app.recipe.toml", text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value) == expected.replace("{cwd}", str(path.absolute().parent))


def test_an_import_cycle(write: Write) -> None:
    write("common.toml", 'imports = ["app.recipe.toml"]\n')
    path = write("app.recipe.toml", 'imports = ["common.toml"]\n' + HEAD)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value) == (
        "common.toml:1: imports[0]: import cycle: app.recipe.toml -> common.toml -> app.recipe.toml"
    )


def test_a_missing_import(write: Write) -> None:
    path = write("app.recipe.toml", 'imports = ["commn.toml"]\n' + HEAD)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value) == (
        "app.recipe.toml:1: imports[0]: imported file `commn.toml` not found "
        "(app.recipe.toml -> commn.toml)"
    )


def test_every_mistake_of_a_recipe_in_one_error(write: Write) -> None:
    text = "\n".join(
        [
            '[metadata]\nname = "Com.App"\nversion = "1.0"\n',
            '[lifecycle.run]\nscript = "x"\nstop_timeout = "10 s"\nrestart_policy = "on-fail"\n',
            '[[artifacts]]\nuri = "https://example.com/a"\n',
            '[[dependencies]]\nname = "com.db"\nversion = ">=2.0.0 <1.0.0"\n',
        ]
    )
    path = write("app.recipe.toml", text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert [(p.line, p.key) for p in caught.value.problems] == [
        (2, "metadata.name"),
        (3, "metadata.version"),
        (7, "lifecycle.run.stop_timeout"),
        (8, "lifecycle.run.restart_policy"),
        (10, "artifacts[0].sha256"),
        (15, "dependencies[0].version"),
    ]
