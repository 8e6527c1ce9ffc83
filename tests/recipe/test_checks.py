"""The rules beyond types, each with what passes and what is reported."""

from __future__ import annotations

from typing import Any

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import recipe_from_builtins
from keystone_edge.recipe._checks import health_check_problem, range_problem
from tests.recipe.helpers import EMPTY_SHA256

META = {"name": "com.example.app", "version": "1.0.0"}


def problems(**sections: Any) -> list[str]:
    """``key: message`` for each problem of a recipe made of ``sections``."""
    data = {"metadata": META, **sections}
    try:
        recipe_from_builtins(data, source="t")
    except RecipeError as exc:
        return [f"{p.key}: {p.reason}" if p.key else p.reason for p in exc.problems or (exc,)]
    return []


def test_a_generic_run_section_has_exactly_one_of_exec_and_script() -> None:
    assert problems(lifecycle={"run": {"script": "x"}}) == []
    assert problems(lifecycle={"run": {"exec": {"command": "x"}}}) == []
    assert problems(lifecycle={"install": {"script": "x"}}) == []  # no run: install only
    assert problems(lifecycle={"run": {"script": "x", "exec": {"command": "y"}}}) == [
        "lifecycle.run: set either `exec` or `script`, not both"
    ]
    assert problems(lifecycle={"run": {"restart_policy": "always"}}) == [
        "lifecycle.run: missing `exec` (a command to run) or `script` (a shell script)"
    ]
    assert problems(lifecycle={"run": {"exec": {"command": " "}}}) == [
        "lifecycle.run.exec.command: empty command"
    ]


def test_a_broken_exec_does_not_also_count_as_missing() -> None:
    assert problems(lifecycle={"run": {"exec": {"command": 5}}}) == [
        "lifecycle.run.exec.command: expected a string, got integer 5"
    ]


def test_container_components_need_a_container_and_run_its_image() -> None:
    container_meta = {**META, "type": "container"}
    assert problems(metadata=container_meta, container={"image": "x"}) == []
    assert problems(metadata=container_meta) == [
        "metadata.type: a container component needs a [container] section (image)"
    ]
    assert problems(container={"image": "x"}) == [
        'container: only used when metadata.type = "container"'
    ]
    assert problems(
        metadata=container_meta,
        container={"image": "x"},
        lifecycle={"run": {"script": "x", "restart_policy": "always"}},
    ) == [
        "lifecycle.run.script: a container component runs its image: use container.command, "
        "not lifecycle.run.script"
    ]


@pytest.mark.parametrize(
    ("ports", "volumes", "expected"),
    [
        (["8080", "8080:80", "127.0.0.1:8080:80/udp", "[::1]:53:53/tcp"], ["/a:/b", "v:/c:ro"], []),
        (
            ["80:8080:90:1", "0:80", "70000"],
            ["/a", "a:b"],
            [
                "container.ports[0]: invalid port mapping '80:8080:90:1': expected "
                "[ip:][host:]container[/tcp|udp|sctp]",
                "container.ports[1]: invalid port mapping '0:80': expected "
                "[ip:][host:]container[/tcp|udp|sctp]",
                "container.ports[2]: invalid port mapping '70000': expected "
                "[ip:][host:]container[/tcp|udp|sctp]",
                "container.volumes[0]: invalid volume '/a': expected "
                "source:/absolute/target[:options]",
                "container.volumes[1]: invalid volume 'a:b': expected "
                "source:/absolute/target[:options]",
            ],
        ),
    ],
)
def test_container_ports_and_volumes(
    ports: list[str], volumes: list[str], expected: list[str]
) -> None:
    assert (
        problems(
            metadata={**META, "type": "container"},
            container={"image": "x", "ports": ports, "volumes": volumes},
        )
        == expected
    )


