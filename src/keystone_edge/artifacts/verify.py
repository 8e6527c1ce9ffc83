"""Verification rules for artifacts, free of I/O.

Every decision about whether an artifact may be used lives here, as plain functions that take
values and either return or raise :class:`~keystone_edge.errors.ArtifactError`; the cache
and the fetchers do the reading and writing and call these (the split python-tuf's ngclient
makes between ``TrustedMetadataSet`` and ``Updater``). Rules:

- A digest is 64 lower-case hex digits (the recipe model's pattern). It is checked again
  here because it becomes a directory name in the cache: a value that bypassed the model
  (a struct built in code) must not be able to name ``../x``.
- Content is accepted only if its sha256 and, when the recipe gives one, its size match.
  Messages read "expected X, got Y" so that an operator can compare them with the recipe.
- Only ``file://`` artifacts may lack a sha256 (the digest is then computed from the local
  file); a remote artifact without one is refused before anything is downloaded.
- A URI is shown (logs, errors, events, cache records) without user info, query or
  fragment (:func:`public_uri`): a ``user:password@`` and a pre-signed URL's query are
  credentials.
- An artifact's file name is its ``name`` field, else the last segment of the URI's path.
  It must be a single path segment: no ``/``, not ``.`` or ``..``, no NUL, and not one of
  the names the cache reserves for its own records (``.keystone-*``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from keystone_edge.errors import ArtifactError
from keystone_edge.recipe.model import Artifact

__all__ = [
    "LOCAL_SCHEME",
    "RESERVED_PREFIX",
    "artifact_file_name",
    "check_digest",
    "check_file_name",
    "check_sha256_format",
    "check_size",
    "public_uri",
    "require_digest",
    "supported_scheme",
    "uri_scheme",
    "verify_content",
]

LOCAL_SCHEME = "file"
# Names in a cache entry (and in temp names next to it) that start with this belong to the
# cache itself; an artifact may not use them.
RESERVED_PREFIX = ".keystone-"

_SHA256 = re.compile(r"[0-9a-f]{64}")


def public_uri(uri: str) -> str:
    """``uri`` without user info, query or fragment (see the module rules)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: leave it out rather than fail to show the URI
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def check_sha256_format(uri: str, digest: str) -> None:
    if not _SHA256.fullmatch(digest):
        raise ArtifactError(
            f"invalid sha256 for {uri}: expected 64 lower-case hex digits, got {digest!r}",
            uri=uri,
        )


def uri_scheme(uri: str) -> str:
    """The URI's scheme, lower-cased; an error if it has none."""
    scheme = urlsplit(uri).scheme.lower()
    if not scheme:
        raise ArtifactError(
            f"artifact URI {uri!r} has no scheme: expected file:///absolute/path or a URL",
            uri=uri,
        )
    return scheme


def supported_scheme(uri: str, supported: Collection[str]) -> str:
    """The URI's scheme if a fetcher handles it; else an error listing those that do."""
    scheme = uri_scheme(uri)
    if scheme not in supported:
        listed = ", ".join(sorted(supported)) or "none"
        raise ArtifactError(
            f"unsupported artifact URI scheme '{scheme}' in {uri}; supported: {listed}",
            uri=uri,
        )
    return scheme


def require_digest(uri: str, sha256: str | None) -> None:
    """Refuse a remote artifact without a digest: there would be nothing to verify it by."""
    if sha256 is None and uri_scheme(uri) != LOCAL_SCHEME:
        raise ArtifactError(f"remote artifact {uri} has no sha256", uri=uri)
    if sha256 is not None:
        check_sha256_format(uri, sha256)


def check_file_name(uri: str, name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise ArtifactError(
            f"invalid artifact file name {name!r} for {uri}: expected a single path segment",
            uri=uri,
        )
    if name.startswith(RESERVED_PREFIX):
        raise ArtifactError(
            f"invalid artifact file name {name!r} for {uri}: names starting with "
            f"{RESERVED_PREFIX!r} are reserved for the artifact cache",
            uri=uri,
        )
    return name


def artifact_file_name(artifact: Artifact) -> str:
    """The file name the artifact is stored and placed under (see the module rules)."""
    if artifact.name is not None:
        return check_file_name(artifact.uri, artifact.name)
    last = unquote(urlsplit(artifact.uri).path).rsplit("/", 1)[-1]
    if not last:
        raise ArtifactError(
            f"cannot derive a file name from {artifact.uri}: its path has no last segment; "
            "set the artifact's 'name'",
            uri=artifact.uri,
        )
    return check_file_name(artifact.uri, last)


def check_size(uri: str, expected: int | None, actual: int, *, source: str | None = None) -> None:
    if expected is not None and actual != expected:
        raise ArtifactError(
            f"size mismatch for {source or uri}: expected {expected} bytes, got {actual} bytes",
            uri=uri,
        )


def check_digest(uri: str, expected: str | None, actual: str, *, source: str | None = None) -> None:
    if expected is not None and actual != expected:
        raise ArtifactError(
            f"sha256 mismatch for {source or uri}: expected {expected}, got {actual}", uri=uri
        )


def verify_content(
    uri: str,
    *,
    sha256: str,
    size: int,
    expected_sha256: str | None,
    expected_size: int | None,
    source: str | None = None,
) -> None:
    """Accept content whose digest and size match what the recipe expects.

    ``source`` names where the bytes came from when that is not ``uri`` itself (a file
    found in an operator's artifacts directory). Size is checked first: a truncated
    download explains a digest mismatch, not the other way round.
    """
    check_size(uri, expected_size, size, source=source)
    check_digest(uri, expected_sha256, sha256, source=source)


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """Bounds on what one archive may unpack to."""

    max_bytes: int = 4 * 2**30  # 4 GiB of file data
    max_entries: int = 100_000
