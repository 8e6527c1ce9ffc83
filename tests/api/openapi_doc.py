"""``docs/openapi.yaml``: its ``components.schemas`` are generated from the msgspec Structs.

Everything above the generated block is written by hand (paths, parameters, examples);
the block below the marker line is this module's output. After changing a record, the
request or the error body, rewrite it with::

    .venv/bin/python -m tests.api.openapi_doc

``test_openapi.py`` fails while the committed file differs from what this produces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from keystone_edge.api._errors import ErrorBody
from keystone_edge.api.artifacts import ArtifactInfo, GcOutcome, GcRequest
from keystone_edge.api.control import ComponentDetail, DeploymentRequest, Readiness
from keystone_edge.observe.events import Event
from keystone_edge.store.records import ComponentRecord, DeploymentRecord

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MARKER = (
    "    # Generated from the msgspec Structs by `python -m tests.api.openapi_doc`; do not edit.\n"
)
TYPES = (
    ComponentRecord,
    ComponentDetail,
    DeploymentRecord,
    DeploymentRequest,
    Event,
    ErrorBody,
    Readiness,
    ArtifactInfo,
    GcRequest,
    GcOutcome,
)


def schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        TYPES, ref_template="#/components/schemas/{name}"
    )
    return dict(sorted(components.items()))


def render(current: str) -> str:
    """``current`` with everything after the marker replaced by the generated schemas."""
    head, marker, _ = current.partition(MARKER)
    if not marker:
        raise ValueError(f"{DOCUMENT}: the marker line is missing:\n{MARKER}")
    body = yaml.safe_dump(schemas(), sort_keys=False, width=96, allow_unicode=True)
    return head + MARKER + "".join(f"    {line}\n" for line in body.splitlines())


def main() -> None:
    DOCUMENT.write_text(render(DOCUMENT.read_text()))
    print(f"wrote {DOCUMENT}")


if __name__ == "__main__":
    main()
