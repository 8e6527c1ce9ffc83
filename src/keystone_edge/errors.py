"""The one error root of KeyStone, split by whose fault an error is.

Every error KeyStone raises on purpose derives from :class:`KeyStoneError`. Each class
carries a stable ``code`` that the local API returns and scripts can rely on, and the
fields a user needs to act (file, key path, line, component, exit code, signal).
Foreign exceptions (sqlite3, OSError, msgspec, HTTP libraries) are wrapped once, at the
boundary of the module that talks to them, with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AgentConfigError",
    "ArtifactError",
    "ComponentError",
    "DeploymentError",
    "DocumentError",
    "InvalidTransition",
    "KeyStoneError",
    "NotFound",
    "RecipeError",
    "RequestError",
    "ResolutionError",
    "StoreError",
    "TransportError",
]


class KeyStoneError(Exception):
    """Root of every error KeyStone raises on purpose."""

    code = "internal"
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class DocumentError(KeyStoneError):
    """A file the operator wrote (agent config, recipe, deployment document) is malformed.

    Carries the file, the key path and the line where the parser knows it. A document with
    several mistakes raises one error whose ``problems`` hold one error per mistake and
    whose ``str()`` lists them all, so one run shows every mistake.
    """

    # Shown in place of the file name when there is none (e.g. a recipe sent as data).
    default_file: str | None = None

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        problems: Sequence[DocumentError] = (),
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        self.reason = message
        self.problems: tuple[DocumentError, ...] = tuple(problems)
        super().__init__(self._format())

    def _format(self) -> str:
        if self.problems:
            return "\n".join(p.message for p in self.problems)
        place = self.file or self.default_file
        if place and self.line is not None:
            place = f"{place}:{self.line}"
        where = ": ".join(p for p in (place, self.key) if p)
        return f"{where}: {self.reason}" if where else self.reason


class AgentConfigError(DocumentError):
    """The operator's agent configuration (``etc/agent.toml``) is wrong."""

    code = "agent_config_invalid"


class RecipeError(DocumentError):
    """A recipe (or a file it imports or references) is malformed."""

    code = "recipe_invalid"
    default_file = "<recipe>"


class ResolutionError(KeyStoneError):
    """No set of component versions satisfies a deployment (conflict, cycle, missing)."""

    code = "resolution_failed"

    def __init__(self, message: str, *, chain: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.chain = tuple(chain)


class DeploymentError(DocumentError):
    """A deployment document is malformed, or applying a deployment failed."""

    code = "deployment_invalid"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        deployment_id: str | None = None,
        component: str | None = None,
        problems: Sequence[DocumentError] = (),
    ) -> None:
        super().__init__(message, file=file, key=key, line=line, problems=problems)
        self.deployment_id = deployment_id
        self.component = component


class ArtifactError(KeyStoneError):
    """An artifact could not be fetched, verified or unpacked."""

    code = "artifact_failed"

    def __init__(self, message: str, *, uri: str | None = None, component: str | None = None):
        super().__init__(message)
        self.uri = uri
        self.component = component


class ComponentError(KeyStoneError):
    """A component's own process or script failed (exit code, signal, timeout)."""

    code = "component_failed"

    def __init__(
        self,
        message: str,
        *,
        component: str | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        output: str | None = None,
    ) -> None:
        super().__init__(message)
        self.component = component
        self.exit_code = exit_code
        self.signal = signal
        self.output = output


class InvalidTransition(KeyStoneError):  # noqa: N818 - named for what it is, like h11's
    """A lifecycle event arrived in a state that does not accept it."""

    code = "invalid_transition"

    def __init__(self, component: str, state: str, event: str) -> None:
        super().__init__(f"{component}: event {event} is not valid in state {state}")
        self.component = component
        self.state = state
        self.event = event


class NotFound(KeyStoneError):  # noqa: N818 - reads as the API code it maps to
    """A component, deployment or other named object does not exist."""

    code = "not_found"


class RequestError(KeyStoneError):
    """A request to the local API is malformed or not allowed in the current state."""

    code = "bad_request"

    def __init__(self, message: str, *, code: str = "bad_request", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code


class StoreError(KeyStoneError):
    """The state database could not be read or written."""

    code = "store_failed"


class TransportError(KeyStoneError):
    """Talking to the agent or to a control plane failed (socket, network, TLS)."""

    code = "transport_failed"
