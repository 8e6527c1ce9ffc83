"""ArtifactCache.ensure and materialize against a real cache directory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import msgspec
import pytest

from keystone_edge.artifacts import (
    ArtifactCache,
    CachedArtifact,
    FetchResult,
    LocalFetcher,
    UnpackLimits,
)
from keystone_edge.errors import ArtifactError
from keystone_edge.recipe.model import Artifact


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".keystone-tmp-"))


def entries(root: Path) -> list[str]:
    """Digest-named entry directories in the cache root."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def source_file(directory: Path, name: str, data: bytes, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


class CountingFetcher:
    """A real LocalFetcher that counts its calls, so a test can see whether one happened."""

    schemes = frozenset({"file"})

    def __init__(self) -> None:
        self.inner = LocalFetcher()
        self.calls = 0

    async def fetch(
        self, uri: str, dest: Path, *, expected_sha256: str | None, expected_size: int | None
    ) -> FetchResult:
        self.calls += 1
        return await self.inner.fetch(
            uri, dest, expected_sha256=expected_sha256, expected_size=expected_size
        )


class StallingFetcher:
    """Writes part of an artifact, then waits forever: a download stuck mid-way."""

    schemes = frozenset({"https"})

    def __init__(self) -> None:
        self.writing = asyncio.Event()

    async def fetch(
        self, uri: str, dest: Path, *, expected_sha256: str | None, expected_size: int | None
    ) -> FetchResult:
        dest.write_bytes(b"partial")
        self.writing.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# -- fetch, verify, store --------------------------------------------------------------


