"""Fetchers: how an artifact's bytes get from its URI into a file the cache owns.

:class:`ArtifactFetcher` is the plug point: the URI schemes a fetcher serves and one
coroutine. Its contract, which the cache relies on:

- ``dest`` does not exist; its directory does, belongs to the cache and lies on the cache's
  filesystem. The fetcher creates ``dest`` and writes the artifact's bytes into it.
- It returns the sha256 and size of what it wrote, computed while writing; never a value
  copied from the expectations.
- ``expected_sha256`` and ``expected_size`` are hints: a fetcher may stop early once the
  content cannot match (more bytes than expected, a ``Content-Length`` that disagrees).
  The cache verifies the result itself either way; a fetcher never decides acceptance.
- Retries, ``Range`` resume and timeouts within one call are the fetcher's business.
- Failures raise :class:`~keystone_edge.errors.ArtifactError` naming the URI or path;
  foreign exceptions (``OSError``, HTTP library errors) are wrapped here, once, with
  ``raise ... from exc``.
- Blocking work runs off the event loop, and once ``fetch`` has returned or raised
  (cancellation included) nothing is still writing to ``dest``.

:class:`ResumableFetcher` is the optional extension for fetchers whose downloads can
outlive a call (``HttpFetcher``): the cache gives them a ``partial`` path per digest, which
they may use (with sibling names starting with its name) to keep a partial download for a
later call, and a ``progress`` callback, called on the event loop's thread with
``(bytes_done, bytes_total or None)``.

:class:`LocalFetcher` serves ``file:///absolute/path`` URIs (the recipe loader rewrites
relative paths to absolute file URIs, percent-encoded as :meth:`pathlib.Path.as_uri`
writes them).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from keystone_edge.artifacts._offload import run_in_thread
from keystone_edge.artifacts.verify import LOCAL_SCHEME
from keystone_edge.errors import ArtifactError

__all__ = [
    "ArtifactFetcher",
    "FetchResult",
    "LocalFetcher",
    "ProgressCallback",
    "ResumableFetcher",
    "file_uri_path",
]

# Large enough that per-chunk overhead vanishes, small enough to stay out of the agent's
# resident-memory budget with a few fetches in flight.
DEFAULT_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetcher wrote: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


class ArtifactFetcher(Protocol):
    """Gets an artifact's bytes from URIs of some schemes into a file (see module rules)."""

    @property
    def schemes(self) -> frozenset[str]:
        """Lower-case URI schemes this fetcher serves, e.g. ``{"https", "http"}``."""
        ...

    async def fetch(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str | None,
        expected_size: int | None,
    ) -> FetchResult: ...


ProgressCallback = Callable[[int, int | None], None]
"""``(bytes_done, bytes_total)``, the total None while unknown; called on the loop's thread."""


@runtime_checkable
class ResumableFetcher(ArtifactFetcher, Protocol):
    """A fetcher that can keep a partial download across calls and report progress."""

    async def fetch_resumable(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str,
        expected_size: int | None,
        partial: Path,
        progress: ProgressCallback | None = None,
    ) -> FetchResult: ...


def file_uri_path(uri: str) -> Path:
    """The absolute path a ``file:///absolute/path`` URI names; an error for anything else."""
    parts = urlsplit(uri)
    expected = "expected file:///absolute/path"
    if parts.scheme.lower() != LOCAL_SCHEME:
        raise ArtifactError(f"{expected}, got {uri}", uri=uri)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(
            f"{expected}, got {uri} (which names the host {parts.netloc!r})", uri=uri
        )
    if parts.query or parts.fragment:
        # An unencoded '?' or '#' in a path would otherwise silently shorten it.
        raise ArtifactError(
            f"{expected}, got {uri} (a query or fragment; percent-encode '?' and '#')", uri=uri
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ArtifactError(f"{expected}, got {uri} (a relative path)", uri=uri)
    return Path(path)


class LocalFetcher:
    """Copies local files into the cache, hashing them on the way, in a worker thread.

    The copy keeps the source's permission bits except setuid/setgid/sticky and group or
    other write (``mode & 0o755``), so an executable stays executable.
    """

    schemes: frozenset[str] = frozenset({LOCAL_SCHEME})

    def __init__(self, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes: expected a positive number, got {chunk_bytes}")
        self._chunk_bytes = chunk_bytes

    async def fetch(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str | None,
        expected_size: int | None,
    ) -> FetchResult:
        # A local read is cheap and cannot be resumed or shortened usefully: the
        # expectations are left to the cache's verification.
        del expected_sha256, expected_size
        return await self.copy(file_uri_path(uri), dest, uri=uri)

    async def copy(self, source: Path, dest: Path, *, uri: str | None = None) -> FetchResult:
        """Copy ``source`` to the new file ``dest``, returning the digest and size copied."""
        return await run_in_thread(lambda stop: self._copy(source, dest, uri, stop))

    def _copy(
        self, source: Path, dest: Path, uri: str | None, stop: threading.Event
    ) -> FetchResult:
        try:
            # O_NONBLOCK: opening a FIFO must fail the type check below, not hang forever.
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact file not found: {source}", uri=uri) from exc
        except OSError as exc:
            raise ArtifactError(
                f"cannot read artifact file {source}: {exc.strerror}", uri=uri
            ) from exc
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ArtifactError(f"artifact file {source} is {kind}", uri=uri)
        with os.fdopen(fd, "rb", buffering=0) as src:
            try:
                return self._stream(src, dest, stat.S_IMODE(mode) & 0o755, stop, source)
            except OSError as exc:
                raise ArtifactError(
                    f"cannot copy artifact file {source} to {dest}: {exc.strerror or exc}",
                    uri=uri,
                ) from exc

    def _stream(
        self, src: io.FileIO, dest: Path, mode: int, stop: threading.Event, source: Path
    ) -> FetchResult:
        digest = hashlib.sha256()
        size = 0
        buf = bytearray(self._chunk_bytes)
        view = memoryview(buf)
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(out_fd, "wb") as out:
            while n := src.readinto(buf):
                if stop.is_set():
                    raise ArtifactError(f"copying {source} was cancelled")
                digest.update(view[:n])
                out.write(view[:n])
                size += n
            os.fchmod(out_fd, mode)
        return FetchResult(digest.hexdigest(), size)
