"""LocalFetcher and the worker-thread helper, on real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from keystone_edge.artifacts import FetchResult, LocalFetcher, file_uri_path
from keystone_edge.artifacts._offload import run_in_thread
from keystone_edge.errors import ArtifactError


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def fetch(source_uri: str, dest: Path, *, chunk_bytes: int = 1 << 20) -> FetchResult:
    fetcher = LocalFetcher(chunk_bytes=chunk_bytes)
    return await fetcher.fetch(source_uri, dest, expected_sha256=None, expected_size=None)


async def test_streams_and_hashes_across_many_chunks(tmp_path: Path) -> None:
    data = os.urandom(100_003)
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    dest = tmp_path / "copy.bin"
    result = await fetch(source.as_uri(), dest, chunk_bytes=4096)
    assert result == FetchResult(sha256_of(data), len(data))
    assert dest.read_bytes() == data


async def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    result = await fetch(source.as_uri(), tmp_path / "copy")
    assert result == FetchResult(sha256_of(b""), 0)


async def test_percent_encoded_paths_are_decoded(tmp_path: Path) -> None:
    source = tmp_path / "my tool #1.bin"
    source.write_bytes(b"x")
    assert source.as_uri().endswith("my%20tool%20%231.bin")
    result = await fetch(source.as_uri(), tmp_path / "copy")
    assert result.size == 1


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(0o755, 0o755), (0o644, 0o644), (0o4755, 0o755), (0o2775, 0o755), (0o666, 0o644)],
)
async def test_keeps_permission_bits_but_not_special_or_shared_write(
    tmp_path: Path, mode: int, expected: int
) -> None:
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\n")
    source.chmod(mode)
    dest = tmp_path / "copy"
    await fetch(source.as_uri(), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == expected


async def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tool.bin"
    with pytest.raises(ArtifactError) as info:
        await fetch(missing.as_uri(), tmp_path / "copy")
    assert str(info.value) == f"artifact file not found: {missing}"
    assert info.value.uri == missing.as_uri()
    assert not (tmp_path / "copy").exists()


async def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=f"^artifact file {tmp_path} is a directory$"):
        await fetch(tmp_path.as_uri(), tmp_path / "copy")


async def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    async with asyncio.timeout(10):
        with pytest.raises(ArtifactError, match="is not a regular file"):
            await fetch(fifo.as_uri(), tmp_path / "copy")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("file://server/share/x.bin", "names the host 'server'"),
        ("file:relative/x.bin", "a relative path"),
        ("file:///opt/a#b.bin", "a query or fragment"),
        ("https://h/x.bin", "x.bin$"),
    ],
)
def test_only_absolute_local_file_uris(uri: str, why: str) -> None:
    with pytest.raises(ArtifactError, match=f"^expected file:///absolute/path, got .*{why}"):
        file_uri_path(uri)


def test_localhost_is_the_local_host() -> None:
    assert file_uri_path("file://localhost/opt/x.bin") == Path("/opt/x.bin")


async def test_cancellation_stops_the_worker_before_propagating() -> None:
    started = threading.Event()
    finished = threading.Event()

    def work(stop: threading.Event) -> None:
        started.set()
        try:
            while not stop.wait(0.01):
                pass
        finally:
            finished.set()

    task = asyncio.create_task(run_in_thread(work))
    while not started.is_set():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The caller's cleanup may now run: the thread is done.
    assert finished.is_set()


async def test_worker_errors_and_results_pass_through() -> None:
    assert await run_in_thread(lambda stop: 41 + int(not stop.is_set())) == 42

    def fail(_stop: threading.Event) -> None:
        raise ArtifactError("boom")

    with pytest.raises(ArtifactError, match="boom"):
        await run_in_thread(fail)
