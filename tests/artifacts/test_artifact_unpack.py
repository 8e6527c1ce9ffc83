"""safe_unpack against real archives, honest and crafted."""

from __future__ import annotations

import importlib.util
import io
import os
import stat
import struct
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystone_edge.artifacts import detect_format, safe_unpack
from keystone_edge.errors import ArtifactError

MiB = 1 << 20

# One archive member: a TarInfo and, for regular files, its data.
Member = tuple[tarfile.TarInfo, bytes]


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info, b""


def write_tar(path: Path, members: Sequence[Member], mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def zip_entry(name: str, data: bytes = b"", mode: int = stat.S_IFREG | 0o644) -> Member:
    """Zip entries are described with TarInfo too (name, mode, data) to share builders."""
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def write_zip(path: Path, members: Sequence[Member]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members:
            info = zipfile.ZipInfo(member.name)
            info.create_system = 3
            info.external_attr = member.mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def unpack(
    archive: Path, dest: Path, *, max_bytes: int = 64 * MiB, max_entries: int = 1000
) -> list[Path]:
    return safe_unpack(archive, dest, max_bytes=max_bytes, max_entries=max_entries)


def refused(archive: Path, dest: Path, **limits: int) -> str:
    """Unpack expecting a refusal; check that nothing was left behind; return the message."""
    before = sorted(p.name for p in dest.parent.iterdir())
    with pytest.raises(ArtifactError) as info:
        unpack(archive, dest, **limits)
    assert sorted(p.name for p in dest.parent.iterdir()) == before
    return str(info.value)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory holding the archive and the destination, and nothing else."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def tree(root: Path) -> dict[str, str]:
    """Everything under root: files as 'file <mode> <content>', links, directories."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = f"dir {stat.S_IMODE(path.stat().st_mode):o}"
        else:
            mode = stat.S_IMODE(path.stat().st_mode)
            out[rel] = f"file {mode:o} {path.read_bytes().decode()}"
    return out


# -- round trips -------------------------------------------------------------------------

EXPECTED_TREE = {
    "app": "dir 755",
    "app/current": "link -> run.sh",
    "app/data.txt": "file 644 some data",
    "app/lib": "dir 755",
    "app/lib/mod.py": "file 644 x = 1",
    "app/run.sh": "file 755 #!/bin/sh",
}


def app_members(zip_style: bool) -> list[Member]:
    if zip_style:
        return [
            zip_entry("app/", mode=stat.S_IFDIR | 0o755),
            zip_entry("app/run.sh", b"#!/bin/sh", stat.S_IFREG | 0o755),
            zip_entry("app/data.txt", b"some data"),
            zip_entry("app/lib/mod.py", b"x = 1"),
            zip_entry("app/current", b"run.sh", stat.S_IFLNK | 0o777),
        ]
    return [
        special("app", tarfile.DIRTYPE),
        reg("app/run.sh", b"#!/bin/sh", 0o755),
        reg("app/data.txt", b"some data"),
        reg("app/lib/mod.py", b"x = 1"),  # no directory entry for app/lib: implied
        special("app/current", tarfile.SYMTYPE, "run.sh"),
    ]


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [("tar", "w"), ("tar.gz", "w:gz"), ("tar.xz", "w:xz"), ("tar.bz2", "w:bz2"), ("zip", "")],
)
def test_round_trip(work: Path, suffix: str, mode: str) -> None:
    archive = work / f"app.{suffix}"
    if suffix == "zip":
        write_zip(archive, app_members(zip_style=True))
    else:
        write_tar(archive, app_members(zip_style=False), mode)
    assert detect_format(archive) == suffix
    dest = work / "out"
    assert unpack(archive, dest) == [dest / "app"]
    assert tree(dest) == EXPECTED_TREE
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert sorted(p.name for p in work.iterdir()) == [archive.name, "out"]


def test_format_comes_from_content_not_name(work: Path) -> None:
    gz = write_tar(work / "really-a-tgz.zip", [reg("a", b"tgz")], "w:gz")
    zp = write_zip(work / "really-a-zip.tar.gz", [zip_entry("b", b"zip")])
    assert (detect_format(gz), detect_format(zp)) == ("tar.gz", "zip")
    unpack(gz, work / "out")
    unpack(zp, work / "out")
    assert tree(work / "out") == {"a": "file 644 tgz", "b": "file 644 zip"}


def test_unknown_format_is_refused(work: Path) -> None:
    junk = work / "x.tar.gz"
    junk.write_bytes(b"just some text, not an archive\n" * 40)
    assert "unrecognized archive format (expected tar, tar.gz" in refused(junk, work / "out")


@pytest.mark.skipif(
    importlib.util.find_spec("zstandard") is not None, reason="zstandard is installed"
)
def test_zstd_without_the_module_is_a_clear_error(work: Path) -> None:
    archive = work / "app.tar.zst"
    archive.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    assert detect_format(archive) == "tar.zst"
    assert "zstd-compressed and the 'zstandard' module is not installed" in refused(
        archive, work / "out"
    )


def test_zstd_round_trip_with_the_module(work: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    plain = write_tar(work / "app.tar", [reg("a", b"zstd data")])
    archive = work / "app.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    plain.unlink()
    unpack(archive, work / "out")
    assert tree(work / "out") == {"a": "file 644 zstd data"}


def test_merges_into_an_existing_directory(work: Path) -> None:
    dest = work / "out"
    dest.mkdir()
    (dest / "other.bin").write_bytes(b"from another artifact")
    archive = write_tar(work / "a.tar", [reg("app/x", b"x")])
    assert unpack(archive, dest) == [dest / "app"]
    assert sorted(p.name for p in dest.iterdir()) == ["app", "other.bin"]


def test_name_already_in_destination_is_a_conflict(work: Path) -> None:
    dest = work / "out"
    (dest / "app").mkdir(parents=True)
    archive = write_tar(work / "a.tar", [reg("bin/tool", b"t"), reg("app/x", b"x")])
    assert refused(archive, dest).endswith("'app' already exists there")
    assert [p.name for p in dest.iterdir()] == ["app"]  # bin/ was not moved in either


def test_later_entry_replaces_earlier_file(work: Path) -> None:
    archive = write_tar(work / "a.tar", [reg("a", b"first"), reg("a", b"second")])
    unpack(archive, work / "out")
    assert tree(work / "out") == {"a": "file 644 second"}


def test_hard_link_inside_the_archive_works(work: Path) -> None:
    archive = write_tar(
        work / "a.tar",
        [reg("bin/tool", b"t", 0o755), special("bin/alias", tarfile.LNKTYPE, "bin/tool")],
    )
    unpack(archive, work / "out")
    tool, alias = work / "out" / "bin" / "tool", work / "out" / "bin" / "alias"
    assert tool.stat().st_ino == alias.stat().st_ino


# -- permissions and ownership -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o755, 0o755),
        (0o644, 0o644),
        (0o4755, 0o755),  # setuid stripped
        (0o2755, 0o755),  # setgid stripped
        (0o1777, 0o755),  # sticky and world-write stripped
        (0o400, 0o600),  # the owner can always write
        (0o611, 0o600),  # execute only for others: not executable at all
    ],
)
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_file_modes(work: Path, mode: int, expected: int, fmt: str) -> None:
    if fmt == "tar":
        archive = write_tar(work / "a.tar", [reg("f", b"x", mode)])
    else:
        archive = write_zip(work / "a.zip", [zip_entry("f", b"x", stat.S_IFREG | mode)])
    unpack(archive, work / "out")
    assert stat.S_IMODE((work / "out" / "f").stat().st_mode) == expected


def test_directory_modes_are_normalized(work: Path) -> None:
    archive = write_tar(
        work / "a.tar", [special("locked", tarfile.DIRTYPE, mode=0o500), reg("locked/f", b"x")]
    )
    unpack(archive, work / "out")
    assert stat.S_IMODE((work / "out" / "locked").stat().st_mode) == 0o755


def test_ownership_is_never_taken_from_the_archive(work: Path) -> None:
    info, data = reg("f", b"x")
    info.uid = info.gid = 12345
    info.uname = info.gname = "someone"
    archive = write_tar(work / "a.tar", [(info, data)])
    unpack(archive, work / "out")
    st_ = (work / "out" / "f").stat()
    assert (st_.st_uid, st_.st_gid) == (os.getuid(), os.getgid())


# -- path traversal --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "escapes the target directory"),
        ("ok/../../x", "escapes the target directory"),
        ("..\\x", "escapes the target directory"),
        ("/etc/x", "has an absolute path"),
    ],
)
def test_traversal_is_refused(work: Path, fmt: str, name: str, why: str) -> None:
    if fmt == "tar":
        archive = write_tar(work / "a.tar", [reg("fine", b"ok"), reg(name, b"evil")])
    else:
        archive = write_zip(work / "a.zip", [zip_entry("fine", b"ok"), zip_entry(name, b"evil")])
    message = refused(archive, work / "out")
    assert message == f"cannot unpack {archive}: entry '{name}' {why}"
    assert not (work.parent / "x").exists()


def test_symlink_to_absolute_path_then_file_through_it(work: Path) -> None:
    archive = write_tar(
        work / "a.tar", [special("etc", tarfile.SYMTYPE, "/etc"), reg("etc/passwd", b"root::0:0")]
    )
    message = refused(archive, work / "out")
    assert message == (
        f"cannot unpack {archive}: entry 'etc' is a symlink to '/etc', outside the target directory"
    )


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_relative_symlink_climbing_out_is_refused(work: Path, fmt: str) -> None:
    if fmt == "tar":
        archive = write_tar(work / "a.tar", [special("sub/up", tarfile.SYMTYPE, "../../..")])
    else:
        archive = write_zip(
            work / "a.zip", [zip_entry("sub/up", b"../../..", stat.S_IFLNK | 0o777)]
        )
    assert "entry 'sub/up' is a symlink to '../../..', outside" in refused(archive, work / "out")


def test_link_redirected_by_a_later_link_cannot_be_written_through(work: Path) -> None:
    # 'l -> s/../victim' is inside while 's' does not exist; 's -> .' then makes 'l' point
    # beside the destination. Writing through 'l' must be stopped.
    victim = work / "victim"
    victim.mkdir()
    archive = write_tar(
        work / "a.tar",
        [
            special("l", tarfile.SYMTYPE, "s/../victim"),
            special("s", tarfile.SYMTYPE, "."),
            reg("l/planted", b"gotcha"),
        ],
    )
    message = refused(archive, work / "out")
    assert message.endswith("entry 'l/planted' escapes the target directory (through a symlink)")
    assert list(victim.iterdir()) == []


def test_link_redirected_by_a_later_link_is_caught_in_the_finished_tree(work: Path) -> None:
    archive = write_tar(
        work / "a.tar",
        [special("l", tarfile.SYMTYPE, "s/../outside"), special("s", tarfile.SYMTYPE, ".")],
    )
    assert "entry 'l' is a symlink to 's/../outside', outside" in refused(archive, work / "out")


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd"])
def test_hard_link_escape_is_refused(work: Path, target: str) -> None:
    archive = write_tar(work / "a.tar", [special("h", tarfile.LNKTYPE, target)])
    message = refused(archive, work / "out")
    assert message == (
        f"cannot unpack {archive}: entry 'h' is a hard link to '{target}', "
        "outside the target directory"
    )


def test_hard_link_through_an_inside_symlink_to_outside_is_refused(work: Path) -> None:
    archive = write_tar(
        work / "a.tar",
        [special("d", tarfile.DIRTYPE), special("d/x", tarfile.LNKTYPE, "d/../../outside")],
    )
    assert "is a hard link to 'd/../../outside', outside" in refused(archive, work / "out")


def test_hard_link_to_nothing_is_refused(work: Path) -> None:
    archive = write_tar(work / "a.tar", [special("h", tarfile.LNKTYPE, "missing")])
    assert "which is not an earlier file of the archive" in refused(archive, work / "out")


# -- special files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        (tarfile.CHRTYPE, "is a device file"),
        (tarfile.BLKTYPE, "is a device file"),
        (tarfile.FIFOTYPE, "is a FIFO"),
    ],
)
def test_special_tar_entries_are_refused(work: Path, kind: bytes, why: str) -> None:
    info, _ = special("dev/thing", kind, mode=0o666)
    info.devmajor, info.devminor = 1, 3
    archive = write_tar(work / "a.tar", [reg("ok", b"x"), (info, b"")])
    assert refused(archive, work / "out") == f"cannot unpack {archive}: entry 'dev/thing' {why}"


@pytest.mark.parametrize(
    ("kind", "why"), [(stat.S_IFCHR, "is a device file"), (stat.S_IFIFO, "is a FIFO")]
)
def test_special_zip_entries_are_refused(work: Path, kind: int, why: str) -> None:
    archive = write_zip(work / "a.zip", [zip_entry("dev/thing", b"", kind | 0o666)])
    assert refused(archive, work / "out") == f"cannot unpack {archive}: entry 'dev/thing' {why}"


# -- bombs and limits ----------------------------------------------------------------------------


def test_small_gzip_of_zeros_past_the_limit(work: Path) -> None:
    archive = write_tar(
        work / "bomb.tar.gz", [reg("ok", b"x"), reg("zeros", bytes(16 * MiB))], "w:gz"
    )
    assert archive.stat().st_size < 64 * 1024
    message = refused(archive, work / "out", max_bytes=MiB)
    assert (
        message
        == f"cannot unpack {archive}: entry 'zeros' takes the archive past its limit of {MiB} bytes"
    )


def test_zip_whose_header_understates_its_size(work: Path) -> None:
    archive = write_zip(work / "lie.zip", [zip_entry("big", bytes(8 * MiB))])
    raw = bytearray(archive.read_bytes())
    # Claim 10 bytes in both the local header and the central directory.
    struct.pack_into("<I", raw, raw.index(b"PK\x03\x04") + 22, 10)
    struct.pack_into("<I", raw, raw.index(b"PK\x01\x02") + 24, 10)
    archive.write_bytes(bytes(raw))
    message = refused(archive, work / "out", max_bytes=MiB)
    assert message.startswith(f"cannot unpack {archive}: it is corrupt at entry 'big'")


def test_zip_declaring_too_much_is_refused_before_writing(work: Path) -> None:
    archive = write_zip(
        work / "big.zip", [zip_entry("a", bytes(600 * 1024)), zip_entry("b", bytes(600 * 1024))]
    )
    assert refused(archive, work / "out", max_bytes=MiB).endswith(
        f"entry 'b' takes the archive past its limit of {MiB} bytes"
    )


def test_giant_tar_header_is_bounded(work: Path) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {"comment": "x" * (3 * MiB)}
    archive = write_tar(work / "hdr.tar.gz", [(info, data)], "w:gz")
    message = refused(archive, work / "out", max_bytes=1024, max_entries=10)
    assert "its decompressed stream exceeds" in message


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_too_many_entries(work: Path, fmt: str) -> None:
    names = [f"f{i}" for i in range(11)]
    if fmt == "tar":
        archive = write_tar(work / "a.tar", [reg(n) for n in names])
        expected = "it has more than 10 entries (the limit), reached at entry 'f10'"
    else:
        archive = write_zip(work / "a.zip", [zip_entry(n) for n in names])
        expected = "it has 11 entries, more than the limit of 10"
    assert refused(archive, work / "out", max_entries=10) == f"cannot unpack {archive}: {expected}"


def test_truncated_archive_is_corrupt(work: Path) -> None:
    archive = write_tar(work / "a.tar.gz", [reg("f", os.urandom(200_000))], "w:gz")
    archive.write_bytes(archive.read_bytes()[:50_000])
    assert "it is corrupt at entry 'f'" in refused(archive, work / "out")


def test_missing_archive_is_an_artifact_error(work: Path) -> None:
    with pytest.raises(ArtifactError, match="No such file or directory"):
        unpack(work / "gone.tar", work / "out")


def test_stop_event_cancels_and_cleans_up(work: Path) -> None:
    archive = write_tar(work / "a.tar", [reg("f", b"x")])
    stop = threading.Event()
    stop.set()
    with pytest.raises(ArtifactError, match="was cancelled"):
        safe_unpack(archive, work / "out", max_bytes=MiB, max_entries=10, stop=stop)
    assert sorted(p.name for p in work.iterdir()) == ["a.tar"]


# -- property: whatever the names, nothing lands outside ------------------------------------------

_segment = st.sampled_from(["a", "b", "..", ".", "", "c d"])
_name = st.lists(_segment, min_size=1, max_size=4).map("/".join)
_entry = st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), _name, _name)


@settings(max_examples=150, deadline=None)
@given(st.lists(_entry, min_size=1, max_size=6), st.booleans())
def test_nothing_ever_lands_outside(entries: list[tuple[str, str, str]], absolute: bool) -> None:
    with tempfile.TemporaryDirectory() as top:
        base = Path(top)
        work = base / "work"
        work.mkdir()
        members: list[Member] = []
        for kind, name, target in entries:
            if kind == "file":
                members.append(reg(name, b"data"))
            elif kind == "dir":
                members.append(special(name, tarfile.DIRTYPE))
            else:
                link = ("/" + target) if absolute else target
                members.append(
                    special(name, tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE, link)
                )
        archive = write_tar(base / "a.tar", members)
        dest = work / "out"
        try:
            unpack(archive, dest)
        except ArtifactError:
            assert sorted(p.name for p in work.iterdir()) == []
        else:
            real_dest = Path(os.path.realpath(dest))
            for path in [dest, *dest.rglob("*")]:
                real = Path(os.path.realpath(path))
                assert real == real_dest or real_dest in real.parents, path
        assert sorted(p.name for p in base.iterdir()) == ["a.tar", "work"]
