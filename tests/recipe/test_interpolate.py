"""Interpolation: syntax, where it applies, values, and unknown references."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import (
    RenderContext,
    effective_config,
    load_recipe,
    recipe_from_builtins,
    recipe_to_builtins,
    render,
)
from keystone_edge.recipe._interpolate import Reference, parse_template
from keystone_edge.recipe.model import Recipe
from tests.recipe.helpers import EXAMPLES

CONTEXT = RenderContext(artifacts_path=Path("/opt/ks/a"), work_path="/opt/ks/w", device_id="dev-1")


def recipe(run: dict[str, Any], defaults: dict[str, Any] | None = None, **extra: Any) -> Recipe:
    return recipe_from_builtins(
        {
            "metadata": {"name": "com.example.app", "version": "1.2.3"},
            "config": {"defaults": defaults or {}},
            "lifecycle": {"run": run},
            **extra,
        }
    )


def test_templates_split_into_text_and_references() -> None:
    parts, problems = parse_template(
        "a ${config.x} b {{ config.y.z }} $${HOME} {{ .Values }} {{x}}"
    )
    assert problems == []
    assert parts == [
        "a ",
        Reference("${config.x}", ("config", "x")),
        " b ",
        Reference("{{ config.y.z }}", ("config", "y", "z")),
        " ",
        "${",
        "HOME} ",
        "{{ .Values }}",
        " ",
        "{{x}}",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${}", "malformed reference `${}`: expected `${namespace.name}`"),
        ("${config.a b}", "malformed reference `${config.a b}`: expected `${namespace.name}`"),
        ("echo ${config.x", "unterminated `${` (write `$${` for a literal `${`)"),
    ],
)
def test_template_syntax_problems(text: str, problem: str) -> None:
    assert parse_template(text)[1] == [problem]


def test_rendering_fills_every_interpolated_field() -> None:
    base = recipe_from_builtins(
        {
            "metadata": {
                "name": "com.example.app",
                "version": "1.2.3",
                "description": "${config.n}",
            },
            "config": {
                "defaults": {
                    "n": 30,
                    "flag": True,
                    "tags": ["a", "b"],
                    "nested": {"k": 1},
                    "f": 1.5,
                }
            },
            "lifecycle": {
                "install": {"script": "echo ${device.id} $${HOME}"},
                "run": {
                    "exec": {
                        "command": "${artifacts.path}/bin",
                        "args": [
                            "${config.n}",
                            "{{ config.flag }}",
                            "${config.tags}",
                            "${config.nested}",
                        ],
                        "env": {
                            "NAME": "${component.name}@${component.version}",
                            "F": "${config.f}",
                        },
                        "working_dir": "${work.path}",
                    },
                    "health": {"check": "tcp://127.0.0.1:${config.n}"},
                },
                "shutdown": {"script": "kill ${config.n}"},
            },
        }
    )
    rendered = render(base, effective_config(base), CONTEXT)
    run = rendered.lifecycle.run
    assert run is not None
    assert run.exec is not None
    assert run.exec.command == "/opt/ks/a/bin"
    assert run.exec.args == ["30", "true", '["a","b"]', '{"k":1}']
    assert run.exec.env == {"NAME": "com.example.app@1.2.3", "F": "1.5"}
    assert run.exec.working_dir == "/opt/ks/w"
    assert run.health is not None
    assert run.health.check == "tcp://127.0.0.1:30"
    assert rendered.lifecycle.install is not None
    assert rendered.lifecycle.install.script == "echo dev-1 ${HOME}"
    assert rendered.lifecycle.shutdown is not None
    assert rendered.lifecycle.shutdown.script == "kill 30"
    # Not an interpolated field: left as written.
    assert rendered.metadata.description == "${config.n}"
    # The original is untouched.
    assert base.lifecycle.run is not None
    assert base.lifecycle.run.exec is not None
    assert base.lifecycle.run.exec.command == "${artifacts.path}/bin"


def test_dates_render_in_iso_format() -> None:
    base = recipe({"script": "echo ${config.day}"}, defaults={"day": "x"})
    rendered = render(base, {"day": datetime.date(2026, 11, 26)}, CONTEXT)
    assert rendered.lifecycle.run is not None
    assert rendered.lifecycle.run.script == "echo 2026-11-26"


def test_container_command_and_env_are_interpolated() -> None:
    base = recipe_from_builtins(
        {
            "metadata": {"name": "com.example.web", "version": "1.0.0", "type": "container"},
            "config": {"defaults": {"port": 8080}},
            "container": {
                "image": "img:${config.port}",
                "command": ["serve", "--port=${config.port}"],
                "env": {"PORT": "${config.port}"},
            },
        }
    )
    rendered = render(base, {"port": 9090}, CONTEXT)
    assert rendered.container is not None
    assert rendered.container.command == ["serve", "--port=9090"]
    assert rendered.container.env == {"PORT": "9090"}
    assert rendered.container.image == "img:${config.port}"


def test_references_are_checked_when_a_recipe_loads() -> None:
    with pytest.raises(RecipeError) as caught:
        recipe(
            {
                "exec": {
                    "command": "${HOME}/bin",
                    "args": ["${config.intervl}", "${component.id}", "${config.nested.nope}"],
                    "env": {"A": "{{ config.nope }}"},
                }
            },
            defaults={"interval": 1, "nested": {"yes": 1}},
        )
    assert [f"{p.key}: {p.reason}" for p in caught.value.problems] == [
        "lifecycle.run.exec.command: unknown reference `${HOME}`: names start with config., "
        "component., artifacts., work., device. (write `$${` for a literal `${`)",
        "lifecycle.run.exec.args[0]: unknown reference `${config.intervl}`: `intervl` is not in "
        "config.defaults or the config schema (did you mean `config.interval`?)",
        "lifecycle.run.exec.args[1]: unknown reference `${component.id}`: expected "
        "component.name, component.version",
        "lifecycle.run.exec.args[2]: unknown reference `${config.nested.nope}`: `nested.nope` is "
        "not in config.defaults or the config schema",
        "lifecycle.run.exec.env.A: unknown reference `{{ config.nope }}`: `nope` is not in "
        "config.defaults or the config schema",
    ]


def test_a_key_declared_only_in_the_schema_may_be_referenced() -> None:
    schema = {
        "type": "object",
        "properties": {"port": {"type": "integer"}, "db": {"properties": {"host": {}}}},
    }
    base = recipe(
        {"script": "serve ${config.port} ${config.db.host}"},
        config={"schema": schema},
    )
    with pytest.raises(RecipeError) as caught:
        render(base, {"port": 1}, CONTEXT)
    assert str(caught.value) == (
        "com.example.app@1.2.3: lifecycle.run.script: unknown reference `${config.db.host}`: "
        "`db.host` is not in the effective config"
    )
    rendered = render(base, {"port": 1, "db": {"host": "h"}}, CONTEXT)
    assert rendered.lifecycle.run is not None
    assert rendered.lifecycle.run.script == "serve 1 h"


def test_a_rendered_health_check_must_be_complete() -> None:
    base = recipe(
        {"script": "x", "health": {"check": "tcp://127.0.0.1:${config.port}"}},
        defaults={"port": "http"},
    )
    with pytest.raises(RecipeError) as caught:
        render(base, {"port": "http"}, CONTEXT)
    assert str(caught.value) == (
        "com.example.app@1.2.3: lifecycle.run.health.check: invalid health check "
        "'tcp://127.0.0.1:http': expected tcp://host:port (port 1-65535)"
    )


def test_the_seed_yaml_braces_render() -> None:
    loaded = load_recipe(EXAMPLES / "seed" / "com.keylab.hello.recipe.yaml").recipe
    rendered = render(loaded, effective_config(loaded, deployment={"interval": 5}), CONTEXT)
    assert rendered.lifecycle.run is not None
    assert rendered.lifecycle.run.exec is not None
    assert rendered.lifecycle.run.exec.args == [
        "--interval",
        "5",
        "--message",
        "Hello from Keystone",
    ]
    assert recipe_to_builtins(rendered)["lifecycle"]["install"]["script"] == "chmod +x ./hello\n"
