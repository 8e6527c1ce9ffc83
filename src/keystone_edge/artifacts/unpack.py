"""Safe unpacking of artifact archives: tar (plain, gz, xz, bz2, zst) and zip.

A verified archive is still only as careful as whoever built it, so unpacking treats every
archive as hostile. Rules:

- The format is detected from the content (magic bytes), never from the file name. zstd
  needs the optional ``zstandard`` module; without it a zstd archive is a clear error.
- Entry names must be relative, without ``..`` components (``\\`` counts as a separator
  for this check) and without NUL; ``.`` components are ignored. An absolute name or a
  ``..`` is refused: the entry "escapes the target directory".
- A symlink must resolve inside the destination: absolute targets are refused, relative
  ones are resolved against the real (symlink-free) path of their directory, and every
  symlink is checked again over the finished tree, because a later link can redirect an
  earlier one (``a -> s/../x`` is harmless until ``s -> .`` arrives).
- Nothing is written through a path that resolves outside the destination: the real path
  of an entry's parent is checked just before writing, and files are created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never through an existing file or link).
- A hard link must name an earlier regular file of the same archive.
- Device files, FIFOs and other special entries are refused.
- Sizes: the sizes the archive declares for its files may add up to at most ``max_bytes``
  (checked before each file is written; for zip, for the whole archive up front), and so
  may the bytes actually written, counted while writing because headers can lie. A file
  holding more bytes than its header declares is refused. The decompressed tar stream as
  a whole is bounded too (``max_bytes`` plus an allowance per entry for headers), so
  headers alone cannot make the reader do unbounded work.
- At most ``max_entries`` entries.
- Permissions: permission bits only (never setuid, setgid or sticky), no group or other
  write; the owner can always read and write; execute bits survive only when the owner's
  is set (the rule of tarfile's ``data`` filter). Directories are 0755. Ownership is never
  changed: everything belongs to the agent. File modification times are kept.
- A later entry with the name of an earlier file or link replaces it (as tar does); a
  directory entry merges with an existing directory; other collisions are refused.
- All or nothing: entries go into a private temp directory next to ``dest`` that is removed
  on any failure; on success its top-level entries are renamed into ``dest`` (created when
  missing). A name already present in ``dest`` is a conflict, found before anything moves.
- Tar members also pass ``tarfile.data_filter`` after these checks, as a second,
  independent line of defense.

Every refusal is an :class:`~keystone_edge.errors.ArtifactError` naming the archive and the
offending entry.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

from keystone_edge.artifacts.verify import RESERVED_PREFIX, UnpackLimits
from keystone_edge.errors import ArtifactError

__all__ = ["ArchiveFormat", "UnpackLimits", "detect_format", "safe_unpack"]

ArchiveFormat = Literal["tar", "tar.gz", "tar.xz", "tar.bz2", "tar.zst", "zip"]

CHUNK_BYTES = 1 << 20
# Unpacking happens in a directory next to the destination with this prefix; one left by a
# crash can be removed by name.
TEMP_PREFIX = f"{RESERVED_PREFIX}unpack-"
# Decompressed tar bytes allowed per entry beyond the file data itself: the 512-byte header,
# a pax header with its records, and padding to the next block.
_HEADER_ALLOWANCE_BYTES = 4096
# Covers the end-of-archive blocks and the padding of the last record.
_STREAM_SLACK_BYTES = 1 << 20
# A zip stores a symlink's target as the entry's data; PATH_MAX bounds a sane one.
_SYMLINK_TARGET_MAX_BYTES = 4096
_DIR_MODE = 0o755
_ZIP_UNIX = 3  # ZipInfo.create_system for archives made on Unix (APPNOTE 4.4.2)

_MAGIC: tuple[tuple[bytes, ArchiveFormat], ...] = (
    (b"\xfd7zXZ\x00", "tar.xz"),
    (b"\x28\xb5\x2f\xfd", "tar.zst"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip: just the end-of-central-directory record
    (b"\x1f\x8b\x08", "tar.gz"),
)


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Corrupt(Exception):  # noqa: N818 - internal signal, mapped to ArtifactError
    """The archive's bytes could not be decoded (a decompressor or zip reader failed)."""