async def test_fetches_verifies_and_stores_by_digest(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    data = b"hello artifact\n"
    path = source_file(sources, "hello.bin", data)
    digest = sha256_of(data)
    cached = await cache.ensure(Artifact(uri=path.as_uri(), sha256=digest, size=len(data)))
    assert cached == CachedArtifact(cache_root / digest / "hello.bin", digest, len(data))
    assert cached.path.read_bytes() == data
    record = msgspec.json.decode((cache_root / digest / ".keystone-entry.json").read_bytes())
    assert record == {
        "file": "hello.bin",
        "size": len(data),
        "sha256": digest,
        "uri": path.as_uri(),
    }
    assert leftovers(cache_root) == []


async def test_local_artifact_without_digest_gets_one_computed(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    data = b"no digest in the recipe"
    path = source_file(sources, "tool", data, 0o755)
    cached = await cache.ensure(Artifact(uri=path.as_uri()))
    assert cached.sha256 == sha256_of(data)
    assert cached.path == cache_root / sha256_of(data) / "tool"
    assert stat.S_IMODE(cached.path.stat().st_mode) == 0o755


async def test_digest_mismatch_is_refused_and_nothing_is_cached(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    path = source_file(sources, "x.bin", b"actual content")
    wrong = sha256_of(b"what the recipe promised")
    with pytest.raises(ArtifactError) as info:
        await cache.ensure(Artifact(uri=path.as_uri(), sha256=wrong))
    assert str(info.value) == (
        f"sha256 mismatch for {path.as_uri()}: expected {wrong}, got {sha256_of(b'actual content')}"
    )
    assert entries(cache_root) == []
    assert leftovers(cache_root) == []


async def test_size_mismatch_is_refused(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    data = b"eleven byte"
    path = source_file(sources, "x.bin", data)
    with pytest.raises(ArtifactError) as info:
        await cache.ensure(Artifact(uri=path.as_uri(), sha256=sha256_of(data), size=5))
    assert str(info.value) == f"size mismatch for {path.as_uri()}: expected 5 bytes, got 11 bytes"
    assert entries(cache_root) == []
    assert leftovers(cache_root) == []


async def test_missing_local_file_names_the_path(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    missing = sources / "gone.tar.gz"
    with pytest.raises(ArtifactError, match=f"^artifact file not found: {missing}$"):
        await cache.ensure(Artifact(uri=missing.as_uri(), sha256="0" * 64))
    assert leftovers(cache_root) == []


async def test_unsupported_scheme_lists_the_registered_ones(cache: ArtifactCache) -> None:
    with pytest.raises(ArtifactError) as info:
        await cache.ensure(Artifact(uri="ftp://mirror/x.tgz", sha256="0" * 64))
    assert str(info.value) == (
        "unsupported artifact URI scheme 'ftp' in ftp://mirror/x.tgz; supported: file"
    )


async def test_remote_artifact_without_digest_is_refused(cache: ArtifactCache) -> None:
    with pytest.raises(ArtifactError, match=r"^remote artifact https://h/x.bin has no sha256$"):
        await cache.ensure(Artifact(uri="https://h/x.bin"))


async def test_unsafe_name_never_reaches_the_disk(
    cache: ArtifactCache, cache_root: Path, sources: Path, tmp_path: Path
) -> None:
    data = b"x"
    path = source_file(sources, "x.bin", data)
    with pytest.raises(ArtifactError, match="expected a single path segment"):
        await cache.ensure(Artifact(uri=path.as_uri(), sha256=sha256_of(data), name="../../x"))
    assert not (tmp_path / "x").exists()
    assert entries(cache_root) == []


def test_two_fetchers_for_one_scheme_is_a_wiring_error(cache_root: Path) -> None:
    with pytest.raises(ValueError, match="two fetchers for URI scheme 'file'"):
        ArtifactCache(cache_root, [LocalFetcher(), LocalFetcher()])


# -- reuse -------------------------------------------------------------------------------


async def test_second_ensure_reuses_the_entry_without_copying(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    data = b"shared by two components"
    path = source_file(sources, "lib.so", data)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data))
    first = await cache.ensure(artifact)
    before = first.path.stat()
    entry = first.path.parent
    os.utime(entry, (1_000_000, 1_000_000))  # long unused
    path.unlink()  # a second fetch would now fail
    second = await cache.ensure(artifact)
    assert second == first
    after = second.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert entry.stat().st_mtime > 1_000_000  # last-used refreshed for the LRU collector


async def test_same_content_under_another_name_is_stored_once(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    data = b"same bytes"
    a = source_file(sources, "a.bin", data)
    b = source_file(sources, "b.bin", data)
    first = await cache.ensure(Artifact(uri=a.as_uri(), sha256=sha256_of(data)))
    second = await cache.ensure(Artifact(uri=b.as_uri(), sha256=sha256_of(data)))
    assert second.path == first.path
    assert entries(cache_root) == [sha256_of(data)]


async def test_cached_entry_with_other_declared_size_is_a_contradiction(
    cache: ArtifactCache, sources: Path
) -> None:
    data = b"1234"
    path = source_file(sources, "x", data)
    await cache.ensure(Artifact(uri=path.as_uri(), sha256=sha256_of(data)))
    with pytest.raises(ArtifactError, match="expected 3 bytes, got 4 bytes"):
        await cache.ensure(Artifact(uri=path.as_uri(), sha256=sha256_of(data), size=3))


@pytest.mark.parametrize("damage", ["no record", "short file", "garbage record"])
async def test_damaged_entry_is_discarded_and_fetched_again(
    cache: ArtifactCache, cache_root: Path, sources: Path, damage: str
) -> None:
    data = b"precious bytes"
    path = source_file(sources, "p.bin", data)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data))
    cached = await cache.ensure(artifact)
    record = cached.path.parent / ".keystone-entry.json"
    if damage == "no record":
        record.unlink()
    elif damage == "short file":
        cached.path.write_bytes(b"prec")
    else:
        record.write_bytes(b"{not json")
    again = await cache.ensure(artifact)
    assert again.path.read_bytes() == data
    assert record.exists()
    assert leftovers(cache_root) == []


# -- search directories ----------------------------------------------------------------


async def test_search_dir_copy_wins_and_needs_no_fetcher(
    cache: ArtifactCache, cache_root: Path, tmp_path: Path
) -> None:
    offline = tmp_path / "usb"
    offline.mkdir()
    data = b"brought on a USB stick"
    source_file(offline, "tool-1.0.bin", data)
    # No https fetcher is registered: the URI is never used.
    artifact = Artifact(uri="https://dl.example.com/tool-1.0.bin", sha256=sha256_of(data))
    cached = await cache.ensure(artifact, search_dirs=[tmp_path / "empty", offline])
    assert cached.path.read_bytes() == data
    with pytest.raises(ArtifactError, match="unsupported artifact URI scheme 'https'"):
        await cache.ensure(Artifact(uri="https://dl.example.com/other", sha256="0" * 64))


async def test_record_keeps_no_credentials_from_the_uri(
    cache: ArtifactCache, sources: Path
) -> None:
    data = b"pre-signed"
    source_file(sources, "x.bin", data)
    uri = "https://user:pw@bucket.example.com:8443/x.bin?X-Signature=secret#frag"
    cached = await cache.ensure(Artifact(uri=uri, sha256=sha256_of(data)), search_dirs=[sources])
    record = msgspec.json.decode((cached.path.parent / ".keystone-entry.json").read_bytes())
    assert record["uri"] == "https://bucket.example.com:8443/x.bin"


async def test_search_dir_matches_by_name_field(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    data = b"named"
    source_file(sources, "agent", data)
    artifact = Artifact(uri="https://h/download?id=7", sha256=sha256_of(data), name="agent")
    cached = await cache.ensure(artifact, search_dirs=[sources])
    assert cached.path.name == "agent"


async def test_search_dir_copy_is_still_verified(
    cache: ArtifactCache, cache_root: Path, tmp_path: Path
) -> None:
    offline = tmp_path / "usb"
    offline.mkdir()
    local = source_file(offline, "tool.bin", b"tampered")
    expected = sha256_of(b"original")
    uri = "https://dl.example.com/tool.bin"
    with pytest.raises(ArtifactError) as info:
        await cache.ensure(Artifact(uri=uri, sha256=expected), search_dirs=[offline])
    assert str(info.value) == (
        f"sha256 mismatch for {local} (local copy of {uri}): expected {expected}, "
        f"got {sha256_of(b'tampered')}"
    )
    assert entries(cache_root) == []
    assert leftovers(cache_root) == []


async def test_search_dir_copy_without_digest_is_refused(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    offline = tmp_path / "usb"
    offline.mkdir()
    local = source_file(offline, "x.bin", b"unverifiable")
    path = source_file(sources, "x.bin", b"from the recipe")
    with pytest.raises(ArtifactError, match=f"^{local} matches artifact .* gives no sha256"):
        await cache.ensure(Artifact(uri=path.as_uri()), search_dirs=[offline])


# -- concurrency and failure -----------------------------------------------------------


async def test_concurrent_ensure_of_one_digest_fetches_once(
    cache_root: Path, sources: Path
) -> None:
    fetcher = CountingFetcher()
    cache = ArtifactCache(cache_root, [fetcher])
    data = os.urandom(300_000)
    path = source_file(sources, "big.bin", data)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data))
    first, second = await asyncio.gather(cache.ensure(artifact), cache.ensure(artifact))
    assert first == second
    assert fetcher.calls == 1
    assert entries(cache_root) == [sha256_of(data)]
    assert leftovers(cache_root) == []


async def test_concurrent_ensure_without_digest_ends_in_one_entry(
    cache_root: Path, sources: Path
) -> None:
    fetcher = CountingFetcher()
    cache = ArtifactCache(cache_root, [fetcher])
    data = os.urandom(300_000)
    path = source_file(sources, "big.bin", data)
    artifact = Artifact(uri=path.as_uri())
    results = await asyncio.gather(*(cache.ensure(artifact) for _ in range(3)))
    assert {r.path for r in results} == {cache_root / sha256_of(data) / "big.bin"}
    assert entries(cache_root) == [sha256_of(data)]
    assert leftovers(cache_root) == []


async def test_cancelled_fetch_leaves_no_temp_files(cache_root: Path) -> None:
    fetcher = StallingFetcher()
    cache = ArtifactCache(cache_root, [fetcher])
    task = asyncio.create_task(cache.ensure(Artifact(uri="https://h/x.bin", sha256="0" * 64)))
    async with asyncio.timeout(10):
        await fetcher.writing.wait()
    assert len(leftovers(cache_root)) == 1  # the download in progress
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(cache_root) == []
    assert entries(cache_root) == []


async def test_remove_leftovers_spares_fetches_in_progress(
    cache_root: Path, tmp_path: Path
) -> None:
    fetcher = StallingFetcher()
    cache = ArtifactCache(cache_root, [fetcher])
    cache_root.mkdir(parents=True)
    crashed = cache_root / ".keystone-tmp-abc123"
    crashed.mkdir()
    (crashed / "half.bin").write_bytes(b"half")
    task = asyncio.create_task(cache.ensure(Artifact(uri="https://h/x.bin", sha256="0" * 64)))
    async with asyncio.timeout(10):
        await fetcher.writing.wait()
    removed = await cache.remove_leftovers()
    assert removed == [crashed]
    assert len(leftovers(cache_root)) == 1  # the live one
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- materialize -------------------------------------------------------------------------


async def test_materialize_copies_with_mode_and_detached_from_cache(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    data = b"#!/bin/sh\necho hello\n"
    path = source_file(sources, "hello", data, 0o750)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data))
    cached = await cache.ensure(artifact)
    dest_dir = tmp_path / "components" / "com.example.hello" / "1.0.0" / "artifacts"
    placed = await cache.materialize(cached, artifact, dest_dir)
    assert placed == [dest_dir / "hello"]
    copy = placed[0]
    assert copy.read_bytes() == data
    assert stat.S_IMODE(copy.stat().st_mode) == 0o750
    assert copy.stat().st_ino != cached.path.stat().st_ino
    # An install script editing its copy must not touch the cache.
    copy.chmod(0o700)
    copy.write_bytes(b"patched")
    assert cached.path.read_bytes() == data
    assert stat.S_IMODE(cached.path.stat().st_mode) == 0o750
    assert [p.name for p in dest_dir.iterdir()] == ["hello"]


async def test_materialize_uses_each_artifacts_own_name(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    data = b"one content, two names"
    first = Artifact(uri=source_file(sources, "a.bin", data).as_uri(), sha256=sha256_of(data))
    second = Artifact(uri=first.uri, sha256=first.sha256, name="renamed.bin")
    cached = await cache.ensure(first)
    assert (await cache.ensure(second)) == cached
    placed = await cache.materialize(cached, second, tmp_path / "c")
    assert placed == [tmp_path / "c" / "renamed.bin"]


async def test_materialize_never_overwrites(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    data = b"x"
    artifact = Artifact(uri=source_file(sources, "x", data).as_uri(), sha256=sha256_of(data))
    cached = await cache.ensure(artifact)
    dest_dir = tmp_path / "c"
    dest_dir.mkdir()
    (dest_dir / "x").write_bytes(b"already here")
    with pytest.raises(ArtifactError, match="already exists") as info:
        await cache.materialize(cached, artifact, dest_dir)
    assert info.value.uri == artifact.uri
    assert (dest_dir / "x").read_bytes() == b"already here"
    assert [p.name for p in dest_dir.iterdir()] == ["x"]


async def test_materialize_unpacks_archives(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = b"#!/bin/sh\n"
        member = tarfile.TarInfo("hello")
        member.size, member.mode = len(body), 0o755
        tar.addfile(member, io.BytesIO(body))
        conf = tarfile.TarInfo("etc/hello.conf")
        conf.size = 3
        tar.addfile(conf, io.BytesIO(b"a=1"))
    data = buf.getvalue()
    path = source_file(sources, "hello-1.0.0-linux-amd64.tar.gz", data)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data), unpack=True)
    cached = await cache.ensure(artifact)
    dest_dir = tmp_path / "c"
    placed = await cache.materialize(cached, artifact, dest_dir)
    assert placed == [dest_dir / "etc", dest_dir / "hello"]
    assert stat.S_IMODE((dest_dir / "hello").stat().st_mode) == 0o755
    assert (dest_dir / "etc" / "hello.conf").read_bytes() == b"a=1"
    assert cached.path.read_bytes() == data


async def test_materialize_refuses_archive_past_the_cache_limits(
    cache_root: Path, sources: Path, tmp_path: Path
) -> None:
    cache = ArtifactCache(cache_root, [LocalFetcher()], limits=UnpackLimits(max_entries=1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("a", "b"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO())
    data = buf.getvalue()
    path = source_file(sources, "two.tar", data)
    artifact = Artifact(uri=path.as_uri(), sha256=sha256_of(data), unpack=True)
    cached = await cache.ensure(artifact)
    with pytest.raises(ArtifactError, match="more than 1 entries") as info:
        await cache.materialize(cached, artifact, tmp_path / "c")
    assert info.value.uri == artifact.uri
    assert not (tmp_path / "c").exists()


async def test_materialize_refuses_an_entry_of_other_content(
    cache: ArtifactCache, sources: Path, tmp_path: Path
) -> None:
    data = b"x"
    artifact = Artifact(uri=source_file(sources, "x", data).as_uri(), sha256=sha256_of(data))
    cached = await cache.ensure(artifact)
    other = Artifact(uri=artifact.uri, sha256="f" * 64)
    with pytest.raises(ArtifactError, match=f"expected the cache entry {'f' * 64}"):
        await cache.materialize(cached, other, tmp_path / "c")
