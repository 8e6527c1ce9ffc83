"""HttpFetcher through ArtifactCache.ensure against a real HTTP(S) server on 127.0.0.1.

The server (``_http_server``) misbehaves on cue: 503s, dropped connections, stalls, a
lying body, ignored ranges, redirects, bearer tokens, TLS with a throw-away CA. Backoff
sleeps are recorded instead of slept, so the suite runs in seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from tests.artifacts._http_server import ArtifactServer, Pki, Route, make_pki, running

from keystone_edge.artifacts import (
    ArtifactCache,
    HttpFetcher,
    HttpOptions,
    HttpSource,
    LocalFetcher,
)
from keystone_edge.errors import ArtifactError
from keystone_edge.recipe.model import Artifact

SIZE = 256 * 1024
DATA = random.Random(4).randbytes(SIZE)
DIGEST = hashlib.sha256(DATA).hexdigest()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sleeps:
    """Backoff delays, recorded instead of slept."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fetcher(sleeps: Sleeps, **options: object) -> HttpFetcher:
    defaults: dict[str, object] = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 3}
    return HttpFetcher(
        HttpOptions(**{**defaults, **options}),  # type: ignore[arg-type]
        sleep=sleeps,
        rng=random.Random(7),
    )


def make_cache(root: Path, http: HttpFetcher, *, partial_max_age: float = 3600.0) -> ArtifactCache:
    return ArtifactCache(root, [LocalFetcher(), http], partial_max_age=partial_max_age)


def artifact(uri: str, data: bytes = DATA, *, size: int | None = None) -> Artifact:
    return Artifact(uri=uri, sha256=sha256_of(data), size=size)


def partial_dir(root: Path) -> Path:
    return root / ".keystone-partial"


def leftovers(root: Path) -> list[str]:
    """Anything in the cache root but digest entries and an empty partial directory."""
    if not root.exists():
        return []
    names = [p.name for p in root.iterdir() if len(p.name) != 64]
    if partial_dir(root).exists():
        names.remove(".keystone-partial")
        names += [f".keystone-partial/{p.name}" for p in partial_dir(root).iterdir()]
    return sorted(names)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with running() as srv:
        yield srv


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


# -- the plain path -------------------------------------------------------------------------


async def test_a_download_is_verified_and_cached(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA)
    reports: list[tuple[int, int | None]] = []
    http = fetcher(sleeps)
    cache = make_cache(cache_root, http)

    cached = await cache.ensure(
        artifact(server.url("/a.bin"), size=SIZE), progress=lambda d, t: reports.append((d, t))
    )
    await http.aclose()

    assert cached.sha256 == DIGEST
    assert cached.path == cache_root / DIGEST / "a.bin"
    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == [None]
    assert reports[-1] == (SIZE, SIZE)
    assert leftovers(cache_root) == []
    assert sleeps.delays == []
    # The record names the source without its query (a pre-signed URL is a credential).
    record = msgspec.json.decode((cache_root / DIGEST / ".keystone-entry.json").read_bytes())
    assert record["uri"] == server.url("/a.bin")


async def test_a_second_ensure_uses_the_cache_without_a_request(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA)
    cache = make_cache(cache_root, fetcher(sleeps))
    await cache.ensure(artifact(server.url("/a.bin?sig=secret")))
    reports: list[tuple[int, int | None]] = []
    await cache.ensure(
        artifact(server.url("/a.bin?sig=secret")), progress=lambda d, t: reports.append((d, t))
    )
    assert server.paths() == ["/a.bin?sig=secret"]  # the query is sent, of course
    assert reports == [(SIZE, SIZE)]
    record = (cache_root / DIGEST / ".keystone-entry.json").read_text()
    assert "secret" not in record


# -- resume ----------------------------------------------------------------------------------