@pytest.mark.parametrize(
    "check",
    [
        "http://127.0.0.1:8080/health",
        "https://example.com/",
        "http://localhost",
        "tcp://127.0.0.1:8080",
        "tcp://[::1]:53",
        "tcp://db.local:5432",
        "cmd:test -f /tmp/ready",
    ],
)
def test_good_health_checks(check: str) -> None:
    assert health_check_problem(check, rendered=True) is None


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            "tcp://127.0.0.1",
            "invalid health check 'tcp://127.0.0.1': expected tcp://host:port (port 1-65535)",
        ),
        (
            "tcp://127.0.0.1:0",
            "invalid health check 'tcp://127.0.0.1:0': expected tcp://host:port (port 1-65535)",
        ),
        (
            "tcp://h:99999",
            "invalid health check 'tcp://h:99999': expected tcp://host:port (port 1-65535)",
        ),
        (
            "http://:8080/x",
            "invalid health check 'http://:8080/x': expected http://host[:port]/path",
        ),
        (
            "http://h:port/x",
            "invalid health check 'http://h:port/x': expected http://host[:port]/path",
        ),
        ("cmd:", "invalid health check 'cmd:': no command"),
        (
            "udp://h:1",
            "invalid health check 'udp://h:1': expected http://host[:port]/path, https://..., "
            "tcp://host:port or cmd:<command>",
        ),
        (
            "curl localhost",
            "invalid health check 'curl localhost': expected http://host[:port]/path, "
            "https://..., tcp://host:port or cmd:<command>",
        ),
    ],
)
def test_bad_health_checks(check: str, message: str) -> None:
    assert health_check_problem(check, rendered=True) == message


def test_a_health_check_with_references_is_checked_in_full_only_once_rendered() -> None:
    assert health_check_problem("tcp://127.0.0.1:${config.port}", rendered=False) is None
    assert health_check_problem("tcp://127.0.0.1:${config.port}", rendered=True) is not None
    assert health_check_problem("ftp://${config.host}", rendered=False) is not None


@pytest.mark.parametrize(
    "text", [">=1.0.0 <2.0.0", "^1.2", "~1.2.3", "1.x", "*", "1.2.3", "1.x || >=3"]
)
def test_good_version_ranges(text: str) -> None:
    assert range_problem(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            ">= 1.0",
            "invalid version range '>= 1.0': expected an npm-style range such as "
            "'>=1.0.0 <2.0.0', '^1.2', '~1.2.3', '1.x' or '*'",
        ),
        ("latest", "invalid version range 'latest': expected an npm-style range such as"),
        (">=2.0.0 <1.0.0", "version range '>=2.0.0 <1.0.0' matches no version"),
        (">1.0.0 <=1.0.0", "version range '>1.0.0 <=1.0.0' matches no version"),
        (">=1.0.0 <1.0.0", "version range '>=1.0.0 <1.0.0' matches no version"),
        ("", "empty version range: use '*' for any version"),
    ],
)
def test_bad_version_ranges(text: str, message: str) -> None:
    problem = range_problem(text)
    assert problem is not None
    assert problem.startswith(message)


def test_dependencies_are_checked_by_index() -> None:
    assert problems(
        dependencies=[
            {"name": "com.other", "version": "^1.0.0"},
            {"name": "com.third", "version": "banana"},
            {"name": "com.example.app"},
            {"name": "com.other", "type": "soft"},
        ]
    ) == [
        "dependencies[1].version: invalid version range 'banana': expected an npm-style range "
        "such as '>=1.0.0 <2.0.0', '^1.2', '~1.2.3', '1.x' or '*'",
        "dependencies[3].name: com.other is already a dependency (dependencies[0])",
        "dependencies[2].name: com.example.app cannot depend on itself",
    ]


def test_security_settings() -> None:
    assert (
        problems(
            security={
                "run_as": "ks_user:ks_group",
                "capabilities": ["CAP_NET_BIND_SERVICE", "CAP_SYS_NICE"],
                "seccomp_profile": "path:/etc/keystone/seccomp.json",
            }
        )
        == []
    )
    assert problems(security={"run_as": "1000:1000", "seccomp_profile": "unconfined"}) == []
    assert problems(
        security={
            "run_as": "user:",
            "capabilities": ["cap_sys_admin", "NET_ADMIN", "CAP_NET_BIND", "CAP_BOGUS"],
            "seccomp_profile": "path:relative.json",
        }
    ) == [
        "security.run_as: invalid run_as 'user:': expected `user` or `user:group`",
        "security.capabilities[0]: capability 'cap_sys_admin' must be written in upper case: "
        "'CAP_SYS_ADMIN'",
        "security.capabilities[1]: unknown capability 'NET_ADMIN' (did you mean 'CAP_NET_ADMIN'?)",
        "security.capabilities[2]: unknown capability 'CAP_NET_BIND' (did you mean "
        "'CAP_NET_BIND_SERVICE'?)",
        "security.capabilities[3]: unknown capability 'CAP_BOGUS'",
        "security.seccomp_profile: invalid seccomp_profile 'path:relative.json': expected "
        "'default', 'unconfined' or 'path:/absolute/profile.json'",
    ]


