"""Every route of the local API over a real Unix socket: answers and error codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import msgspec
import pytest

from keystone_edge.api.control import DeploymentRequest
from keystone_edge.store import DeploymentRecord
from tests.api.harness import Http, ServerThread, deployment_body, recipe


@pytest.fixture
def hello(server: ServerThread) -> str:
    server.call(server.agent.add_component, "com.example.hello")
    return "com.example.hello"


def test_healthz(http: Http, hello: str) -> None:
    reply = http.get("/healthz")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "status": "ok",
        "version": "0.1.0",
        "uptime": 1.5,
        "components": {"RUNNING": 1},
    }


def test_list_and_get_components(http: Http, hello: str, server: ServerThread) -> None:
    server.call(server.agent.add_component, "com.example.db", state="FAILED")
    listed = http.get("/v1/components").json()
    assert [(c["name"], c["state"], c["pid"]) for c in listed] == [
        ("com.example.db", "FAILED", None),
        ("com.example.hello", "RUNNING", 4242),
    ]
    detail = http.get(f"/v1/components/{hello}").json()
    assert detail["component"]["name"] == hello
    assert detail["ready"] is True
    assert detail["health"]["ok"] is True
    assert [(t["from_state"], t["to_state"]) for t in detail["transitions"]] == [
        ("NONE", "RUNNING")
    ]


@pytest.mark.parametrize(
    ("action", "state", "pid"),
    [("stop", "STOPPED", None), ("start", "RUNNING", 5151), ("restart", "RUNNING", 6161)],
)
def test_component_actions(http: Http, hello: str, action: str, state: str, pid: int) -> None:
    reply = http.post(f"/v1/components/{hello}:{action}")
    assert reply.status == 200
    assert (reply.json()["state"], reply.json()["pid"]) == (state, pid)


def test_unknown_component_is_404_not_found(http: Http) -> None:
    for reply in (
        http.get("/v1/components/com.example.nope"),
        http.post("/v1/components/com.example.nope:restart"),
        http.get("/v1/components/com.example.nope/logs"),
    ):
        assert reply.status == 404
        assert reply.error == {
            "code": "not_found",
            "message": "no component named 'com.example.nope'",
            "details": {},
        }


def test_unknown_action_is_404_naming_the_valid_ones(http: Http, hello: str) -> None:
    reply = http.post(f"/v1/components/{hello}:explode")
    assert reply.status == 404
    assert reply.error["code"] == "not_found"
    assert reply.error["message"] == (
        "unknown component action 'explode': expected one of restart, start, stop "
        "(POST /v1/components/com.example.hello:ACTION)"
    )
    assert reply.error["details"] == {"action": "explode"}
    reply = http.post("/v1/deployments/d1:retry")
    assert (reply.status, reply.error["details"]) == (404, {"action": "retry"})


def test_an_action_in_the_wrong_state_is_409(http: Http, hello: str) -> None:
    assert http.post(f"/v1/components/{hello}:stop").status == 200
    reply = http.post(f"/v1/components/{hello}:stop")
    assert reply.status == 409
    assert reply.error == {
        "code": "invalid_transition",
        "message": "com.example.hello: event stop is not valid in state STOPPED",
        "details": {"component": hello, "state": "STOPPED", "event": "stop"},
    }


def test_unknown_route_is_404(http: Http) -> None:
    reply = http.get("/v2/components")
    assert reply.status == 404
    assert reply.error == {
        "code": "not_found",
        "message": "no such endpoint: GET /v2/components",
        "details": {},
    }


def test_wrong_method_is_405_with_allow(http: Http, hello: str) -> None:
    reply = http.request("DELETE", f"/v1/components/{hello}")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.error["code"] == "method_not_allowed"
    # A custom method is a POST: GET on it is a wrong method, not a component "x:restart".
    reply = http.get(f"/v1/components/{hello}:restart")
    assert (reply.status, reply.error["details"]) == (405, {"allowed": ["POST"]})


# -- deployments ----------------------------------------------------------------------------


def test_submit_list_get_deployment(http: Http, server: ServerThread) -> None:
    server.agent.step_gate = None
    reply = http.post("/v1/deployments", body=deployment_body("com.a", deployment_id="d1"))
    assert reply.status == 202
    assert reply.headers["location"] == "/v1/deployments/d1"
    record = msgspec.json.decode(reply.body, type=DeploymentRecord)
    assert (record.id, record.status, record.components) == ("d1", "queued", {"com.a": "1.0.0"})
    server.run(_idle(server))
    got = msgspec.json.decode(http.get("/v1/deployments/d1").body, type=DeploymentRecord)
    assert got.status == "succeeded"
    assert [(s.component, s.name, s.status) for s in got.steps] == [
        ("com.a", "fetch", "done"),
        ("com.a", "install", "done"),
        ("com.a", "start-new", "done"),
        ("com.a", "ready", "done"),
    ]
    http.post("/v1/deployments", body=deployment_body("com.b", deployment_id="d2"))
    listed = http.get("/v1/deployments").json()
    assert [d["id"] for d in listed] == ["d2", "d1"]
    assert [d["id"] for d in http.get("/v1/deployments?limit=1").json()] == ["d2"]


async def _idle(server: ServerThread) -> None:
    while server.agent.tasks:
        await next(iter(server.agent.tasks))


def test_cancel_deployment_and_conflict(http: Http, server: ServerThread) -> None:
    server.agent.step_gate = server.call(asyncio.Event)
    http.post("/v1/deployments", body=deployment_body("com.a", deployment_id="d1"))
    reply = http.post("/v1/deployments/d1:cancel")
    assert (reply.status, reply.json()["status"]) == (200, "cancelled")
    reply = http.post("/v1/deployments/d1:cancel")
    assert reply.status == 409
    assert reply.error == {
        "code": "conflict",
        "message": "deployment d1 is cancelled; only queued or running deployments can be "
        "cancelled",
        "details": {},
    }


def test_unknown_deployment_is_404(http: Http, server: ServerThread) -> None:
    assert http.get("/v1/deployments/nope").error["code"] == "not_found"
    assert http.post("/v1/deployments/nope:cancel").status == 404


def test_malformed_json_is_400(http: Http, server: ServerThread) -> None:
    reply = http.post("/v1/deployments", body=b'{"document": {')
    assert reply.status == 400
    assert reply.error["code"] == "bad_request"
    assert reply.error["message"].startswith("request body is not valid JSON: ")
    reply = http.post("/v1/deployments", body=b"")
    assert (reply.status, reply.error["message"]) == (
        400,
        "request body is empty: expected a JSON DeploymentRequest",
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            b'{"document": {}, "artifacts_dir": 5}',
            "$.artifacts_dir",
            "invalid DeploymentRequest: Expected `str | null`, got `int` - at `$.artifacts_dir`",
        ),
        (
            b'{"document": {}, "recipes": [1]}',
            "$.recipes[0]",
            "invalid DeploymentRequest: Expected `object`, got `int` - at `$.recipes[0]`",
        ),
        (
            b'{"recipes": []}',
            None,
            "invalid DeploymentRequest: Object missing required field `document`",
        ),
        (
            b'{"document": {}, "extra": 1}',
            None,
            "invalid DeploymentRequest: Object contains unknown field `extra`",
        ),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    http: Http, server: ServerThread, body: bytes, field: str | None, message: str
) -> None:
    reply = http.post("/v1/deployments", body=body)
    assert reply.status == 400
    assert reply.error["code"] == "bad_request"
    assert reply.error["message"] == message
    assert reply.error["details"] == ({"field": field} if field else {})


def test_an_invalid_document_is_422_with_its_details(http: Http, server: ServerThread) -> None:
    reply = http.post("/v1/deployments", body=msgspec.json.encode({"document": {}}))
    assert reply.status == 422
    assert reply.error == {
        "code": "deployment_invalid",
        "message": "<request>: components: a deployment needs at least one component",
        "details": {
            "file": "<request>",
            "key": "components",
            "reason": "a deployment needs at least one component",
        },
    }


def test_an_invalid_recipe_is_422_with_its_problems(http: Http, server: ServerThread) -> None:
    body = msgspec.json.encode(
        DeploymentRequest(document={"components": {"com.a": {}}}, recipes=[{"name": "x"}])
    )
    reply = http.post("/v1/deployments", body=body)
    assert reply.status == 422
    assert reply.error["code"] == "recipe_invalid"
    assert reply.error["details"]["problems"] == [
        {
            "file": "<request>",
            "key": "metadata",
            "reason": "missing required key",
            "message": "<request>: metadata: missing required key",
        }
    ]


def test_an_unresolvable_deployment_is_422_with_the_chain(http: Http, server: ServerThread) -> None:
    body = msgspec.json.encode(
        DeploymentRequest(
            document={"components": {"com.a": {"version": "2.0.0"}}}, recipes=[recipe("com.a")]
        )
    )
    reply = http.post("/v1/deployments", body=body)
    assert reply.status == 422
    assert reply.error == {
        "code": "resolution_failed",
        "message": "no recipe for com.a 2.0.0",
        "details": {"chain": ["<deployment>", "com.a 2.0.0"]},
    }


def test_a_body_over_the_cap_is_413(http: Http, server: ServerThread) -> None:
    limit = server.limits.max_body_bytes
    reply = http.post("/v1/deployments", body=b" " * (limit + 1))
    assert reply.status == 413
    assert reply.error == {
        "code": "payload_too_large",
        "message": "request body is larger than the 16 MiB limit",
        "details": {"limit_bytes": limit},
    }


def test_a_chunked_body_over_the_cap_is_413_while_reading(http: Http, server: ServerThread) -> None:
    def chunks() -> Iterator[bytes]:
        # No Content-Length: the server can only count as it reads.
        for _ in range(20):
            yield b" " * 2**20

    reply = http.post("/v1/deployments", body=chunks())
    assert reply.status == 413
    assert reply.error["code"] == "payload_too_large"


def test_a_body_at_the_cap_is_read(http: Http, server: ServerThread) -> None:
    body = deployment_body("com.a")
    padded = body + b" " * (server.limits.max_body_bytes - len(body))
    assert http.post("/v1/deployments", body=padded).status == 202


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/v1/components/com.example.hello/logs?tail=abc",
            "query parameter tail: expected an integer from 0 to 10000, got 'abc'",
        ),
        (
            "/v1/components/com.example.hello/logs?tail=10001",
            "query parameter tail: expected an integer from 0 to 10000, got '10001'",
        ),
        (
            "/v1/components/com.example.hello/logs?follow=maybe",
            "query parameter follow: expected 1 or 0 (true/false), got 'maybe'",
        ),
        (
            "/v1/deployments?limit=0",
            "query parameter limit: expected an integer from 1 to 1000, got '0'",
        ),
        ("/v1/events?since=-1", "query parameter since: expected an integer from 0 to "),
    ],
)
def test_a_bad_query_parameter_is_400(http: Http, hello: str, path: str, message: str) -> None:
    reply = http.get(path)
    assert reply.status == 400
    assert reply.error["code"] == "bad_request"
    assert reply.error["message"].startswith(message)


def test_an_unexpected_exception_is_500_and_the_server_carries_on(
    http: Http, hello: str, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    server.agent.explode.add("get_component")
    with caplog.at_level(logging.ERROR, logger="keystone_edge.api.server"):
        reply = http.get(f"/v1/components/{hello}")
    assert reply.status == 500
    assert reply.error == {
        "code": "internal",
        "message": "internal error in GET /v1/components/com.example.hello: "
        "RuntimeError: get_component exploded on purpose",
        "details": {},
        "hint": "this is a bug in the agent; its log has the traceback",
    }
    [record] = caplog.records
    assert record.getMessage() == "local API: GET /v1/components/com.example.hello failed"
    assert record.exc_info is not None
    assert "exploded on purpose" in str(record.exc_info[1])
    # The same connection and the same server answer the next request.
    assert http.get("/v1/components").status == 200
    server.agent.explode.clear()
    assert http.get(f"/v1/components/{hello}").status == 200
