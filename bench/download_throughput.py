"""Download-and-verify throughput of one large artifact over loopback, and memory meanwhile.

``python -m bench.download_throughput [--size 1Gi] [--runs 3] [--dir DIR]``

A file of ``--size`` bytes (random from a fixed seed) is served by a plain HTTP server in
another process (``socket.sendfile``, so the server costs little CPU) and fetched with
:class:`~keystone_edge.artifacts.HttpFetcher`, as the agent does, into a temporary cache
under ``--dir``. Printed, per run and best of the runs:

- the fetcher's throughput (receive, hash, write; what ``fetch`` takes) and that of the
  whole ``ArtifactCache.ensure`` (adds the fsync and the rename into the cache);
- the single-core sha256 speed of this machine (hashlib over the same bytes in memory, in
  this process), and the ratio of the two (goal: >= 85 %);
- the CPU time this process spends per GB (all its threads), next to what sha256 alone
  costs: a figure that, unlike the throughput, does not depend on what else runs;
- the growth of this process's resident memory during the download (peak RSS, from
  ``VmHWM`` after resetting it, or sampled every 10 ms when that is not allowed; goal:
  <= 5 MB), after a 1 MiB warm-up fetch that pays the one-time imports (httpcore, ssl).

Figures only: nothing is asserted. On a machine with two cores the server, the receiving
thread and the hashing thread compete for them; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from keystone_edge.artifacts import ArtifactCache, HttpFetcher, HttpOptions
from keystone_edge.recipe.model import Artifact
from keystone_edge.units import parse_size

MB = 1e6
BLOCK = 16 * 2**20
SERVER = r"""
import os, socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = sys.argv[1]
SIZE = os.path.getsize(PATH)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        size = min(SIZE, 2**20) if self.path == "/warm-up" else SIZE
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", '"bench"')
        self.end_headers()
        self.wfile.flush()
        with open(PATH, "rb") as f:
            self.connection.sendfile(f, count=size)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def make_artifact(path: Path, size: int, seed: int) -> str:
    """Write ``size`` pseudo-random bytes; return their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(BLOCK, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_speed(path: Path, size: int) -> float:
    """Bytes per second of hashlib sha256 over (up to 64 MiB of) the file, in memory."""
    data = path.open("rb").read(min(size, 64 * 2**20))
    view = memoryview(data)
    chunk = 2**20
    passes = max(1, min(size, 2**30) // len(data))
    started = time.perf_counter()
    for _ in range(passes):
        digest = hashlib.sha256()
        for pos in range(0, len(data), chunk):
            digest.update(view[pos : pos + chunk])
    return passes * len(data) / (time.perf_counter() - started)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRss:
    """Peak resident memory while in the block: VmHWM after a reset, else sampling."""

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.baseline = _status("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled every 10 ms"
            self.peak = self.baseline
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _status("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = _status("VmHWM")

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (the server), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    fetch_seconds: float
    fetch_cpu_seconds: float
    server_cpu_seconds: float
    ensure_seconds: float
    rss_growth: int
    rss_method: str


@dataclass(frozen=True)
class Setup:
    url: str
    digest: str
    size: int
    workdir: Path
    server_pid: int


async def one_run(setup: Setup, index: int) -> Run:
    url, digest, size, workdir = setup.url, setup.digest, setup.size, setup.workdir
    fetcher = HttpFetcher(HttpOptions(read_timeout=60.0))
    try:
        # Warm-up: the first remote fetch imports httpcore and builds the TLS context; that
        # one-time cost is not growth during a download.
        warm = workdir / f"warm-{index}"
        warm.mkdir()
        warm_url = url.rsplit("/", 1)[0] + "/warm-up"
        await fetcher.fetch(warm_url, warm / "x", expected_sha256=None, expected_size=None)
        (warm / "x").unlink()

        dest = workdir / f"fetch-{index}"
        dest.mkdir()
        with PeakRss() as rss:
            started, cpu = time.perf_counter(), cpu_seconds()
            server_cpu = process_cpu_seconds(setup.server_pid)
            result = await fetcher.fetch(
                url, dest / "artifact.bin", expected_sha256=digest, expected_size=size
            )
            fetch_seconds = time.perf_counter() - started
            fetch_cpu = cpu_seconds() - cpu
            server_cpu = process_cpu_seconds(setup.server_pid) - server_cpu
        assert result.sha256 == digest
        (dest / "artifact.bin").unlink()

        cache = ArtifactCache(workdir / f"cache-{index}", [fetcher])
        started = time.perf_counter()
        await cache.ensure(Artifact(uri=url, sha256=digest, size=size))
        ensure_seconds = time.perf_counter() - started
        for entry in (workdir / f"cache-{index}").iterdir():
            for path in entry.iterdir():
                path.unlink()
    finally:
        await fetcher.aclose()
    return Run(fetch_seconds, fetch_cpu, server_cpu, ensure_seconds, rss.growth, rss.method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="1Gi", help="artifact size (default 1Gi)")
    parser.add_argument("--runs", type=int, default=3, help="downloads to measure (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: tmp)")
    args = parser.parse_args()
    size = int(parse_size(args.size))

    with tempfile.TemporaryDirectory(prefix="ks-bench-dl-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        source = workdir / "artifact.bin"
        print(f"making a {size / MB:.0f} MB artifact in {workdir} ...", flush=True)
        digest = make_artifact(source, size, args.seed)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(source)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            url = f"http://127.0.0.1:{server.stdout.readline().strip()}/artifact.bin"
            setup = Setup(url, digest, size, workdir, server.pid)
            runs = [asyncio.run(one_run(setup, i)) for i in range(args.runs)]
        finally:
            server.terminate()
            server.wait()
        hash_speed = sha256_speed(source, size)

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f}")
    print(f"artifact: {size / MB:.0f} MB over {url.rsplit('/', 1)[0]} (server: other process)")
    print()
    gb = size / 1e9
    print(
        f"{'run':>4} {'fetch MB/s':>11} {'agent CPU s/GB':>15} {'server CPU s/GB':>16} "
        f"{'ensure MB/s':>12} {'RSS growth':>11}"
    )
    for i, run in enumerate(runs, 1):
        print(
            f"{i:>4} {size / run.fetch_seconds / MB:>11.0f} "
            f"{run.fetch_cpu_seconds / gb:>15.2f} {run.server_cpu_seconds / gb:>16.2f} "
            f"{size / run.ensure_seconds / MB:>12.0f} {run.rss_growth / MB:>9.1f} MB"
        )
    best = min(runs, key=lambda r: r.fetch_seconds)
    fetch_speed = size / best.fetch_seconds
    print()
    print(f"download + verify (HttpFetcher, best): {fetch_speed / MB:8.0f} MB/s")
    print(
        f"cache.ensure incl. fsync (best):        "
        f"{size / min(r.ensure_seconds for r in runs) / MB:8.0f} MB/s"
    )
    print(f"single-core sha256 (hashlib, memory):  {hash_speed / MB:8.0f} MB/s")
    print(f"ratio: {fetch_speed / hash_speed:.0%} of sha256 speed (goal >= 85 %)")
    cpu_per_gb = min(r.fetch_cpu_seconds for r in runs) / gb
    print(
        f"agent CPU per GB: {cpu_per_gb:.2f} s (receive, hash, write; over its threads), "
        f"of which sha256 alone is {1e9 / hash_speed:.2f} s"
    )
    print(
        f"RSS growth during the download: {max(r.rss_growth for r in runs) / MB:.1f} MB at "
        f"most (goal <= 5 MB; {runs[0].rss_method})"
    )


if __name__ == "__main__":
    main()
