"""Log capture: framing, rotation caps under a flood, tail across files, follow."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path

import pytest

from keystone_edge.runners.base import LaunchSpec
from keystone_edge.runners.logfile import follow, tail
from keystone_edge.runners.process import ProcessRunner

from .conftest import ENV, NewLog, run

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (out|err) (.*)$")


def files_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


def test_stdout_and_stderr_lines_land_timestamped_and_marked(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log(tmp_path / "app.log", max_bytes=1 << 20, backups=2)
    code = (
        "import sys\n"
        "print('hello', flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "sys.stdout.write('no newline at the end')\n"
    )

    async def main() -> None:
        proc = await ProcessRunner().start(
            LaunchSpec("com.example.app", [sys.executable, "-c", code], ENV, tmp_path, log=log)
        )
        await proc.wait()
        await proc.drained()

    run(main())
    lines = (tmp_path / "app.log").read_text().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(1), m.group(2)) for m in parsed if m] == [
        ("out", "hello"),
        ("err", "oops"),
        ("out", "no newline at the end"),
    ]


def test_timestamps_are_utc_iso_with_milliseconds(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log(tmp_path / "a.log", max_bytes=4096, backups=0, wallclock=lambda: 1738324800.5)
    log.stream("out").feed(b"x\n")
    assert (tmp_path / "a.log").read_bytes() == b"2025-01-31T12:00:00.500Z out x\n"


def test_partial_lines_wait_for_their_end_so_streams_never_mix(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log(tmp_path / "a.log", max_bytes=4096, backups=0, wallclock=lambda: 0.0)
    out, err = log.stream("out"), log.stream("err")
    out.feed(b"hel")
    err.feed(b"warn")
    out.feed(b"lo\nwor")
    err.feed(b"ing\n")
    out.feed(b"ld\n")
    out.close()
    err.close()
    text = (tmp_path / "a.log").read_text()
    assert [line[25:] for line in text.splitlines()] == ["out hello", "err warning", "out world"]


def test_very_long_lines_are_cut_and_the_rest_is_dropped(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log(
        tmp_path / "a.log", max_bytes=1 << 20, backups=0, max_line_bytes=10, wallclock=lambda: 0.0
    )
    stream = log.stream("out")
    stream.feed(b"short\n" + b"y" * 25 + b"\nnext\n")
    stream.feed(b"z" * 8)
    stream.feed(b"z" * 8)  # crosses the limit while incomplete
    stream.feed(b"z" * 100)
    stream.feed(b"zzz\nafter\n")
    bodies = [line[25:] for line in (tmp_path / "a.log").read_text().splitlines()]
    assert bodies == [
        "out short",
        "out yyyyyyyyyy [truncated]",
        "out next",
        "out zzzzzzzzzz [truncated]",
        "out after",
    ]


def test_rotation_keeps_whole_lines_and_each_file_under_the_cap(
    tmp_path: Path, new_log: NewLog
) -> None:
    path = tmp_path / "a.log"
    log = new_log(path, max_bytes=1000, backups=3, wallclock=lambda: 0.0)
    stream = log.stream("out")
    for i in range(400):
        stream.feed(f"line {i:04d}\n".encode())
    log.close()
    files = files_of(path)
    assert [f.name for f in files] == ["a.log", "a.log.1", "a.log.2", "a.log.3"]
    for file in files:
        data = file.read_bytes()
        assert len(data) <= 1000
        assert data.endswith(b"\n")
        assert all(LINE.match(line) for line in data.decode().splitlines())
    # Nothing lost inside what is kept: consecutive numbers across the files, oldest first.
    kept = [int(line[-4:]) for f in reversed(files) for line in f.read_text().splitlines()]
    assert kept == list(range(kept[0], 400))


def test_zero_backups_truncates(tmp_path: Path, new_log: NewLog) -> None:
    path = tmp_path / "a.log"
    log = new_log(path, max_bytes=100, backups=0)
    for i in range(50):
        log.write(f"{i:09d}\n".encode())
    assert [f.name for f in files_of(path)] == ["a.log"]
    assert path.read_bytes() == b"".join(f"{i:09d}\n".encode() for i in range(40, 50))


def test_a_flood_cannot_fill_the_disk(tmp_path: Path, new_log: NewLog) -> None:
    path = tmp_path / "flood.log"
    max_bytes, backups = 1 << 20, 3
    log = new_log(path, max_bytes=max_bytes, backups=backups)
    # ~50 MB of 100-byte lines, written as fast as Python can.
    code = (
        "import sys\n"
        "block = b''.join(b'%09d ' % i + b'x' * 89 + b'\\n' for i in range(10000))\n"
        "for _ in range(50): sys.stdout.buffer.write(block)\n"
        "sys.stdout.buffer.write(b'THE END\\n')\n"
    )

    async def main() -> float:
        started = time.perf_counter()
        proc = await ProcessRunner().start(
            LaunchSpec("com.example.flood", [sys.executable, "-c", code], ENV, tmp_path, log=log)
        )
        await proc.wait()
        await proc.drained()
        return time.perf_counter() - started

    took = run(main())
    files = files_of(path)
    total = sum(f.stat().st_size for f in files)
    assert len(files) == backups + 1
    assert total <= max_bytes * (backups + 1)
    assert all(f.stat().st_size <= max_bytes for f in files)
    assert path.read_text().splitlines()[-1].endswith(" out THE END")
    print(f"50 MB flood captured in {took:.2f}s")


def test_tail_reads_across_rotated_files(tmp_path: Path, new_log: NewLog) -> None:
    path = tmp_path / "a.log"
    log = new_log(path, max_bytes=200, backups=5)
    for i in range(60):
        log.write(f"line {i:03d}\n".encode())  # 9 bytes each, 22 per file
    assert tail(path, 3) == ["line 057", "line 058", "line 059"]
    assert tail(path, 40) == [f"line {i:03d}" for i in range(20, 60)]
    assert tail(path, 1000) == [f"line {i:03d}" for i in range(60)]
    assert tail(path, 0) == []
    assert tail(tmp_path / "missing.log", 5) == []


def test_tail_reads_backwards_in_blocks_and_keeps_a_final_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(b"%05d\n" % i for i in range(100000)) + b"partial")
    assert tail(path, 2, block_size=16) == ["99999", "partial"]


def test_follow_sees_new_lines_and_survives_rotation(tmp_path: Path, new_log: NewLog) -> None:
    path = tmp_path / "a.log"
    log = new_log(path, max_bytes=300, backups=1)
    log.write(b"before following\n")

    async def main() -> list[str]:
        seen: list[str] = []
        progressed = asyncio.Event()

        async def reader() -> None:
            async for line in follow(path, poll_interval=0.005, from_start=True):
                seen.append(line)
                progressed.set()
                if len(seen) == 101:
                    return

        async def until_seen(count: int) -> None:
            while len(seen) < count:
                progressed.clear()
                await progressed.wait()

        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            tg.create_task(reader())
            await until_seen(1)
            for i in range(100):
                log.write(f"line {i:03d}\n".encode())  # rotates every ~33 lines
                if i % 10 == 9:
                    await until_seen(i + 2)  # keep within the one backup file kept
        return seen

    assert run(main()) == ["before following"] + [f"line {i:03d}" for i in range(100)]


def test_follow_from_the_end_skips_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("old\n")

    async def main() -> str:
        lines = follow(path, poll_interval=0.005)
        first = asyncio.ensure_future(anext(lines))
        # The follower opens the file on its first poll, before any sleep.
        await asyncio.sleep(0)
        with path.open("a") as file:
            file.write("new\n")
        try:
            return await asyncio.wait_for(first, 5)
        finally:
            await lines.aclose()

    assert run(main()) == "new"


def test_a_broken_log_drops_output_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, new_log: NewLog
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = new_log(blocker / "a.log", max_bytes=100, backups=1)
    with caplog.at_level(logging.WARNING, "keystone_edge.runners.logfile"):
        log.write(b"one\n")
        log.write(b"two\n")
    assert len(caplog.records) == 1
    assert "dropping output until it works again" in caplog.records[0].getMessage()
