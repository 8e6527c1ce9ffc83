"""The content-addressed artifact cache: ``runtime/artifacts/<sha256>/<file name>``.

Rules:

- An entry is a directory named by its content's sha256, holding the artifact file and a
  record (``.keystone-entry.json``: file name, size, digest, and the URI it first came
  from, without query or credentials). A directory under a digest name without a readable
  record, or whose file is missing or of another size, is debris (a disk error, a hand
  edit): it is discarded and fetched again. Content is not re-hashed on every use; the
  fetch-time check is the one that counts.
- An artifact enters the cache only after verification. Its bytes are fetched into a
  private temp directory inside the cache root (same filesystem, so the final rename is
  atomic), checked against the recipe's sha256 and size, fsynced (file, record, then the
  directory) and only then renamed to its digest name, after which the root is fsynced.
  A failure or a cancellation removes the temp directory; nothing half-written is ever
  visible under a digest name, even after a power loss.
- Content is stored once: any artifact (another component, another version, another file
  name) with the same sha256 reuses the entry without copying. The file keeps the name it
  first arrived under; :meth:`ArtifactCache.materialize` places it under each artifact's
  own name.
- Sources, in order: the cache; then the operator's search directories (``--artifacts
  DIR``), matched by the artifact's file name, which requires a sha256 to verify the file
  against; then the URI, through the fetcher registered for its scheme. A scheme is only
  required to be supported when the URI is actually used, so an offline device can
  install from a search directory.
- Only ``file://`` artifacts may lack a sha256; the digest is then computed while copying.
- Concurrent :meth:`~ArtifactCache.ensure` calls for the same digest (two components of one
  deployment layer) are serialized by one asyncio lock per digest; the second finds the
  first's entry. For an artifact without a sha256 the lock is taken once the digest is
  known.
- Every use refreshes the entry directory's mtime: the last-used time that the LRU garbage
  collector orders entries by. Nothing else changes an entry directory after it is made.
- Partial downloads: a fetcher that can resume (:class:`ResumableFetcher`) keeps the bytes
  of an unfinished download in ``.keystone-partial/`` under the digest, so that the next
  ``ensure`` of that digest (after a failure or an agent restart) continues it. They are
  not cache entries (never listed, never used before verification) and
  :meth:`~ArtifactCache.remove_leftovers` spares them unless untouched for
  ``partial_max_age``.
- Progress: ``ensure(progress=...)`` gets ``(bytes_done, bytes_total)`` at most every
  ``PROGRESS_INTERVAL_SECONDS`` while bytes arrive (figures held back are delivered at the
  end of the interval, so a stalled download shows where it stalled) and once when the
  artifact is ready (also for a cache hit), on the event loop's thread; never after
  ``ensure`` has returned or raised.
- Removal (:meth:`~ArtifactCache.evict`, for the garbage collector) holds the digest's
  lock, renames the entry out of its digest name first, and skips an entry used since the
  caller looked at it.
- File work that can be slow (hashing, copying, fsync, unpacking) runs in worker threads
  that a cancellation waits for; ``OSError`` is wrapped in ``ArtifactError`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

import msgspec

from keystone_edge.artifacts import _partial
from keystone_edge.artifacts._offload import run_in_thread
from keystone_edge.artifacts.fetch import (
    DEFAULT_CHUNK_BYTES,
    ArtifactFetcher,
    FetchResult,
    LocalFetcher,
    ProgressCallback,
    ResumableFetcher,
)
from keystone_edge.artifacts.verify import (
    RESERVED_PREFIX,
    UnpackLimits,
    artifact_file_name,
    check_file_name,
    check_size,
    public_uri,
    require_digest,
    supported_scheme,
    verify_content,
)
from keystone_edge.errors import ArtifactError
from keystone_edge.recipe.model import Artifact

__all__ = ["ArtifactCache", "CacheEntry", "CachedArtifact"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

RECORD_NAME = f"{RESERVED_PREFIX}entry.json"
TEMP_PREFIX = f"{RESERVED_PREFIX}tmp-"
PARTIAL_DIR = f"{RESERVED_PREFIX}partial"
PROGRESS_INTERVAL_SECONDS = 0.25
DEFAULT_PARTIAL_MAX_AGE = 7 * 86400.0  # seconds

_DIGEST_NAME = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class CachedArtifact:
    """A verified artifact in the cache. ``path`` is shared: never modify it."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cache entry as listed: ``last_used`` is seconds since the epoch (its mtime)."""

    sha256: str
    file: str
    size: int
    last_used: float
    uri: str


