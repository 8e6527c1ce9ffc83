"""How errors cross the local API, in both directions.

Every error response has the body ``{"error": {"code", "message", "details"[, "hint"]}}``.
``code`` is the stable :attr:`KeyStoneError.code`; scripts branch on it, never on the
message. ``details`` carries the error's structured fields (file, key, line and the list
of problems of a recipe error, the chain of a resolution error, ...), ``hint`` what the
user can do about it.

HTTP status by code (the status says whose move it is; the code says what happened):

==========================================================  ======
``bad_request`` (unparsable body, wrong types, bad query)   400
``not_found`` (component, deployment, route, action)        404
``method_not_allowed``                                      405
``conflict``, ``invalid_transition`` (wrong current state)  409
``payload_too_large``                                       413
``recipe_invalid``, ``deployment_invalid``,                 422
``resolution_failed``, ``agent_config_invalid``
``transport_failed``                                        502
anything else (``internal``, ``store_failed``, ...)         500
==========================================================  ======

400 means "the request could not be read"; 422 means "it was read, and what it asks for
is wrong" (an invalid recipe, an unsatisfiable version range).

The client turns an error body back into the same :class:`KeyStoneError` subclass with
the same code and message, so the CLI's exit codes do not depend on which side of the
socket an error was found.
"""

from __future__ import annotations

from typing import Any

import msgspec

from keystone_edge.errors import (
    AgentConfigError,
    ArtifactError,
    ComponentError,
    DeploymentError,
    DocumentError,
    InvalidTransition,
    KeyStoneError,
    NotFound,
    RecipeError,
    RequestError,
    ResolutionError,
    StoreError,
    TransportError,
)

__all__ = [
    "ApiRequestError",
    "ErrorBody",
    "ErrorInfo",
    "error_body",
    "error_from_body",
    "status_for",
]


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: dict[str, Any]  # required, so that it is always sent (maybe empty)
    hint: str | None = None  # sent only when there is one


class ErrorBody(msgspec.Struct):
    """The body of every error response."""

    error: ErrorInfo


class ApiRequestError(RequestError):
    """A request the API layer itself refuses, with the offending field in ``details``."""

    def __init__(
        self, message: str, *, code: str = "bad_request", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.details = {k: v for k, v in (details or {}).items() if v is not None}


_STATUS: dict[str, int] = {
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "invalid_transition": 409,
    "stale_deployment": 409,
    "payload_too_large": 413,
    "recipe_invalid": 422,
    "deployment_invalid": 422,
    "resolution_failed": 422,
    "agent_config_invalid": 422,
    "transport_failed": 502,
}


def status_for(code: str) -> int:
    return _STATUS.get(code, 500)


def _located(exc: DocumentError) -> dict[str, Any]:
    """File, key, line (and reason) of a document error, and of each of its problems."""

    def where(e: DocumentError) -> dict[str, Any]:
        return _present(file=e.file, key=e.key, line=e.line, reason=e.reason)

    details = where(exc)
    if exc.problems:
        details["problems"] = [{**where(p), "message": str(p)} for p in exc.problems]
    return details


def _details(exc: KeyStoneError) -> dict[str, Any]:
    if isinstance(exc, ResolutionError):
        return {"chain": list(exc.chain)} if exc.chain else {}
    if isinstance(exc, DeploymentError):
        return {
            **_located(exc),
            **_present(deployment_id=exc.deployment_id, component=exc.component),
        }
    if isinstance(exc, DocumentError):
        return _located(exc)
    if isinstance(exc, ArtifactError):
        return _present(uri=exc.uri, component=exc.component)
    if isinstance(exc, ComponentError):
        return _present(
            component=exc.component,
            exit_code=exc.exit_code,
            signal=exc.signal,
            output=exc.output,
        )
    if isinstance(exc, InvalidTransition):
        return _present(component=exc.component, state=exc.state, event=exc.event)
    if isinstance(exc, ApiRequestError):
        return dict(exc.details)
    return {}


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def error_body(exc: KeyStoneError) -> ErrorBody:
    return ErrorBody(
        ErrorInfo(code=exc.code, message=exc.message, details=_details(exc), hint=exc.hint)
    )


def _problems(details: dict[str, Any]) -> list[dict[str, Any]]:
    problems = details.get("problems", [])
    return [p for p in problems if isinstance(p, dict)] if isinstance(problems, list) else []


def _location(problem: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": str(problem.get("reason", problem.get("message", ""))),
        "file": problem.get("file"),
        "key": problem.get("key"),
        "line": problem.get("line"),
    }


def error_from_body(info: ErrorInfo) -> KeyStoneError:
    """Rebuild the error the agent raised, with the same class, code, message and fields."""
    code, message, details = info.code, info.message, info.details
    exc: KeyStoneError
    if code == "not_found":
        exc = NotFound(message)
    elif code == "recipe_invalid":
        exc = RecipeError(
            str(details.get("reason", message)),
            file=details.get("file"),
            key=details.get("key"),
            line=details.get("line"),
            problems=[RecipeError(**_location(p)) for p in _problems(details)],
        )
    elif code == "resolution_failed":
        exc = ResolutionError(message, chain=[str(c) for c in details.get("chain", [])])
    elif code == "deployment_invalid":
        exc = DeploymentError(
            str(details.get("reason", message)),
            file=details.get("file"),
            key=details.get("key"),
            line=details.get("line"),
            deployment_id=details.get("deployment_id"),
            component=details.get("component"),
            problems=[DeploymentError(**_location(p)) for p in _problems(details)],
        )
    elif code == "agent_config_invalid":
        exc = AgentConfigError(
            message,
            problems=[AgentConfigError(**_location(p)) for p in _problems(details)],
        )
        exc.file, exc.key, exc.line = details.get("file"), details.get("key"), details.get("line")
    elif code == "artifact_failed":
        exc = ArtifactError(message, uri=details.get("uri"), component=details.get("component"))
    elif code == "component_failed":
        exc = ComponentError(
            message,
            component=details.get("component"),
            exit_code=details.get("exit_code"),
            signal=details.get("signal"),
            output=details.get("output"),
        )
    elif code == "invalid_transition":
        exc = InvalidTransition(
            str(details.get("component", "")),
            str(details.get("state", "")),
            str(details.get("event", "")),
        )
    elif code == "store_failed":
        exc = StoreError(message)
    elif code == "transport_failed":
        exc = TransportError(message)
    elif code in {"bad_request", "conflict", "payload_too_large", "method_not_allowed"}:
        exc = ApiRequestError(message, code=code, details=details)
    else:
        exc = KeyStoneError(message)
        exc.code = code
    # The agent's wording wins over whatever the constructor above derived from the
    # fields: the user must read exactly what the agent said.
    exc.message = message
    exc.args = (message,)
    if info.hint is not None:
        exc.hint = info.hint
    return exc