async def test_a_dropped_connection_resumes_with_range(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, drops=[100_000])
    cache = make_cache(cache_root, fetcher(sleeps))

    cached = await cache.ensure(artifact(server.url("/a.bin"), size=SIZE))

    assert cached.path.read_bytes() == DATA
    first, second = server.requests_to("/a.bin")
    assert first.range is None
    assert second.range == "bytes=100000-"
    assert second.headers["if-range"] == '"v1"'
    assert len(sleeps.delays) == 1
    assert leftovers(cache_root) == []


async def test_a_server_ignoring_range_restarts_from_zero(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, drops=[100_000], ranges=False)
    cache = make_cache(cache_root, fetcher(sleeps))

    cached = await cache.ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == [None, "bytes=100000-"]


async def test_a_changed_etag_makes_the_server_send_everything_again(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    route = Route(DATA, drops=[100_000])
    server.routes["/a.bin"] = route
    cache = make_cache(cache_root, fetcher(sleeps, retries=0))
    with pytest.raises(ArtifactError):
        await cache.ensure(artifact(server.url("/a.bin")))
    route.etag = '"v2"'  # the server's file was replaced (by the same bytes, here)

    cached = await make_cache(cache_root, fetcher(sleeps)).ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    retry = server.requests_to("/a.bin")[1]
    assert (retry.range, retry.headers["if-range"]) == ("bytes=100000-", '"v1"')


async def test_a_partial_download_survives_a_restart(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, drops=[150_000])
    first = make_cache(cache_root, fetcher(sleeps, retries=0))
    with pytest.raises(ArtifactError, match=r"gave up after 1 attempt in a row"):
        await first.ensure(artifact(server.url("/a.bin"), size=SIZE))
    kept = partial_dir(cache_root) / DIGEST
    assert kept.read_bytes() == DATA[:150_000]
    assert await first.remove_leftovers() == []  # a resumable partial is not a leftover
    assert kept.exists()

    # A new agent: a fresh cache and fetcher find the partial and ask for the rest.
    second = make_cache(cache_root, fetcher(Sleeps()))
    cached = await second.ensure(artifact(server.url("/a.bin"), size=SIZE))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == [None, "bytes=150000-"]
    assert leftovers(cache_root) == []


async def test_a_partial_from_another_mirror_is_resumed_without_its_validator(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, drops=[150_000])
    server.routes["/mirror/a.bin"] = Route(DATA, etag='"other"')
    with pytest.raises(ArtifactError):
        await make_cache(cache_root, fetcher(sleeps, retries=0)).ensure(
            artifact(server.url("/a.bin"))
        )

    cache = make_cache(cache_root, fetcher(sleeps))
    cached = await cache.ensure(artifact(server.url("/mirror/a.bin")))

    assert cached.path.read_bytes() == DATA
    (mirror,) = server.requests_to("/mirror/a.bin")
    assert mirror.range == "bytes=150000-"
    assert "if-range" not in mirror.headers


async def test_a_complete_partial_is_finished_by_a_416(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    # The agent died between the last byte and the move into the cache.
    partial_dir(cache_root).mkdir(parents=True)
    (partial_dir(cache_root) / DIGEST).write_bytes(DATA)
    record = {"uri_key": sha256_of(server.url("/a.bin").encode()), "length": SIZE}
    (partial_dir(cache_root) / f"{DIGEST}.json").write_bytes(msgspec.json.encode(record))
    server.routes["/a.bin"] = Route(DATA)

    cached = await make_cache(cache_root, fetcher(sleeps)).ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == [f"bytes={SIZE}-"]
    assert leftovers(cache_root) == []


async def test_a_complete_partial_of_known_size_needs_no_network(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    partial_dir(cache_root).mkdir(parents=True)
    (partial_dir(cache_root) / DIGEST).write_bytes(DATA)
    record = {"uri_key": sha256_of(server.url("/a.bin").encode()), "length": SIZE}
    (partial_dir(cache_root) / f"{DIGEST}.json").write_bytes(msgspec.json.encode(record))
    server.stop()  # offline

    cache = make_cache(cache_root, fetcher(sleeps))
    cached = await cache.ensure(artifact(server.url("/a.bin"), size=SIZE))

    assert cached.path.read_bytes() == DATA
    assert server.seen == []
    assert leftovers(cache_root) == []


async def test_bytes_past_the_last_checkpoint_are_not_trusted(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    # After a power loss the data file may be longer than what was synced.
    partial_dir(cache_root).mkdir(parents=True)
    (partial_dir(cache_root) / DIGEST).write_bytes(DATA[:1000] + b"\0" * 5000)
    record = {"uri_key": sha256_of(server.url("/a.bin").encode()), "length": 1000}
    (partial_dir(cache_root) / f"{DIGEST}.json").write_bytes(msgspec.json.encode(record))
    server.routes["/a.bin"] = Route(DATA)

    cached = await make_cache(cache_root, fetcher(sleeps)).ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == ["bytes=1000-"]


# -- retries ---------------------------------------------------------------------------------


async def test_503s_are_retried_honouring_retry_after(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, statuses=[503, 429], retry_after="7")
    cache = make_cache(cache_root, fetcher(sleeps))

    cached = await cache.ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert len(server.requests_to("/a.bin")) == 3
    assert sleeps.delays == [7.0, 7.0]


async def test_retries_give_up_after_the_limit_with_the_last_reason(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, statuses=[503] * 10)
    cache = make_cache(cache_root, fetcher(sleeps, retries=2, backoff_initial=1.0))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin")))

    assert str(caught.value) == (
        f"cannot download {server.url('/a.bin')}: HTTP 503 "
        "(gave up after 3 attempts in a row without progress)"
    )
    assert caught.value.uri == server.url("/a.bin")
    assert len(server.requests_to("/a.bin")) == 3
    # Exponential with equal jitter: half to all of 1 s, then of 2 s.
    first, second = sleeps.delays
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 2.0
    assert entries(cache_root) == []


async def test_progress_resets_the_retry_count(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    # Four drops with retries=1: each attempt gets further, so none counts twice.
    server.routes["/a.bin"] = Route(DATA, drops=[40_000, 80_000, 120_000, 160_000])
    cache = make_cache(cache_root, fetcher(sleeps, retries=1))

    cached = await cache.ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    ranges = [s.range for s in server.requests_to("/a.bin")]
    assert ranges == [None, "bytes=40000-", "bytes=120000-", "bytes=240000-"]
    assert len(sleeps.delays) == 3


async def test_a_stalled_server_times_out(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, stalls=[50_000])
    cache = make_cache(cache_root, fetcher(sleeps, read_timeout=0.3, retries=0))
    started = time.monotonic()

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin")))

    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot download {server.url('/a.bin')}: timed out reading from "
        f"{server.url('/a.bin')} after 50000 bytes "
        "(gave up after 1 attempt in a row without progress)"
    )
    assert (partial_dir(cache_root) / DIGEST).stat().st_size == 50_000


async def test_a_stall_then_a_resume(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, stalls=[50_000])
    cache = make_cache(cache_root, fetcher(sleeps, read_timeout=0.3))

    cached = await cache.ensure(artifact(server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in server.requests_to("/a.bin")] == [None, "bytes=50000-"]


async def test_cancelling_interrupts_a_blocked_read_and_keeps_the_partial(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, stalls=[60_000])
    cache = make_cache(cache_root, fetcher(sleeps, read_timeout=30))
    stalled = asyncio.Event()

    def progress(done: int, total: int | None) -> None:
        if done == 60_000:
            stalled.set()

    task = asyncio.create_task(cache.ensure(artifact(server.url("/a.bin")), progress=progress))
    # The last figures before the stall are reported too (within the throttle interval).
    await asyncio.wait_for(stalled.wait(), 5)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2  # not the 30 s read timeout

    record = msgspec.json.decode((partial_dir(cache_root) / f"{DIGEST}.json").read_bytes())
    assert record["length"] == 60_000
    server.release.set()
    cached = await make_cache(cache_root, fetcher(sleeps)).ensure(artifact(server.url("/a.bin")))
    assert cached.path.read_bytes() == DATA
    assert server.requests_to("/a.bin")[-1].range == "bytes=60000-"


# -- refusals --------------------------------------------------------------------------------


async def test_a_lying_server_fails_with_both_digests_and_the_partial_goes(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    lie = bytes(reversed(DATA))
    server.routes["/a.bin"] = Route(lie)
    cache = make_cache(cache_root, fetcher(sleeps))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin"), size=SIZE))

    assert str(caught.value) == (
        f"sha256 mismatch for {server.url('/a.bin')}: expected {DIGEST}, got {sha256_of(lie)}"
    )
    assert leftovers(cache_root) == []
    assert entries(cache_root) == []
    assert sleeps.delays == []


async def test_a_lie_after_a_resume_discards_the_partial_too(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    lie = DATA[:100_000] + bytes(SIZE - 100_000)
    server.routes["/a.bin"] = Route(lie, drops=[100_000])
    cache = make_cache(cache_root, fetcher(sleeps))

    with pytest.raises(ArtifactError, match=f"sha256 mismatch .*: expected {DIGEST}, got "):
        await cache.ensure(artifact(server.url("/a.bin")))

    assert [s.range for s in server.requests_to("/a.bin")] == [None, "bytes=100000-"]
    assert leftovers(cache_root) == []


async def test_a_content_length_contradicting_the_recipe_fails_at_once(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA)
    cache = make_cache(cache_root, fetcher(sleeps))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin"), size=SIZE + 1))

    assert str(caught.value) == (
        f"cannot download {server.url('/a.bin')}: size mismatch: expected {SIZE + 1} bytes, "
        f"got {SIZE} bytes (Content-Length)"
    )
    assert leftovers(cache_root) == []


async def test_a_body_longer_than_the_recipe_size_stops_early(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    # No Content-Length to check up front: the bytes past the declared size give it away.
    server.routes["/a.bin"] = Route(DATA + bytes(SIZE), declare_length=False)
    cache = make_cache(cache_root, fetcher(sleeps))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin"), size=SIZE))

    assert str(caught.value) == (
        f"cannot download {server.url('/a.bin')}: size mismatch: expected {SIZE} bytes, "
        "got more than that"
    )
    assert leftovers(cache_root) == []


async def test_a_close_delimited_body_is_accepted(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, declare_length=False)
    cache = make_cache(cache_root, fetcher(sleeps))
    cached = await cache.ensure(artifact(server.url("/a.bin")))
    assert cached.path.read_bytes() == DATA


async def test_not_found_is_not_retried(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    cache = make_cache(cache_root, fetcher(sleeps))
    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/missing.bin")))
    assert str(caught.value) == (
        f"cannot download {server.url('/missing.bin')}: HTTP 404: not found on the server"
    )
    assert sleeps.delays == []


# -- redirects -------------------------------------------------------------------------------


async def test_redirects_are_followed(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/old/a.bin"] = Route(redirect="/store/a.bin", redirect_status=301)
    server.routes["/store/a.bin"] = Route(redirect=server.url("/a.bin"), redirect_status=307)
    server.routes["/a.bin"] = Route(DATA)
    cache = make_cache(cache_root, fetcher(sleeps))

    cached = await cache.ensure(artifact(server.url("/old/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert cached.path.name == "a.bin"
    assert server.paths() == ["/old/a.bin", "/store/a.bin", "/a.bin"]


async def test_a_redirect_loop_is_bounded(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(redirect="/a.bin")
    cache = make_cache(cache_root, fetcher(sleeps, max_redirects=3))
    with pytest.raises(ArtifactError, match=r"too many redirects \(the last one, HTTP 302"):
        await cache.ensure(artifact(server.url("/a.bin")))
    assert len(server.requests_to("/a.bin")) == 4


# -- credentials -----------------------------------------------------------------------------


async def test_a_bearer_token_goes_only_to_its_source(cache_root: Path, sleeps: Sleeps) -> None:
    with running() as private, running() as other:
        other.routes["/b.bin"] = Route(DATA)
        private.routes["/private/a.bin"] = Route(DATA, token="s3cret")
        private.routes["/public/a.bin"] = Route(DATA)
        private.routes["/private/elsewhere.bin"] = Route(redirect=other.url("/b.bin"))
        source = HttpSource(private.url("/private"), {"X-Tenant": "acme"}, "s3cret")
        http = fetcher(sleeps, sources=(source,))
        root = cache_root

        await make_cache(root / "1", http).ensure(artifact(private.url("/private/a.bin")))
        await make_cache(root / "2", http).ensure(artifact(private.url("/public/a.bin")))
        await make_cache(root / "3", http).ensure(artifact(private.url("/private/elsewhere.bin")))

        sent = {s.path: s.headers for s in private.seen}
        assert sent["/private/a.bin"]["authorization"] == "Bearer s3cret"
        assert sent["/private/a.bin"]["x-tenant"] == "acme"
        assert "authorization" not in sent["/public/a.bin"]
        assert sent["/private/elsewhere.bin"]["authorization"] == "Bearer s3cret"
        (redirected,) = other.seen
        assert "authorization" not in redirected.headers
        assert "x-tenant" not in redirected.headers
        assert "s3cret" not in repr(http)


async def test_a_missing_token_fails_with_a_hint(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, token="s3cret")
    cache = make_cache(cache_root, fetcher(sleeps))
    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/a.bin")))
    assert "HTTP 401" in str(caught.value)
    assert caught.value.hint is not None
    assert "[[artifacts.sources]]" in caught.value.hint


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory() as directory:
        try:
            made = make_pki(Path(directory))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"openssl could not make a test CA: {exc.stderr.decode(errors='replace')}")
        if made is None:
            pytest.skip("TLS tests need the openssl command to make a test CA")
        yield made


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ArtifactServer]:
    with running(pki.server_context()) as srv:
        yield srv


async def test_tls_with_the_configured_ca(
    tls_server: ArtifactServer, pki: Pki, cache_root: Path, sleeps: Sleeps
) -> None:
    tls_server.routes["/a.bin"] = Route(DATA, drops=[70_000])
    cache = make_cache(cache_root, fetcher(sleeps, ca_bundle=pki.ca))

    cached = await cache.ensure(artifact(tls_server.url("/a.bin")))

    assert cached.path.read_bytes() == DATA
    assert [s.range for s in tls_server.requests_to("/a.bin")] == [None, "bytes=70000-"]


async def test_tls_without_the_ca_is_refused_and_not_retried(
    tls_server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    tls_server.routes["/a.bin"] = Route(DATA)
    cache = make_cache(cache_root, fetcher(sleeps))  # the system trust store

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(tls_server.url("/a.bin")))

    assert str(caught.value).startswith(
        f"cannot download {tls_server.url('/a.bin')}: TLS certificate verification failed "
        f"for {tls_server.url('/a.bin')}: "
    )
    assert caught.value.hint is not None
    assert "artifacts.ca_bundle" in caught.value.hint
    assert sleeps.delays == []
    assert tls_server.seen == []


async def test_an_https_to_http_redirect_is_refused(
    tls_server: ArtifactServer, server: ArtifactServer, pki: Pki, cache_root: Path
) -> None:
    server.routes["/a.bin"] = Route(DATA)
    tls_server.routes["/a.bin"] = Route(redirect=server.url("/a.bin"))
    cache = make_cache(cache_root, fetcher(Sleeps(), ca_bundle=pki.ca))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(tls_server.url("/a.bin")))

    assert str(caught.value) == (
        f"cannot download {tls_server.url('/a.bin')}: refusing a redirect from "
        f"{tls_server.url('/a.bin')} to {server.url('/a.bin')}: expected https, got a "
        "downgrade to plain http"
    )
    assert server.seen == []


async def test_a_broken_ca_bundle_is_an_error_naming_it(
    server: ArtifactServer, cache_root: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    server.routes["/a.bin"] = Route(DATA)
    cache = make_cache(cache_root, fetcher(Sleeps(), ca_bundle=bundle))
    with pytest.raises(ArtifactError, match=f"cannot set up TLS with the CA bundle {bundle}"):
        await cache.ensure(artifact(server.url("/a.bin")))


# -- progress --------------------------------------------------------------------------------


async def test_progress_is_reported_at_most_four_times_a_second(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    data = DATA * 2
    server.routes["/a.bin"] = Route(data, chunk_delay=0.02)  # 32 chunks, ~0.7 s
    reports: list[tuple[float, int, int | None]] = []
    cache = make_cache(cache_root, fetcher(sleeps))

    await cache.ensure(
        artifact(server.url("/a.bin"), data),
        progress=lambda done, total: reports.append((time.monotonic(), done, total)),
    )

    assert reports[-1][1:] == (len(data), len(data))
    assert len(reports) >= 3
    assert all(total == len(data) for _, _, total in reports)
    done = [d for _, d, _ in reports]
    assert done == sorted(done)
    times = [t for t, _, _ in reports[:-1]]
    assert all(b - a >= 0.24 for a, b in itertools.pairwise(times))


# -- leftovers -------------------------------------------------------------------------------


async def test_old_partials_are_removed_as_leftovers(
    server: ArtifactServer, cache_root: Path, sleeps: Sleeps
) -> None:
    server.routes["/a.bin"] = Route(DATA, drops=[10_000])
    with pytest.raises(ArtifactError):
        await make_cache(cache_root, fetcher(sleeps, retries=0)).ensure(
            artifact(server.url("/a.bin"))
        )
    orphan_record = partial_dir(cache_root) / f"{'0' * 64}.json"
    orphan_record.write_text("{}")

    kept = await make_cache(cache_root, fetcher(sleeps)).remove_leftovers()
    assert kept == [orphan_record]
    assert (partial_dir(cache_root) / DIGEST).exists()

    old = time.time() - 3600
    os.utime(partial_dir(cache_root) / DIGEST, (old, old))
    removed = await make_cache(cache_root, fetcher(sleeps), partial_max_age=60).remove_leftovers()
    assert removed == [partial_dir(cache_root) / DIGEST]
    assert leftovers(cache_root) == []


# -- disk full -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a tmpfs, which needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_fails_cleanly_naming_enospc(
    server: ArtifactServer, small_disk: Path, sleeps: Sleeps
) -> None:
    big = random.Random(5).randbytes(3 * 2**20)
    server.routes["/big.bin"] = Route(big)
    root = small_disk / "artifacts"
    cache = make_cache(root, fetcher(sleeps))

    with pytest.raises(ArtifactError) as caught:
        await cache.ensure(artifact(server.url("/big.bin"), big))

    assert "No space left on device (ENOSPC)" in str(caught.value)
    assert str(caught.value).startswith(f"cannot download {server.url('/big.bin')}: cannot write ")
    assert sleeps.delays == []
    assert leftovers(root) == []
    assert entries(root) == []
    # The space is free again: a small artifact still fits.
    server.routes["/small.bin"] = Route(DATA)
    cached = await cache.ensure(artifact(server.url("/small.bin")))
    assert cached.path.read_bytes() == DATA


def entries(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if len(p.name) == 64)
