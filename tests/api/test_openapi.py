"""docs/openapi.yaml describes exactly the routes the server has, with current schemas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from starlette.routing import Route

from keystone_edge.api.artifacts import artifact_routes
from keystone_edge.api.server import COMPONENT_ACTIONS, DEPLOYMENT_ACTIONS, create_app
from tests.api.harness import FakeAgent
from tests.api.openapi_doc import DOCUMENT, render


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def test_the_schemas_are_current() -> None:
    committed = DOCUMENT.read_text()
    assert committed == render(committed), (
        "docs/openapi.yaml is stale: run `.venv/bin/python -m tests.api.openapi_doc`"
    )


def _server_operations(tmp_path_factory: Any) -> set[tuple[str, str]]:
    agent = FakeAgent(tmp_path_factory.mktemp("agent"))
    try:
        # The agent mounts the artifact routes too (api/artifacts.py).
        app = create_app(agent, extra_routes=artifact_routes(agent))
    finally:
        agent.store.close()
    operations: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # drop the convertor names
        for method in route.methods or ():
            if method == "HEAD":
                continue  # Starlette adds it to every GET
            if path.endswith(":{action}"):
                actions = COMPONENT_ACTIONS if "components" in path else DEPLOYMENT_ACTIONS
                operations |= {(method, path.replace("{action}", a)) for a in actions}
            else:
                operations.add((method, path))
    return operations


def test_every_route_is_documented_and_nothing_else(tmp_path_factory: Any) -> None:
    documented = {
        (method.upper(), path) for path, item in _document()["paths"].items() for method in item
    }
    assert documented == _server_operations(tmp_path_factory)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves() -> None:
    document = _document()
    assert document["openapi"] == "3.1.0"
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_operation_documents_its_errors() -> None:
    for path, item in _document()["paths"].items():
        for method, operation in item.items():
            assert "default" in operation["responses"], f"{method} {path}"
