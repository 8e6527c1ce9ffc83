"""The seed's manifest (YAML) form and the moved restart_policy, mapped to canonical."""

from __future__ import annotations

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import load_recipe, recipe_to_builtins
from tests.recipe.helpers import EXAMPLES, MINIMAL, Write

MANIFEST = """\
apiVersion: keystone.wisewolf/v1
kind: Component
metadata:
  name: com.example.app
  version: 1.0.0
"""


def errors(exc: RecipeError) -> list[str]:
    return [str(p) for p in (exc.problems or (exc,))]


def test_the_manifest_form_maps_one_to_one_onto_the_canonical_form(write: Write) -> None:
    manifest = write(
        "m.recipe.yaml",
        """\
        apiVersion: keystone/v1
        kind: Component
        metadata: {name: com.example.app, version: 1.0.0}
        spec:
          description: demo
          type: generic
          publisher: me
          configSchema: {type: object, properties: {intervalSeconds: {type: integer}}}
          defaults: {intervalSeconds: 5, nestedTable: {someKey: 1}}
          lifecycle:
            run:
              exec:
                command: ./app
                workingDir: /tmp
                env: {LOG_LEVEL: info, camelCaseVar: x}
              restartPolicy: always
              stopTimeout: 5s
              health: {check: "cmd:true", failureThreshold: 2, startPeriod: 1s}
          security: {runAs: app, seccompProfile: unconfined, noNewPrivileges: false}
          resources: {cpuQuota: 10, memoryLimit: 64Mi, pidsLimit: 20, ioWeight: 100}
          container: {image: x, pullPolicy: Always, env: {someVar: y}}
        """,
    )
    canonical = write(
        "c.recipe.toml",
        """\
        [metadata]
        name = "com.example.app"
        version = "1.0.0"
        description = "demo"
        type = "generic"
        publisher = "me"

        [config]
        schema = { type = "object", properties = { intervalSeconds = { type = "integer" } } }
        defaults = { intervalSeconds = 5, nestedTable = { someKey = 1 } }

        [lifecycle.run]
        restart_policy = "always"
        stop_timeout = "5s"
        health = { check = "cmd:true", failure_threshold = 2, start_period = "1s" }

        [lifecycle.run.exec]
        command = "./app"
        working_dir = "/tmp"
        env = { LOG_LEVEL = "info", camelCaseVar = "x" }

        [security]
        run_as = "app"
        seccomp_profile = "unconfined"
        no_new_privileges = false

        [resources]
        cpu_quota = 10
        memory_limit = "64Mi"
        pids_limit = 20
        io_weight = 100

        [container]
        image = "x"
        pull_policy = "Always"
        env = { someVar = "y" }
        """,
    )
    # (a generic component with [container] is an error; compare the data, not validity)
    with pytest.raises(RecipeError) as from_manifest:
        load_recipe(manifest)
    with pytest.raises(RecipeError) as from_canonical:
        load_recipe(canonical)
    assert [p.reason for p in from_manifest.value.problems or (from_manifest.value,)] == [
        p.reason for p in from_canonical.value.problems or (from_canonical.value,)
    ]
    assert errors(from_manifest.value) == [
        'm.recipe.yaml:21: spec.container: only used when metadata.type = "container"'
    ]


