"""A download in progress on disk: its bytes, its sha256 so far, and a record to resume it.

Blocking code, for worker threads. A persistent partial download of the artifact with
digest D lives in the cache's partial directory as two files: ``D`` (the bytes received)
and ``D.json`` (the record: which URI it came from, how many bytes are durable, the
validator for ``If-Range``, the total size if known). Rules:

- The record's ``length`` counts bytes known to be on disk: a record is written only
  after ``fdatasync`` of the data file (a checkpoint). On open, the data file is cut back
  to that length, since a power loss can leave a tail of garbage or zeros past it, and a
  data file without a readable record is started over. Checkpoints happen every
  ``checkpoint_seconds`` while bytes arrive and whenever an attempt ends.
- The record names its URI by a sha256 of it (a pre-signed URL is a credential). The
  bytes of a digest are the same from any mirror, so a partial from another URI is still
  resumed, but without its validator.
- One writer: the data file is ``flock``-ed while open. A partial locked by another
  process (another agent on the same root) is not touched; the caller downloads without
  one.
- The running sha256 covers exactly the bytes in the file: resuming re-reads the kept
  prefix; starting over truncates and resets it.
- Hashing and writing run in a thread of their own, fed ~1 MiB batches through a bounded
  queue, so the receiving thread keeps receiving while earlier bytes are hashed and
  written (``hashlib`` and ``os.writev`` release the GIL). A write error (``ENOSPC``) is
  raised by the next call.
- :func:`sweep` removes what a crash or an abandoned download left: records without
  data, data without a record, stale temp records, and partials untouched for longer
  than the maximum age; never a partial another process holds locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

__all__ = ["PartialDownload", "StoppedError", "sweep", "uri_key"]

RECORD_SUFFIX = ".json"
# Chunks are handed to the sink thread in batches of about this many bytes (one queue
# operation and one writev per batch rather than per 64 KiB read; measured 10-40 % faster
# than a queue operation per chunk), at most this many batches queued: with one being
# filled and one being hashed and written, about 3 MiB in flight.
_BATCH_BYTES = 1 << 20
_QUEUE_BATCHES = 1
_TMP_SUFFIX = ".json.tmp"
_READ_BYTES = 1 << 20


class StoppedError(Exception):
    """The work was asked to stop (the awaiting task was cancelled)."""


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    uri_key: str
    length: int
    validator: str | None = None
    total: int | None = None


def uri_key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    written = os.writev(fd, chunks)
    if written == sum(len(c) for c in chunks):
        return
    rest = memoryview(b"".join(chunks))[written:]  # a short write: rare, so simple
    while rest:
        rest = rest[os.write(fd, rest) :]


class _Stage:
    """One worker thread applying ``work`` to batches, in order, through a bounded queue.

    An exception from ``work`` (``OSError``: a full disk) stops the work (later batches
    are dropped, so that :meth:`put` never blocks on a dead consumer) and is raised by the
    next :meth:`put` or :meth:`flush`.
    """

    def __init__(self, name: str, work: Callable[[list[bytes]], None], depth: int) -> None:
        self._work = work
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:
                    self._work(batch)
            except BaseException as exc:  # noqa: BLE001 - raised in the producer's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, batch: list[bytes]) -> None:
        self._raise()
        self._queue.put(batch)

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class _Sink:
    """Hashes and writes batches of chunks, in order, in one thread of its own.

    One thread for both, not one each: on the two-core reference machine a third thread
    made no measurable difference (the receiver needs ~0.6 s of CPU per GB, hashing
    ~0.55 s, the page-cache write ~0.2 s) and cost another batch of memory
    (``bench/download_throughput.py``).
    """

    def __init__(self, fd: int, digest: hashlib._Hash, depth: int) -> None:
        self.fd = fd
        self.digest = digest
        self._stage = _Stage("keystone-fetch-sink", self._work, depth)

    def _work(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self.digest.update(chunk)
        _write_all(self.fd, batch)

    def put(self, batch: list[bytes]) -> None:
        self._stage.put(batch)

    def flush(self) -> None:
        """Wait until every batch put so far is hashed and written."""
        self._stage.flush()

    def close(self) -> None:
        self._stage.close()


class PartialDownload:
    """The bytes of one artifact received so far (see the module rules).

    Create with :meth:`resume` (persistent, in the partial directory) or :meth:`create`
    (a plain new file: the download can resume within one fetch only). Not thread-safe:
    one worker thread at a time drives it.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        *,
        offset: int,
        digest: hashlib._Hash,
        record: _Record | None,
        checkpoint_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.offset = offset
        self._fd = fd
        self._record = record  # None: not persistent
        self._checkpoint_seconds = checkpoint_seconds
        self._clock = clock
        self._last_checkpoint = clock()
        self._durable = offset
        self._sink = _Sink(fd, digest, _QUEUE_BATCHES)
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._closed = False

    @classmethod
    def create(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> PartialDownload:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        return cls(
            path,
            fd,
            offset=0,
            digest=hashlib.sha256(),
            record=None,
            checkpoint_seconds=0.0,
            clock=clock,
        )

    @classmethod
    def resume(
        cls,
        path: Path,
        *,
        uri: str,
        stop: threading.Event,
        checkpoint_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> PartialDownload | None:
        """The persistent partial at ``path``, created empty if there is none.

        None when another process holds it. Re-hashes the bytes kept (checking ``stop``
        between megabytes).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            key = uri_key(uri)
            record = _read_record(path)
            size = os.fstat(fd).st_size
            if record is None:
                record = _Record(uri_key=key, length=0)
            keep = min(record.length, size)
            if keep != size:
                os.ftruncate(fd, keep)
            if record.uri_key != key:
                record = _Record(uri_key=key, length=keep)
            record.length = keep
            digest = _hash_prefix(fd, keep, stop)
            os.lseek(fd, keep, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path,
            fd,
            offset=keep,
            digest=digest,
            record=record,
            checkpoint_seconds=checkpoint_seconds,
            clock=clock,
        )

    @property
    def persistent(self) -> bool:
        return self._record is not None

    @property
    def validator(self) -> str | None:
        return self._record.validator if self._record is not None else None

    def set_response(self, validator: str | None, total: int | None) -> None:
        """Remember what the server said about the content, for a later resume."""
        record = self._record
        if record is not None and (record.validator, record.total) != (validator, total):
            record.validator = validator
            record.total = total
            self._write_record()

    def append(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        self.offset += len(chunk)
        if self._batch_bytes < _BATCH_BYTES:
            return
        self._sink.put(self._batch)
        self._batch = []
        self._batch_bytes = 0
        if (
            self._record is not None
            and self._clock() - self._last_checkpoint >= self._checkpoint_seconds
        ):
            self.checkpoint()

    def flush(self) -> None:
        """Wait until every byte appended is hashed and written."""
        if self._batch:
            self._sink.put(self._batch)
            self._batch = []
            self._batch_bytes = 0
        self._sink.flush()

    def checkpoint(self) -> None:
        """Make the bytes so far durable and record their length."""
        self.flush()
        self._last_checkpoint = self._clock()
        if self._record is None or self._durable == self.offset:
            return
        os.fdatasync(self._fd)
        self._durable = self._record.length = self.offset
        self._write_record()

    def restart(self) -> None:
        """Drop every byte kept: the next body starts at zero."""
        self.flush()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._sink.digest = hashlib.sha256()
        self.offset = self._durable = 0
        if self._record is not None:
            self._record.length = 0
            self._record.validator = self._record.total = None
            self._write_record()

    def sha256(self) -> str:
        self.flush()
        return self._sink.digest.hexdigest()

    def finish(self, dest: Path) -> None:
        """Close and move the bytes to ``dest`` (same filesystem); the record goes."""
        self.flush()
        self.close()
        if self.path != dest:
            self.path.rename(dest)
        if self._record is not None:
            _record_path(self.path).unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and delete the bytes and the record."""
        self.close()
        self.path.unlink(missing_ok=True)
        _record_path(self.path).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the sink and close the file (releasing the lock); the files stay."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sink.close()
        finally:
            os.close(self._fd)

    def _write_record(self) -> None:
        assert self._record is not None
        record = _record_path(self.path)
        tmp = self.path.with_name(self.path.name + _TMP_SUFFIX)
        tmp.write_bytes(msgspec.json.encode(self._record))
        # No fsync: a lost or torn record only means resuming from fewer bytes (or none).
        tmp.replace(record)


def _read_record(path: Path) -> _Record | None:
    try:
        return msgspec.json.decode(_record_path(path).read_bytes(), type=_Record)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def _hash_prefix(fd: int, length: int, stop: threading.Event) -> hashlib._Hash:
    digest = hashlib.sha256()
    buf = bytearray(_READ_BYTES)
    view = memoryview(buf)
    os.lseek(fd, 0, os.SEEK_SET)
    left = length
    while left > 0:
        if stop.is_set():
            raise StoppedError
        n = os.readv(fd, [view[: min(left, _READ_BYTES)]])
        if n == 0:
            raise OSError(errno.EIO, f"the partial file ended {left} bytes early")
        digest.update(view[:n])
        left -= n
    return digest


def sweep(directory: Path, *, max_age: float, now: float | None = None) -> list[Path]:
    """Remove stale and orphaned partial files from ``directory``; return what went."""
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    names = {p.name: p for p in directory.iterdir()}
    for name, path in names.items():
        if name.endswith(_TMP_SUFFIX):
            base = name.removesuffix(_TMP_SUFFIX)
        elif name.endswith(RECORD_SUFFIX):
            base = name.removesuffix(RECORD_SUFFIX)
        else:
            continue
        if base not in names:
            path.unlink(missing_ok=True)
            removed.append(path)
    for name, path in names.items():
        if name.endswith((RECORD_SUFFIX, _TMP_SUFFIX)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being downloaded by someone right now
            orphan = name + RECORD_SUFFIX not in names
            if orphan or now - os.fstat(fd).st_mtime > max_age:
                path.unlink(missing_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    _record_path(path).unlink()
                removed.append(path)
        finally:
            os.close(fd)
    return removed