class _EntryRecord(msgspec.Struct, forbid_unknown_fields=True):
    file: str
    size: int
    sha256: str
    uri: str


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _DigestLocks:
    """One asyncio lock per digest, dropped again when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    @contextlib.asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        slot = self._slots.setdefault(digest, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[digest]


class _Throttled:
    """Progress at most once per interval; a report held back is delivered at the end of
    the interval (so the last figures before a stall are seen), a final one at once."""

    def __init__(self, callback: ProgressCallback, interval: float) -> None:
        self._callback = callback
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._last_time = -interval
        self._last: tuple[int, int | None] | None = None
        self._held: tuple[int, int | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __call__(self, done: int, total: int | None) -> None:
        if self._closed or self._last == (done, total):
            return
        now = self._loop.time()
        final = total is not None and done >= total
        if final or now - self._last_time >= self._interval:
            self._deliver((done, total))
            return
        self._held = (done, total)
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_time + self._interval, self._release)

    def _release(self) -> None:
        self._timer = None
        if self._held is not None and not self._closed:
            self._deliver(self._held)

    def _deliver(self, figures: tuple[int, int | None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None
        self._last_time = self._loop.time()
        self._last = figures
        self._callback(*figures)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ArtifactCache:
    """Fetches, verifies and stores artifacts by digest; places them into components."""

    def __init__(
        self,
        root: Path,
        fetchers: Sequence[ArtifactFetcher],
        *,
        limits: UnpackLimits | None = None,
        partial_max_age: float = DEFAULT_PARTIAL_MAX_AGE,
    ) -> None:
        self.root = root
        self.limits = limits or UnpackLimits()
        self.partial_max_age = partial_max_age
        by_scheme: dict[str, ArtifactFetcher] = {}
        for fetcher in fetchers:
            for scheme in fetcher.schemes:
                if scheme in by_scheme:
                    raise ValueError(
                        f"two fetchers for URI scheme {scheme!r}: "
                        f"{by_scheme[scheme]!r} and {fetcher!r}"
                    )
                by_scheme[scheme] = fetcher
        self._fetchers: Mapping[str, ArtifactFetcher] = by_scheme
        # Search-directory files are local whatever fetchers are registered.
        self._local = LocalFetcher()
        self._locks = _DigestLocks()
        self._active_temps: set[Path] = set()

    @property
    def schemes(self) -> frozenset[str]:
        return frozenset(self._fetchers)

    # -- ensure --------------------------------------------------------------------------

    async def ensure(
        self,
        artifact: Artifact,
        *,
        search_dirs: Sequence[Path] = (),
        progress: ProgressCallback | None = None,
    ) -> CachedArtifact:
        """The verified cache entry for ``artifact``, fetching it first if needed.

        ``progress(bytes_done, bytes_total)`` follows a download (see the module rules).
        """
        uri = artifact.uri
        name = artifact_file_name(artifact)
        require_digest(uri, artifact.sha256)
        throttled = _Throttled(progress, PROGRESS_INTERVAL_SECONDS) if progress else None
        try:
            if artifact.sha256 is None:
                cached = await self._ensure_undigested(artifact, name, search_dirs)
            else:
                async with self._locks.hold(artifact.sha256):
                    cached = await self._ensure_digested(
                        artifact, artifact.sha256, name, search_dirs, throttled
                    )
            if throttled is not None:
                throttled(cached.size, cached.size)
        except OSError as exc:
            raise ArtifactError(
                f"cannot cache {uri} in {self.root}: {exc.strerror or exc}", uri=uri
            ) from exc
        finally:
            if throttled is not None:
                throttled.close()
        return cached

    async def _ensure_digested(
        self,
        artifact: Artifact,
        digest: str,
        name: str,
        search_dirs: Sequence[Path],
        progress: ProgressCallback | None = None,
    ) -> CachedArtifact:
        uri = artifact.uri
        hit = await _in_thread(self._lookup, digest)
        if hit is not None:
            # Same digest, another declared size: the recipe contradicts itself.
            check_size(uri, artifact.size, hit.size)
            return hit
        local = await _in_thread(_find_in, search_dirs, name) if search_dirs else None
        if local is not None:
            return await self._admit(
                artifact,
                name,
                lambda dest: self._local.copy(local, dest, uri=uri),
                source=f"{local} (local copy of {uri})",
            )
        fetcher = self._fetcher_for(uri)
        if isinstance(fetcher, ResumableFetcher):
            resumable = fetcher
            partial = self.root / PARTIAL_DIR / digest
            return await self._admit(
                artifact,
                name,
                lambda dest: resumable.fetch_resumable(
                    uri,
                    dest,
                    expected_sha256=digest,
                    expected_size=artifact.size,
                    partial=partial,
                    progress=progress,
                ),
            )
        return await self._admit(
            artifact,
            name,
            lambda dest: fetcher.fetch(
                uri, dest, expected_sha256=digest, expected_size=artifact.size
            ),
        )

    async def _ensure_undigested(
        self, artifact: Artifact, name: str, search_dirs: Sequence[Path]
    ) -> CachedArtifact:
        uri = artifact.uri
        local = await _in_thread(_find_in, search_dirs, name) if search_dirs else None
        if local is not None:
            raise ArtifactError(
                f"{local} matches artifact {uri} by name, but the recipe gives no sha256 to "
                "verify it against",
                uri=uri,
            )
        fetcher = self._fetcher_for(uri)
        return await self._admit(
            artifact,
            name,
            lambda dest: fetcher.fetch(
                uri, dest, expected_sha256=None, expected_size=artifact.size
            ),
        )

    def _fetcher_for(self, uri: str) -> ArtifactFetcher:
        return self._fetchers[supported_scheme(uri, self._fetchers)]

    async def _admit(
        self,
        artifact: Artifact,
        name: str,
        fetch: Callable[[Path], Awaitable[FetchResult]],
        *,
        source: str | None = None,
    ) -> CachedArtifact:
        """Fetch into a temp dir, verify, and rename into place (see the module rules)."""
        uri = artifact.uri
        # Two mkdir calls, done here rather than in a thread so that a cancellation cannot
        # land between creating the directory and recording it.
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))
        self._active_temps.add(tmp)
        try:
            result = await fetch(tmp / name)
            verify_content(
                uri,
                sha256=result.sha256,
                size=result.size,
                expected_sha256=artifact.sha256,
                expected_size=artifact.size,
                source=source,
            )
            if artifact.sha256 is not None:  # the caller holds this digest's lock
                return await _in_thread(self._commit, tmp, name, result, uri)
            async with self._locks.hold(result.sha256):
                hit = await _in_thread(self._lookup, result.sha256)
                if hit is not None:
                    return hit
                return await _in_thread(self._commit, tmp, name, result, uri)
        finally:
            await _in_thread(shutil.rmtree, tmp, ignore_errors=True)
            self._active_temps.discard(tmp)

    # -- blocking helpers (worker threads) -------------------------------------------------

    def _lookup(self, digest: str) -> CachedArtifact | None:
        entry = self.root / digest
        try:
            record = msgspec.json.decode((entry / RECORD_NAME).read_bytes(), type=_EntryRecord)
            check_file_name(record.uri, record.file)
            file_stat = (entry / record.file).stat()
        except (FileNotFoundError, NotADirectoryError):
            if os.path.lexists(entry):
                self._discard(entry, "it has no record or no file")
            return None
        except (msgspec.DecodeError, ArtifactError) as exc:
            self._discard(entry, f"its record is unreadable ({exc})")
            return None
        if record.sha256 != digest or not stat.S_ISREG(file_stat.st_mode):
            self._discard(entry, "its record does not describe it")
            return None
        if file_stat.st_size != record.size:
            self._discard(entry, f"its file has {file_stat.st_size} bytes, not {record.size}")
            return None
        os.utime(entry)  # last used, for the LRU garbage collector
        return CachedArtifact(entry / record.file, digest, record.size)

    def _discard(self, entry: Path, why: str) -> None:
        log.warning("discarding cache entry %s: %s", entry, why)
        # Rename first: a crash halfway through rmtree must not leave a partial directory
        # under a digest name.
        graveyard = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))
        entry.rename(graveyard / "entry")
        shutil.rmtree(graveyard, ignore_errors=True)

    def _commit(self, tmp: Path, name: str, result: FetchResult, uri: str) -> CachedArtifact:
        _fsync(tmp / name)
        record = _EntryRecord(
            file=name, size=result.size, sha256=result.sha256, uri=public_uri(uri)
        )
        record_path = tmp / RECORD_NAME
        record_path.write_bytes(msgspec.json.encode(record))
        _fsync(record_path)
        _fsync(tmp)
        final = self.root / result.sha256
        try:
            tmp.rename(final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Placed meanwhile by someone outside this process (another agent on the same
            # root): theirs is as good as ours if it is a valid entry.
            hit = self._lookup(result.sha256)
            if hit is None:
                raise ArtifactError(
                    f"cannot cache {uri}: {final} exists and is not a valid cache entry", uri=uri
                ) from exc
            return hit
        _fsync(self.root)
        return CachedArtifact(final / name, result.sha256, result.size)

    # -- upkeep --------------------------------------------------------------------------

    async def remove_leftovers(self) -> list[Path]:
        """Remove temp directories a crashed run left in the cache root; return them.

        Temp directories of fetches in progress in this process are kept, and so are
        partial downloads (they resume), except those untouched for ``partial_max_age``
        seconds or left without their record.
        """

        def sweep(_stop: threading.Event) -> list[Path]:
            if not self.root.is_dir():
                return []
            stale = [
                p
                for p in self.root.iterdir()
                if p.name.startswith(TEMP_PREFIX) and p not in self._active_temps
            ]
            for p in stale:
                shutil.rmtree(p, ignore_errors=True)
            partials = _partial.sweep(self.root / PARTIAL_DIR, max_age=self.partial_max_age)
            return stale + partials

        return await run_in_thread(sweep)

    async def entries(self) -> list[CacheEntry]:
        """Every valid entry, by digest. Invalid ones are skipped (``ensure`` replaces them)."""
        return await _in_thread(self._entries)

    def _entries(self) -> list[CacheEntry]:
        if not self.root.is_dir():
            return []
        found: list[CacheEntry] = []
        for entry in sorted(self.root.iterdir()):
            if not _DIGEST_NAME.fullmatch(entry.name):
                continue
            try:
                record = msgspec.json.decode((entry / RECORD_NAME).read_bytes(), type=_EntryRecord)
                check_file_name(record.uri, record.file)
                file_stat = (entry / record.file).stat()
                last_used = entry.stat().st_mtime
            except (OSError, msgspec.DecodeError, ArtifactError):
                continue
            if record.sha256 != entry.name or file_stat.st_size != record.size:
                continue
            found.append(CacheEntry(entry.name, record.file, record.size, last_used, record.uri))
        return found

    async def evict(self, digest: str, *, unused_since: float | None = None) -> bool:
        """Remove the entry ``digest``; False if it is gone or was used after ``unused_since``.

        ``unused_since`` is the last-used time the caller saw (:attr:`CacheEntry.last_used`):
        an entry used since then is kept, since someone just chose it.
        """
        if not _DIGEST_NAME.fullmatch(digest):
            raise ArtifactError(f"cannot evict {digest!r}: expected a sha256 digest")

        def remove() -> bool:
            entry = self.root / digest
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                return False
            if unused_since is not None and mtime > unused_since:
                return False
            graveyard = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))
            entry.rename(graveyard / "entry")
            _fsync(self.root)
            shutil.rmtree(graveyard, ignore_errors=True)
            return True

        try:
            async with self._locks.hold(digest):
                return await _in_thread(remove)
        except OSError as exc:
            raise ArtifactError(
                f"cannot remove the cache entry {digest}: {exc.strerror or exc}"
            ) from exc

    # -- materialize ---------------------------------------------------------------------

    async def materialize(
        self, cached: CachedArtifact, artifact: Artifact, dest_dir: Path
    ) -> list[Path]:
        """Place ``artifact`` into a component version's directory; return what was placed.

        ``unpack = false``: a copy named by the artifact's file name, with the cached file's
        mode. A copy and not a hard link, because install scripts may chmod or edit it and
        the cache must not change with them. ``unpack = true``: a safe unpack of the
        archive into ``dest_dir`` (see :mod:`~keystone_edge.artifacts.unpack`). Existing
        names in ``dest_dir`` are never overwritten. Removing the returned paths undoes it.
        """
        if artifact.sha256 is not None and artifact.sha256 != cached.sha256:
            raise ArtifactError(
                f"cannot place {artifact.uri}: expected the cache entry {artifact.sha256}, "
                f"got {cached.sha256}",
                uri=artifact.uri,
            )
        name = artifact_file_name(artifact)
        try:
            if artifact.unpack:
                return await run_in_thread(lambda stop: self._unpack(cached, dest_dir, stop))
            target = dest_dir / name
            await run_in_thread(lambda stop: _copy_out(cached.path, target, stop))
        except ArtifactError as exc:
            exc.uri = exc.uri or artifact.uri
            raise
        except OSError as exc:
            raise ArtifactError(
                f"cannot place {artifact.uri} in {dest_dir}: {exc.strerror or exc}",
                uri=artifact.uri,
            ) from exc
        return [target]

    def _unpack(self, cached: CachedArtifact, dest_dir: Path, stop: threading.Event) -> list[Path]:
        # tarfile, zipfile and the decompressors load only when an archive is unpacked.
        from keystone_edge.artifacts.unpack import safe_unpack

        placed = safe_unpack(
            cached.path,
            dest_dir,
            max_bytes=self.limits.max_bytes,
            max_entries=self.limits.max_entries,
            stop=stop,
        )
        # One sync(2) instead of an fsync per file: an archive can hold thousands of
        # files, each fsync a journal commit on an SD card, and Python has no syncfs(2).
        # Deployments are rare; a component directory that is empty after a power loss
        # while its checkpoint says "installed" is not.
        os.sync()
        return placed


async def _in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args)`` in a worker thread that a cancellation waits for.

    Waiting matters here: a commit still renaming its temp directory while the cancelled
    caller's cleanup deletes it would leave a broken entry, and a lookup still running
    after its caller released the digest lock could race the next one.
    """
    return await run_in_thread(lambda _stop: function(*args, **kwargs))


def _find_in(search_dirs: Sequence[Path], name: str) -> Path | None:
    for directory in search_dirs:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_out(source: Path, target: Path, stop: threading.Event) -> None:
    """Copy ``source`` to the new file ``target`` (temp, fsync, rename), keeping its mode."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise ArtifactError(f"cannot place {source.name} at {target}: it already exists")
    fd, tmp_name = tempfile.mkstemp(prefix=f"{RESERVED_PREFIX}{target.name}-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as out:
            _copy_chunks(src, out, stop, f"copying {source} to {target}")
            out.flush()
            os.fchmod(fd, stat.S_IMODE(os.fstat(src.fileno()).st_mode))
            os.fsync(fd)
        tmp.rename(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent)


def _copy_chunks(src: BinaryIO, out: BinaryIO, stop: threading.Event, what: str) -> None:
    while chunk := src.read(DEFAULT_CHUNK_BYTES):
        if stop.is_set():
            raise ArtifactError(f"{what} was cancelled")
        out.write(chunk)