def detect_format(archive: Path) -> ArchiveFormat:
    """The archive's format, from its first bytes."""
    with archive.open("rb") as f:
        head = f.read(512)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[257:262] == b"ustar":
        return "tar"
    # bzip2 is checked after tar: its magic is three printable letters and a digit, which a
    # plain tar's first file name could start with.
    if len(head) >= 4 and head.startswith(b"BZh") and head[3] in b"123456789":
        return "tar.bz2"
    raise ArtifactError(
        f"cannot unpack {archive}: unrecognized archive format "
        "(expected tar, tar.gz, tar.xz, tar.bz2, tar.zst or zip)"
    )


def safe_unpack(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int,
    max_entries: int,
    stop: threading.Event | None = None,
) -> list[Path]:
    """Unpack ``archive`` into ``dest`` under the module's rules (blocking: run it off the loop).

    Returns the top-level paths it placed in ``dest``; removing them undoes the unpack.
    ``stop``, when set from another thread, makes the unpack fail promptly and clean up.
    """
    try:
        fmt = detect_format(archive)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dest.name}-", dir=dest.parent))
    except OSError as exc:
        raise ArtifactError(f"cannot unpack {archive} into {dest}: {exc.strerror or exc}") from exc
    ex = _Extractor(archive, tmp, max_bytes=max_bytes, max_entries=max_entries, stop=stop)
    try:
        if fmt == "zip":
            _unpack_zip(archive, ex)
        else:
            _unpack_tar(archive, fmt, ex)
        ex.finish()
        return _move_into(archive, tmp, dest)
    except _Corrupt as exc:
        raise ArtifactError(f"cannot unpack {archive}: it is corrupt{ex.where()}: {exc}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise ArtifactError(
            f"cannot unpack {archive}: it is corrupt or unsupported{ex.where()}: {exc}"
        ) from exc
    except OSError as exc:
        raise ArtifactError(
            f"cannot unpack {archive} into {dest}{ex.where()}: {exc.strerror or exc}"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _file_mode(mode: int) -> int:
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _real(path: Path) -> Path:
    # os.path.realpath rather than Path.resolve: on 3.11 resolve raises on a symlink loop,
    # which inside the destination is harmless and must not look like an I/O failure.
    return Path(os.path.realpath(path))


class _Extractor:
    """Applies the module's rules to entries, whatever archive format they come from."""

    def __init__(
        self,
        archive: Path,
        root: Path,
        *,
        max_bytes: int,
        max_entries: int,
        stop: threading.Event | None,
    ) -> None:
        self.archive = archive
        self.root = _real(root)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._stop = stop
        self.entries = 0
        self.declared = 0
        self.written = 0
        self.current: str | None = None

    # -- accounting ----------------------------------------------------------------------

    def where(self) -> str:
        return f" at entry '{self.current}'" if self.current is not None else ""

    def refuse(self, name: str, why: str) -> ArtifactError:
        return ArtifactError(f"cannot unpack {self.archive}: entry '{name}' {why}")

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise ArtifactError(f"unpacking {self.archive} was cancelled")

    def count(self, name: str) -> None:
        self.check_stop()
        self.current = name
        self.entries += 1
        if self.entries > self.max_entries:
            raise ArtifactError(
                f"cannot unpack {self.archive}: it has more than {self.max_entries} entries "
                f"(the limit), reached at entry '{name}'"
            )

    def declare(self, name: str, size: int) -> None:
        self.declared += size
        if self.declared > self.max_bytes:
            raise self.refuse(name, f"takes the archive past its limit of {self.max_bytes} bytes")

    # -- paths ---------------------------------------------------------------------------

    def _inside(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def _parts(self, name: str) -> list[str]:
        if "\x00" in name:
            raise self.refuse(name, "has a NUL byte in its name")
        if name.startswith(("/", "\\")):
            raise self.refuse(name, "has an absolute path")
        # Backslash counts as a separator here so that a zip made on Windows cannot smuggle
        # '..\\..\\x' past a check that only splits on '/'.
        if ".." in re.split(r"[/\\]", name):
            raise self.refuse(name, "escapes the target directory")
        return [p for p in name.split("/") if p not in ("", ".")]

    def _place(self, name: str, parts: list[str]) -> Path:
        """The on-disk path for an entry, its parent directories created and checked."""
        if not parts:
            raise self.refuse(name, "has an empty name")
        parent = _real(self.root.joinpath(*parts[:-1]))
        if not self._inside(parent):
            raise self.refuse(name, "escapes the target directory (through a symlink)")
        try:
            # Created owner-only; finish() gives every directory its final mode.
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise self.refuse(name, "needs a directory where the archive put a file") from exc
        return parent / parts[-1]

    def _clear(self, name: str, path: Path, *, for_dir: bool) -> bool:
        """Make room for an entry at ``path``; True if a directory is already there."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if for_dir:
                return True
            raise self.refuse(name, "would replace a directory")
        if for_dir:
            raise self.refuse(name, "would replace a file or link with a directory")
        path.unlink()
        return False

    # -- entries -------------------------------------------------------------------------

    def directory(self, name: str, backstop: Callable[[], None] | None = None) -> None:
        parts = self._parts(name)
        if not parts:
            return  # "./" itself
        path = self._place(name, parts)
        if backstop is not None:
            backstop()
        if not self._clear(name, path, for_dir=True):
            path.mkdir(mode=0o700)

    def file(
        self,
        name: str,
        *,
        mode: int,
        mtime: float,
        size: int,
        data: _Reader,
        backstop: Callable[[], None] | None = None,
    ) -> None:
        path = self._place(name, self._parts(name))
        if backstop is not None:
            backstop()
        self._clear(name, path, for_dir=False)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        here = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(CHUNK_BYTES):
                self.check_stop()
                here += len(chunk)
                self.written += len(chunk)
                if here > size:
                    raise self.refuse(name, f"holds more than the {size} bytes its header declares")
                if self.written > self.max_bytes:
                    raise self.refuse(
                        name, f"takes the archive past its limit of {self.max_bytes} bytes"
                    )
                out.write(chunk)
            os.fchmod(fd, _file_mode(mode))
        with contextlib.suppress(OverflowError, ValueError):
            # An out-of-range timestamp is the archive's oddity, not a reason to refuse it.
            os.utime(path, (mtime, mtime))

    def symlink(self, name: str, target: str, backstop: Callable[[], None] | None = None) -> None:
        path = self._place(name, self._parts(name))
        outside = f"is a symlink to '{target}', outside the target directory"
        if not target or "\x00" in target:
            raise self.refuse(name, "is a symlink without a valid target")
        if target.startswith("/") or not self._inside(_real(path.parent / target)):
            raise self.refuse(name, outside)
        if backstop is not None:
            backstop()
        self._clear(name, path, for_dir=False)
        path.symlink_to(target)

    def hardlink(self, name: str, target: str, backstop: Callable[[], None] | None = None) -> None:
        outside = f"is a hard link to '{target}', outside the target directory"
        if target.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", target):
            raise self.refuse(name, outside)
        target_parts = [p for p in target.split("/") if p not in ("", ".")]
        source = _real(self.root.joinpath(*target_parts))
        if not self._inside(source):
            raise self.refuse(name, outside)
        try:
            is_file = stat.S_ISREG(source.lstat().st_mode)
        except FileNotFoundError:
            is_file = False
        if not target_parts or not is_file:
            raise self.refuse(
                name, f"is a hard link to '{target}', which is not an earlier file of the archive"
            )
        path = self._place(name, self._parts(name))
        if backstop is not None:
            backstop()
        if path == source:
            return  # a link to itself: already in place
        self._clear(name, path, for_dir=False)
        path.hardlink_to(source)

    def finish(self) -> None:
        """Check every symlink of the finished tree again; give directories their mode."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            directory = Path(dirpath)
            directory.chmod(_DIR_MODE)
            for entry in (*dirnames, *filenames):
                path = directory / entry
                if path.is_symlink() and not self._inside(_real(path)):
                    raise self.refuse(
                        str(path.relative_to(self.root)),
                        f"is a symlink to '{path.readlink()}', outside the target directory",
                    )


class _Guarded:
    """A byte stream whose decoding errors become :class:`_Corrupt`, optionally bounded."""

    def __init__(
        self,
        raw: _Reader,
        errors: tuple[type[BaseException], ...],
        *,
        limit: int | None = None,
        on_limit: Callable[[], ArtifactError] | None = None,
    ) -> None:
        self._raw = raw
        self._errors = errors
        self._left = limit
        self._on_limit = on_limit

    def read(self, size: int = -1, /) -> bytes:
        if self._left is not None and (size < 0 or size > self._left + 1):
            # Never ask the decompressor for more than one byte past the budget: the point
            # is to stop before the work is done, not to notice afterwards.
            size = self._left + 1
        try:
            data = self._raw.read(size)
        except self._errors as exc:
            raise _Corrupt(str(exc) or type(exc).__name__) from exc
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                assert self._on_limit is not None
                raise self._on_limit()
        return data


_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # gzip.BadGzipFile, bz2's "Invalid data stream"
    EOFError,  # a truncated compressed stream
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,  # e.g. "Bad CRC-32": the data does not match its header
)


def _zstandard(archive: Path) -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError as exc:
        raise ArtifactError(
            f"cannot unpack {archive}: it is zstd-compressed and the 'zstandard' module is "
            "not installed (install it with: pip install zstandard)"
        ) from exc


def _decompressed(
    fmt: ArchiveFormat, raw: IO[bytes], archive: Path, stack: contextlib.ExitStack
) -> tuple[_Reader, tuple[type[BaseException], ...]]:
    if fmt == "tar":
        return raw, _DECODE_ERRORS
    if fmt == "tar.gz":
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")), _DECODE_ERRORS
    if fmt == "tar.xz":
        return stack.enter_context(lzma.LZMAFile(raw)), _DECODE_ERRORS
    if fmt == "tar.bz2":
        return stack.enter_context(bz2.BZ2File(raw)), _DECODE_ERRORS
    zstandard = _zstandard(archive)
    reader: _Reader = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(raw))
    return reader, (*_DECODE_ERRORS, zstandard.ZstdError)