def test_manifest_and_canonical_forms_give_the_same_recipe(write: Write) -> None:
    manifest = write(
        "m.recipe.yaml",
        MANIFEST
        + "spec:\n  defaults: {a: 1}\n  lifecycle:\n    run:\n      script: run\n"
        + "      restartPolicy: never\n",
    )
    canonical = write(
        "c.recipe.toml",
        MINIMAL + '[config.defaults]\na = 1\n[lifecycle.run]\nscript = "run"\n'
        'restart_policy = "never"\n',
    )
    assert recipe_to_builtins(load_recipe(manifest).recipe) == recipe_to_builtins(
        load_recipe(canonical).recipe
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            "apiVersion: keystone/v2\nkind: Component\n",
            "m.recipe.yaml:1: apiVersion: unsupported string 'keystone/v2': expected "
            "'keystone.wisewolf/v1' or 'keystone/v1'",
        ),
        (
            "apiVersion: keystone/v1\nkind: Deployment\n",
            "m.recipe.yaml:2: kind: unsupported string 'Deployment': expected 'Component'",
        ),
        ("kind: Component\n", "m.recipe.yaml: missing required key `apiVersion`"),
        (
            "apiVersion: keystone/v1\nkind: Component\nspek: {}\n",
            "m.recipe.yaml:3: unknown key `spek` (did you mean `spec`?)",
        ),
    ],
)
def test_the_manifest_header_is_checked(write: Write, head: str, expected: str) -> None:
    path = write("m.recipe.yaml", head + "metadata: {name: com.example.app, version: 1.0.0}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [expected]


def test_manifest_problems_are_spelled_the_way_the_author_wrote_them(write: Write) -> None:
    path = write(
        "m.recipe.yaml",
        MANIFEST
        + """\
spec:
  descripton: x
  configSchma: {}
  lifecycle:
    run:
      script: run
      health:
        check: "cmd:true"
        failureTreshold: 2
        startPeriod: 10
""",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "m.recipe.yaml:7: spec: unknown key `descripton` (did you mean `description`?)",
        "m.recipe.yaml:8: spec: unknown key `configSchma` (did you mean `configSchema`?)",
        "m.recipe.yaml:14: spec.lifecycle.run.health: unknown key `failureTreshold` "
        "(did you mean `failureThreshold`?)",
        "m.recipe.yaml:15: spec.lifecycle.run.health.startPeriod: expected a duration string "
        "such as '500ms', '10s' or '1h30m', got int 10",
    ]


def test_a_value_given_twice_in_the_manifest_must_agree(write: Write) -> None:
    path = write(
        "m.recipe.yaml",
        "apiVersion: keystone/v1\nkind: Component\n"
        "metadata: {name: com.example.app, version: 1.0.0, description: one}\n"
        "spec:\n  description: two\n",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "m.recipe.yaml:5: spec.description: conflicts with `metadata.description` given "
        "elsewhere in this file"
    ]


def test_camel_and_snake_spellings_of_one_key_conflict(write: Write) -> None:
    path = write(
        "m.recipe.yaml",
        MANIFEST + "spec:\n  lifecycle:\n    run:\n      script: x\n      stopTimeout: 1s\n"
        "      stop_timeout: 2s\n",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "m.recipe.yaml:11: spec.lifecycle.run: key `stop_timeout` is given twice "
        "(as camelCase and snake_case)"
    ]


def test_restart_policy_in_health_and_container_moves_to_run(write: Write) -> None:
    health = write(
        "h.recipe.toml",
        MINIMAL + '[lifecycle.run]\nscript = "x"\n[lifecycle.run.health]\n'
        'check = "cmd:true"\nrestart_policy = "never"\n',
    )
    run = load_recipe(health).recipe.lifecycle.run
    assert run is not None
    assert run.restart_policy == "never"
    same = write(
        "s.recipe.toml",
        MINIMAL + '[lifecycle.run]\nscript = "x"\nrestart_policy = "never"\n'
        '[lifecycle.run.health]\ncheck = "cmd:true"\nrestart_policy = "never"\n',
    )
    run = load_recipe(same).recipe.lifecycle.run
    assert run is not None
    assert run.restart_policy == "never"


def test_conflicting_restart_policies_are_an_error(write: Write) -> None:
    path = write(
        "c.recipe.toml",
        """\
        [metadata]
        name = "com.example.web"
        version = "1.0.0"
        type = "container"

        [lifecycle.run]
        restart_policy = "never"

        [container]
        image = "x"
        restart_policy = "always"
        """,
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "c.recipe.toml:11: container.restart_policy: string 'always' conflicts with string "
        "'never' at `lifecycle.run.restart_policy` (both set lifecycle.run.restart_policy)"
    ]


def test_a_bad_moved_restart_policy_is_reported_where_it_was_written(write: Write) -> None:
    path = write(
        "c.recipe.toml",
        MINIMAL + '[lifecycle.run]\nscript = "x"\n\n[lifecycle.run.health]\n'
        'check = "cmd:true"\nrestart_policy = "sometimes"\n',
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "c.recipe.toml:9: lifecycle.run.health.restart_policy: invalid value 'sometimes': "
        "expected one of 'never', 'on-failure', 'always'"
    ]


def test_user_data_keeps_its_keys_in_the_seed_yaml() -> None:
    recipe = load_recipe(EXAMPLES / "seed" / "com.keylab.hello.recipe.yaml").recipe
    assert recipe.lifecycle.run is not None
    assert recipe.lifecycle.run.exec is not None
    assert list(recipe.lifecycle.run.exec.env) == ["LOG_LEVEL"]
    assert recipe.config.schema is not None
    assert list(recipe.config.schema["properties"]) == ["interval", "message"]
