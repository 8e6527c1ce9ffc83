"""The HTTP(S) fetcher: downloads with timeouts, retries, redirects and ``Range`` resume.

:class:`HttpFetcher` serves ``http://`` and ``https://`` artifact URIs for the cache. What
a response means (retry, resume, redirect, refuse) is decided in :mod:`._transfer`; the
blocking transfer itself is :mod:`._http_io` (httpcore, imported on the first remote fetch);
the bytes on disk are :mod:`._partial`. This module strings them together. Rules:

- A fetch is a series of attempts. A transient failure (see :mod:`._transfer`) is retried
  after an exponential backoff with jitter, or after the server's ``Retry-After``; after
  ``retries`` consecutive failed attempts without a byte of progress the fetch fails with
  the last reason. An attempt that got further than any before resets the count, so a
  flaky link that drops every few megabytes still finishes a large artifact.
- Resume: every attempt continues from the bytes already received, with ``Range``. Given
  a ``partial`` path (the cache gives one per digest), the partial download survives the
  fetch: a failed fetch, a cancelled one or a killed agent leaves it for the next fetch of
  the same digest, by any fetcher instance, which re-hashes what was kept and asks for the
  rest.
- The partial download is deleted when its content cannot be the artifact: a sha256 or
  size mismatch ("sha256 mismatch for URI: expected X, got Y"), a body growing past the
  expected size, or a disk error while writing (``ENOSPC``: the partial must not keep
  the disk full). It is kept on every other failure.
- The fetcher checks the digest and size itself, to delete the partial on a mismatch; the
  cache checks them again before admitting the file (the fetcher contract).
- Credentials (per-source headers, bearer tokens) never appear in logs or errors, and URIs
  are shown without query or user info (a pre-signed URL's query is a credential).
- Progress goes to the optional callback as ``(bytes_done, bytes_total or None)``, called
  on the event loop's thread at most every 100 ms while bytes arrive (the last figures
  before a stall included), and once more at the end.
- Cancellation (deployment timeout, shutdown) interrupts a blocked read at once and
  returns after the partial download is checkpointed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from keystone_edge.artifacts._offload import run_in_own_thread, run_in_thread
from keystone_edge.artifacts._partial import PartialDownload
from keystone_edge.artifacts._transfer import HttpSource, retry_delay, show_url
from keystone_edge.artifacts.fetch import FetchResult, ProgressCallback
from keystone_edge.artifacts.verify import check_digest, check_size
from keystone_edge.errors import AgentConfigError, ArtifactError

if TYPE_CHECKING:
    from keystone_edge.artifacts._http_io import Session
    from keystone_edge.config import ArtifactsSection

__all__ = ["HttpFetcher", "HttpOptions", "HttpSource", "http_options"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often the transfer thread wakes the event loop with progress.
_PROGRESS_POST_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Every limit of the HTTP fetcher, with its unit."""

    connect_timeout: float = 10.0  # seconds to establish a connection (TCP and TLS)
    read_timeout: float = 30.0  # seconds without a byte from the server
    retries: int = 5  # consecutive failed attempts without progress after the first
    backoff_initial: float = 1.0  # seconds before the first retry (before jitter)
    backoff_max: float = 60.0  # seconds: cap of the exponential backoff
    retry_after_max: float = 300.0  # seconds: the longest Retry-After honoured
    max_redirects: int = 5  # redirects followed in a row
    max_bytes: int = 8 * 2**30  # bytes: largest download when the recipe gives no size
    checkpoint_seconds: float = 5.0  # seconds between durable checkpoints of a partial
    ca_bundle: Path | None = None  # PEM file trusted instead of the system store
    sources: tuple[HttpSource, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "backoff_max", "retry_after_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        for name in ("retries", "max_redirects", "backoff_initial", "checkpoint_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected zero or more, got {getattr(self, name)}")


def http_options(section: ArtifactsSection) -> HttpOptions:
    """The fetcher options of agent.toml's ``[artifacts]`` (token files are read here)."""
    sources: list[HttpSource] = []
    for index, source in enumerate(section.sources):
        key = f"artifacts.sources[{index}]"
        token = source.bearer_token
        if source.bearer_token_file is not None:
            if token is not None:
                raise AgentConfigError(
                    "expected bearer_token or bearer_token_file, got both", key=key
                )
            try:
                token = Path(source.bearer_token_file).read_text().strip()
            except OSError as exc:
                raise AgentConfigError(
                    f"cannot read {source.bearer_token_file}: {exc.strerror or exc}",
                    key=f"{key}.bearer_token_file",
                ) from exc
        try:
            sources.append(HttpSource(source.prefix, dict(source.headers), token))
        except ValueError as exc:
            raise AgentConfigError(str(exc), key=key) from exc
    ca_bundle = Path(section.ca_bundle) if section.ca_bundle is not None else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise AgentConfigError(
            f"expected a PEM file of CA certificates, got {ca_bundle} (not a file)",
            key="artifacts.ca_bundle",
        )
    try:
        return HttpOptions(
            connect_timeout=float(section.connect_timeout),
            read_timeout=float(section.read_timeout),
            retries=section.retries,
            backoff_initial=float(section.backoff_initial),
            backoff_max=float(section.backoff_max),
            max_redirects=section.max_redirects,
            max_bytes=int(section.max_download_bytes),
            ca_bundle=ca_bundle,
            sources=tuple(sources),
        )
    except ValueError as exc:
        raise AgentConfigError(str(exc), key="artifacts") from exc


class _ProgressPump:
    """Progress from the transfer thread to the loop, read by a loop timer every 100 ms.

    The thread only stores its latest figures (no wake-up per chunk); the timer runs only
    while a fetch with a progress callback is in flight, and the last figures before a
    stall are delivered too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: ProgressCallback | None) -> None:
        self._loop = loop
        self._callback = callback
        self.latest: tuple[int, int | None] | None = None
        self._sent: tuple[int, int | None] | None = None
        self._handle: asyncio.TimerHandle | None = None
        if callback is not None:
            self._handle = loop.call_later(_PROGRESS_POST_SECONDS, self._tick)

    def __call__(self, done: int, total: int | None) -> None:
        self.latest = (done, total)  # any thread; one atomic assignment

    def _tick(self) -> None:
        self._handle = self._loop.call_later(_PROGRESS_POST_SECONDS, self._tick)
        latest = self.latest
        if latest is not None and latest != self._sent and self._callback is not None:
            self._sent = latest
            self._callback(*latest)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class HttpFetcher:
    """Fetches ``http(s)://`` artifacts (see the module rules).

    Cheap to create: httpcore, ssl and the trust store are loaded on the first fetch.
    ``sleep`` and ``rng`` are for tests (backoff without waiting, jitter without chance).
    Call :meth:`aclose` when done with it.
    """

    schemes: frozenset[str] = frozenset({"http", "https"})

    def __init__(
        self,
        options: HttpOptions | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options or HttpOptions()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: Session | None = None
        self._session_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpFetcher({self.options!r})"

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await _in_thread(session.close)

    async def fetch(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str | None,
        expected_size: int | None,
    ) -> FetchResult:
        """Download into ``dest``; a partial download lasts as long as this call."""
        return await self._fetch(
            uri,
            dest=dest,
            expected_sha256=expected_sha256,
            expected_size=expected_size,
            partial=None,
            progress=None,
        )

    async def fetch_resumable(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str,
        expected_size: int | None,
        partial: Path,
        progress: ProgressCallback | None = None,
    ) -> FetchResult:
        """Download into ``dest``, keeping the partial download at ``partial`` across calls."""
        return await self._fetch(
            uri,
            dest=dest,
            expected_sha256=expected_sha256,
            expected_size=expected_size,
            partial=partial,
            progress=progress,
        )

    # -- the fetch -------------------------------------------------------------------------

    async def _fetch(
        self,
        uri: str,
        *,
        dest: Path,
        expected_sha256: str | None,
        expected_size: int | None,
        partial: Path | None,
        progress: ProgressCallback | None,
    ) -> FetchResult:
        shown = show_url(uri)
        download = await self._open(uri, dest, partial, expected_size)
        try:
            if expected_size is None or download.offset != expected_size:
                await self._transfer(uri, download, expected_size, progress)
            # Else every byte is already here (the agent died before moving the download
            # into the cache): verified without asking the network, which may be down.
            digest = await _in_thread(download.sha256)
            size = download.offset
            try:
                check_size(uri, expected_size, size, source=shown)
                check_digest(uri, expected_sha256, digest, source=shown)
            except ArtifactError:
                await _in_thread(download.discard)
                raise
            await _in_thread(download.finish, dest)
        except BaseException:
            await _in_thread(download.close)
            raise
        if progress is not None:
            progress(size, size)
        return FetchResult(digest, size)

    async def _open(
        self, uri: str, dest: Path, partial: Path | None, expected_size: int | None
    ) -> PartialDownload:
        def open_(stop: threading.Event) -> PartialDownload:
            if partial is not None:
                kept = PartialDownload.resume(
                    partial,
                    uri=uri,
                    stop=stop,
                    checkpoint_seconds=self.options.checkpoint_seconds,
                )
                if kept is not None:
                    if expected_size is not None and kept.offset > expected_size:
                        kept.restart()  # cannot be this artifact
                    if kept.offset:
                        log.info("resuming %s from byte %d", show_url(uri), kept.offset)
                    return kept
                log.warning(
                    "the partial download %s is in use by another process; "
                    "downloading %s without it",
                    partial,
                    show_url(uri),
                )
            return PartialDownload.create(dest)

        try:
            return await run_in_thread(open_)
        except OSError as exc:
            raise ArtifactError(
                f"cannot download {show_url(uri)}: cannot prepare {partial or dest}: "
                f"{exc.strerror or exc}",
                uri=uri,
            ) from exc

    async def _transfer(
        self,
        uri: str,
        download: PartialDownload,
        expected_size: int | None,
        progress: ProgressCallback | None,
    ) -> None:
        session = await self._get_session(uri)
        reporter = _ProgressPump(asyncio.get_running_loop(), progress)
        try:
            await self._attempts(uri, download, expected_size, session, reporter)
        finally:
            reporter.close()

    async def _attempts(
        self,
        uri: str,
        download: PartialDownload,
        expected_size: int | None,
        session: Session,
        reporter: _ProgressPump,
    ) -> None:
        from keystone_edge.artifacts._http_io import Interrupt, RefusedError, RetryLaterError

        options = self.options
        failures = 0
        best = download.offset
        while True:
            interrupt = Interrupt()
            try:
                await run_in_own_thread(
                    lambda stop, interrupt=interrupt: session.attempt(  # type: ignore[misc]
                        uri,
                        download,
                        expected_size=expected_size,
                        progress=reporter,
                        interrupt=interrupt,
                        stop=stop,
                    ),
                    name="keystone-fetch",
                    on_cancel=interrupt.fire,
                )
                return
            except RetryLaterError as exc:
                if download.offset > best:
                    best, failures = download.offset, 0
                failures += 1
                if failures > options.retries:
                    raise ArtifactError(
                        f"cannot download {show_url(uri)}: {exc.retry.reason} (gave up after "
                        f"{failures} attempt{'s' if failures > 1 else ''} in a row without "
                        "progress)",
                        uri=uri,
                    ) from exc
                delay = retry_delay(
                    failures,
                    initial=options.backoff_initial,
                    maximum=options.backoff_max,
                    retry_after=exc.retry.retry_after,
                    retry_after_max=options.retry_after_max,
                    rng=self._rng,
                )
                log.warning(
                    "downloading %s: %s; retry %d of %d in %.1f s",
                    show_url(uri),
                    exc.retry.reason,
                    failures,
                    options.retries,
                    delay,
                )
                await self._sleep(delay)
            except RefusedError as exc:
                if exc.fail.discard:
                    await _in_thread(download.discard)
                error = ArtifactError(
                    f"cannot download {show_url(uri)}: {exc.fail.reason}", uri=uri
                )
                if exc.fail.hint is not None:
                    error.hint = exc.fail.hint
                raise error from exc

    async def _get_session(self, uri: str) -> Session:
        if self._session is not None:
            return self._session

        def build(_stop: threading.Event) -> Session:
            from keystone_edge.artifacts._http_io import Session

            with self._session_lock:
                if self._session is None:
                    options = self.options
                    self._session = Session(
                        ca_bundle=options.ca_bundle,
                        connect_timeout=options.connect_timeout,
                        read_timeout=options.read_timeout,
                        sources=options.sources,
                        max_redirects=options.max_redirects,
                        max_bytes=options.max_bytes,
                    )
                return self._session

        try:
            # In a thread: loading the system trust store reads hundreds of files.
            return await run_in_thread(build)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            error = ArtifactError(
                f"cannot download {show_url(uri)}: cannot set up TLS with the CA bundle "
                f"{self.options.ca_bundle}: {exc}",
                uri=uri,
            )
            error.hint = "artifacts.ca_bundle must name a PEM file of CA certificates"
            raise error from exc


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    return await run_in_thread(lambda _stop: function(*args))