def _unpack_tar(archive: Path, fmt: ArchiveFormat, ex: _Extractor) -> None:
    budget = ex.max_bytes + ex.max_entries * _HEADER_ALLOWANCE_BYTES + _STREAM_SLACK_BYTES

    def over_budget() -> ArtifactError:
        return ArtifactError(
            f"cannot unpack {archive}: its decompressed stream exceeds {budget} bytes "
            f"(the {ex.max_bytes}-byte limit plus header allowance){ex.where()}"
        )

    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(archive.open("rb"))
        stream, errors = _decompressed(fmt, raw, archive, stack)
        guarded = _Guarded(stream, errors, limit=budget, on_limit=over_budget)
        # Stream mode ("r|"): members are read once, in order, with no seeking, so the
        # decompressor never has to rewind and memory does not grow with the archive.
        # In stream mode tarfile only ever calls read(), which is all _Guarded offers.
        fileobj = cast(IO[bytes], guarded)
        tar = stack.enter_context(tarfile.open(fileobj=fileobj, mode="r|"))
        for member in tar:
            _tar_member(tar, member, ex)


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, ex: _Extractor) -> None:
    name = member.name
    ex.count(name)

    def backstop() -> None:
        try:
            tarfile.data_filter(member, str(ex.root))
        except tarfile.FilterError as exc:
            raise ex.refuse(name, f"is refused by tarfile's data filter: {exc}") from exc

    if member.isreg():
        ex.declare(name, member.size)
        data = tar.extractfile(member)
        assert data is not None  # always a reader for a regular member
        ex.file(
            name,
            mode=member.mode,
            mtime=member.mtime,
            size=member.size,
            data=data,
            backstop=backstop,
        )
    elif member.isdir():
        ex.directory(name, backstop)
    elif member.issym():
        ex.symlink(name, member.linkname, backstop)
    elif member.islnk():
        ex.hardlink(name, member.linkname, backstop)
    elif member.ischr() or member.isblk():
        raise ex.refuse(name, "is a device file")
    elif member.isfifo():
        raise ex.refuse(name, "is a FIFO")
    else:
        raise ex.refuse(name, f"has an unsupported tar type {member.type!r}")


