"""AgentClient against a live server: typed answers, and errors as KeyStoneError classes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keystone_edge.api.client import AgentClient, default_socket_path
from keystone_edge.api.control import ComponentDetail, DeploymentRequest
from keystone_edge.errors import (
    DeploymentError,
    InvalidTransition,
    KeyStoneError,
    NotFound,
    RecipeError,
    RequestError,
    ResolutionError,
    TransportError,
)
from keystone_edge.layout import Layout, default_root
from keystone_edge.store import ComponentRecord, DeploymentRecord
from tests.api.harness import ServerThread, recipe


@pytest.fixture
def hello(server: ServerThread) -> str:
    server.call(server.agent.add_component, "com.example.hello")
    return "com.example.hello"


def test_typed_answers(client: AgentClient, hello: str) -> None:
    assert client.health()["status"] == "ok"
    [record] = client.list_components()
    assert isinstance(record, ComponentRecord)
    assert (record.name, record.state, record.pid) == (hello, "RUNNING", 4242)
    detail = client.get_component(hello)
    assert isinstance(detail, ComponentDetail)
    assert detail.transitions[0].to_state == "RUNNING"
    stopped = client.component_action(hello, "stop")
    assert (stopped.state, stopped.run) == ("STOPPED", False)


def test_deployments(client: AgentClient, server: ServerThread) -> None:
    request = DeploymentRequest(
        document={"deployment": {"id": "d1"}, "components": {"com.a": {"version": "1.0.0"}}},
        recipes=[recipe("com.a")],
    )
    record = client.submit_deployment(request)
    assert isinstance(record, DeploymentRecord)
    assert (record.id, record.status) == ("d1", "queued")
    assert [d.id for d in client.list_deployments()] == ["d1"]
    assert client.get_deployment("d1").id == "d1"


def test_not_found_is_notfound(client: AgentClient) -> None:
    with pytest.raises(NotFound) as caught:
        client.get_component("com.example.nope")
    assert (caught.value.code, str(caught.value)) == (
        "not_found",
        "no component named 'com.example.nope'",
    )
    with pytest.raises(NotFound):
        client.cancel_deployment("nope")


def test_conflict_keeps_its_code(client: AgentClient, server: ServerThread) -> None:
    request = DeploymentRequest(
        document={"deployment": {"id": "d1"}, "components": {"com.a": {"version": "1.0.0"}}},
        recipes=[recipe("com.a")],
    )
    client.submit_deployment(request)
    client.cancel_deployment("d1")
    with pytest.raises(RequestError) as caught:
        client.cancel_deployment("d1")
    assert caught.value.code == "conflict"


def test_invalid_transition(client: AgentClient, hello: str) -> None:
    client.component_action(hello, "stop")
    with pytest.raises(InvalidTransition) as caught:
        client.component_action(hello, "stop")
    error = caught.value
    assert (error.component, error.state, error.event) == (hello, "STOPPED", "stop")
    assert str(error) == "com.example.hello: event stop is not valid in state STOPPED"


def test_document_errors_come_back_with_their_fields(client: AgentClient) -> None:
    with pytest.raises(DeploymentError) as deployment:
        client.submit_deployment(DeploymentRequest(document={}))
    assert (deployment.value.file, deployment.value.key) == ("<request>", "components")
    assert str(deployment.value) == (
        "<request>: components: a deployment needs at least one component"
    )

    with pytest.raises(RecipeError) as bad_recipe:
        client.submit_deployment(
            DeploymentRequest(document={"components": {"com.a": {}}}, recipes=[{}])
        )
    [problem] = bad_recipe.value.problems
    assert (problem.file, problem.key, problem.reason) == (
        "<request>",
        "metadata",
        "missing required key",
    )
    assert str(bad_recipe.value) == "<request>: metadata: missing required key"

    with pytest.raises(ResolutionError) as unresolved:
        client.submit_deployment(
            DeploymentRequest(
                document={"components": {"com.a": {"version": "9.0.0"}}},
                recipes=[recipe("com.a")],
            )
        )
    assert unresolved.value.chain == ("<deployment>", "com.a 9.0.0")


def test_an_internal_error_keeps_code_and_hint(
    client: AgentClient, server: ServerThread, hello: str
) -> None:
    server.agent.explode.add("list_components")
    with pytest.raises(KeyStoneError) as caught:
        client.list_components()
    assert caught.value.code == "internal"
    assert caught.value.hint == "this is a bug in the agent; its log has the traceback"


def test_an_agent_that_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    with AgentClient(path) as client, pytest.raises(TransportError) as caught:
        client.list_components()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the agent at {path}: ")
    assert "No such file or directory" in message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("is keystone-agent running?")


def test_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))
    leftover.close()
    with AgentClient(path) as client, pytest.raises(TransportError) as caught:
        client.health()
    assert "Connection refused" in str(caught.value)
    assert caught.value.hint == (
        "the socket is there but nothing answers: is keystone-agent running?"
    )


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEYSTONE_SOCKET", str(tmp_path / "x.sock"))
    assert default_socket_path() == tmp_path / "x.sock"
    assert AgentClient().socket_path == tmp_path / "x.sock"
    monkeypatch.delenv("KEYSTONE_SOCKET")
    assert default_socket_path() == Layout(default_root()).socket
    assert default_socket_path().name == "agent.sock"


def test_an_answer_the_client_cannot_read_is_a_transport_error(
    client: AgentClient, hello: str
) -> None:
    with pytest.raises(TransportError) as caught:
        client._call("GET", "/v1/components", dict[str, int])
    assert "sent a response this client does not understand" in str(caught.value)
    assert caught.value.hint == "are keystonectl and keystone-agent the same version?"


def test_extra_routes_and_call(sock_dir: Path) -> None:
    async def extra(_request: Request) -> Response:
        return Response(b'{"answer":42}', media_type="application/json")

    routes = [Route("/v1/extra", extra, methods=["GET"])]
    server = ServerThread(sock_dir, sock_dir / "agent.sock", extra_routes=routes).start()
    try:
        with AgentClient(server.socket_path) as client:
            assert client.call("GET", "/v1/extra", dict[str, int]) == {"answer": 42}
            with pytest.raises(RequestError) as caught:
                client.call("POST", "/v1/extra", dict[str, int])
            assert caught.value.code == "method_not_allowed"
    finally:
        server.stop()