def test_artifacts() -> None:
    good = [
        {"uri": "https://example.com/a.tar.gz", "sha256": EMPTY_SHA256, "unpack": True},
        {"uri": "file:///opt/b"},
        {"uri": "https://example.com/a.tar.gz", "sha256": EMPTY_SHA256, "name": "other.tar.gz"},
    ]
    assert problems(artifacts=good) == []
    assert problems(
        artifacts=[
            {"uri": "http://example.com/tool"},
            {"uri": "file:///opt/tool"},
            {"uri": "https://example.com/dir/", "sha256": EMPTY_SHA256},
            {"uri": "file:///x", "name": "../escape"},
        ]
    ) == [
        "artifacts[0].sha256: missing: a remote artifact (http://) must have a sha256 to verify it",
        "artifacts[1]: file name 'tool' is already used by artifacts[0]: set `name`",
        "artifacts[2].uri: no file name in 'https://example.com/dir/': set `name` for this "
        "artifact",
        "artifacts[3].name: '../escape' is not a plain file name",
    ]
    # A malformed artifact leaves the whole list out of the rules above (indices would
    # shift otherwise): its own problems come first.
    assert problems(
        artifacts=[
            {"uri": "s3://bucket/key"},
            {"uri": "https://e.com/x", "sha256": "<HASH>"},
            {"uri": "http://example.com/tool"},
        ]
    ) == [
        "artifacts[0].uri: unsupported URI scheme 's3' in 's3://bucket/key': expected "
        "https://, http://, file: or a path relative to the recipe",
        "artifacts[1].sha256: expected a sha256 digest: 64 lower-case hexadecimal digits, got "
        "string '<HASH>'",
    ]


def test_permissions() -> None:
    assert (
        problems(
            permissions={
                "files": [{"path": "/var/lib/x/", "mode": "0750", "owner": "a:b"}],
                "devices": ["/dev/ttyUSB0"],
            }
        )
        == []
    )
    assert problems(
        permissions={
            "files": [{"path": "var/lib", "mode": "999", "owner": "a b"}],
            "devices": ["ttyUSB0", "/dev/../etc/shadow"],
        }
    ) == [
        "permissions.files[0].mode: expected an octal mode such as '0750', got string '999'",
        "permissions.files[0].path: 'var/lib' is not an absolute path",
        "permissions.files[0].owner: invalid owner 'a b': expected `user` or `user:group`",
        "permissions.devices[0]: 'ttyUSB0' is not a device path (/dev/...)",
        "permissions.devices[1]: '/dev/../etc/shadow' is not a device path (/dev/...)",
    ]


def test_every_section_is_checked_even_when_others_are_broken() -> None:
    assert problems(
        metadata={"name": "Bad Name", "version": "1.0.0"},
        lifecycle={"run": {"script": "x", "health": {"check": "tcp://h", "timeout": "3 s"}}},
        security={"capabilities": ["CAP_NOPE"]},
        dependencies=[{"name": "com.x", "version": ">=2.0.0 <1.0.0"}],
    ) == [
        "metadata.name: expected a lower-case dotted name such as 'com.example.hello', got "
        "string 'Bad Name'",
        "lifecycle.run.health.timeout: invalid duration '3 s': expected terms like '500ms', "
        "'10s' or '1h30m' (units: d, h, m, s, ms, us)",
        "lifecycle.run.health.check: invalid health check 'tcp://h': expected tcp://host:port "
        "(port 1-65535)",
        "dependencies[0].version: version range '>=2.0.0 <1.0.0' matches no version",
        "security.capabilities[0]: unknown capability 'CAP_NOPE'",
    ]