def _unpack_zip(archive: Path, ex: _Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > ex.max_entries:
            raise ArtifactError(
                f"cannot unpack {archive}: it has {len(infos)} entries, more than the limit "
                f"of {ex.max_entries}"
            )
        # The central directory is all in memory: refuse an over-large archive before
        # writing a byte of it.
        for info in infos:
            if not info.is_dir():
                ex.declare(info.filename, info.file_size)
        for info in infos:
            _zip_member(zf, info, ex)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, ex: _Extractor) -> None:
    name = info.filename
    ex.count(name)
    if info.flag_bits & 0x1:
        raise ex.refuse(name, "is encrypted")
    # Unix mode bits live in the high 16 bits of external_attr, but only mean that when the
    # archive says it was made on Unix.
    unix_mode = info.external_attr >> 16 if info.create_system == _ZIP_UNIX else 0
    kind = stat.S_IFMT(unix_mode)
    if info.is_dir() or kind == stat.S_IFDIR:
        ex.directory(name)
    elif kind == stat.S_IFLNK:
        if info.file_size > _SYMLINK_TARGET_MAX_BYTES:
            raise ex.refuse(name, "is a symlink with an over-long target")
        with zf.open(info) as f:
            raw_target = _Guarded(f, _DECODE_ERRORS).read(_SYMLINK_TARGET_MAX_BYTES + 1)
        ex.symlink(name, os.fsdecode(raw_target))
    elif kind in (0, stat.S_IFREG):
        mode = stat.S_IMODE(unix_mode) if unix_mode else 0o644
        try:
            mtime = time.mktime((*info.date_time, 0, 0, -1))
        except (OverflowError, ValueError):
            mtime = time.time()
        with zf.open(info) as f:
            ex.file(
                name, mode=mode, mtime=mtime, size=info.file_size, data=_Guarded(f, _DECODE_ERRORS)
            )
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        raise ex.refuse(name, "is a device file")
    elif kind == stat.S_IFIFO:
        raise ex.refuse(name, "is a FIFO")
    else:
        raise ex.refuse(name, f"has an unsupported file type {kind:#o}")


def _move_into(archive: Path, tmp: Path, dest: Path) -> list[Path]:
    names = sorted(p.name for p in tmp.iterdir())
    try:
        st = dest.lstat()
    except FileNotFoundError:
        tmp.rename(dest)  # one atomic step when dest is new
        return [dest / n for n in names]
    if not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(
            f"cannot unpack {archive} into {dest}: it exists and is not a directory"
        )
    for n in names:
        if os.path.lexists(dest / n):
            raise ArtifactError(f"cannot unpack {archive} into {dest}: '{n}' already exists there")
    moved: list[str] = []
    try:
        for n in names:
            (tmp / n).rename(dest / n)
            moved.append(n)
    except OSError:
        # Put back what already moved so that a failure leaves dest as it was.
        for n in moved:
            with contextlib.suppress(OSError):
                (dest / n).rename(tmp / n)
        raise
    tmp.rmdir()
    return [dest / n for n in names]
