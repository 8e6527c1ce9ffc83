"""The I/O half of the HTTP fetcher: one blocking GET attempt over httpcore, in a worker thread.

Imported on the first remote fetch only (httpcore, ssl and the system CA store cost memory
an agent with only local artifacts should not pay). Rules:

- Blocking sockets in a worker thread, not httpcore's async pool: on this project's
  reference machine the async pool (anyio streams, 64 KiB reads through the event loop)
  tops out near 0.6 GB/s on loopback before any hashing, the sync pool near 2.5 GB/s
  (``bench/download_throughput.py``). The event loop only sees progress reports.
- httpcore exceptions never leave this module: they become :class:`RetryLaterError` (timeouts,
  resets, connection failures, bodies cut short) or :class:`RefusedError` (TLS certificate
  errors, protocol misuse), once, here. Disk errors while writing are :class:`RefusedError` and
  discard the partial (``ENOSPC`` named as such).
- What a response means is decided by :func:`~._transfer.interpret`; this module only
  carries the decisions out.
- Connections are not kept alive between requests: downloads are rare and large, an idle
  connection is memory and a file descriptor for nothing, and a fresh connection per
  attempt is what lets a cancelled fetch interrupt a blocked read (below).
- Cancellation: every socket an attempt opens is registered (a duplicated descriptor) with
  its :class:`Interrupt`; :meth:`Interrupt.fire` shuts them down from the event loop's
  thread, which wakes a read blocked for up to the read timeout at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import httpcore

from keystone_edge import __version__
from keystone_edge.artifacts._partial import PartialDownload, StoppedError
from keystone_edge.artifacts._transfer import (
    AlreadyComplete,
    Body,
    Fail,
    Follow,
    HttpSource,
    Retry,
    interpret,
    request_headers,
    show_url,
)

__all__ = ["Interrupt", "RefusedError", "RetryLaterError", "Session", "disk_error"]

USER_AGENT = f"keystone-edge/{__version__}"
Progress = Callable[[int, int | None], None]


class RetryLaterError(Exception):
    """A transient failure of one attempt (see :class:`~._transfer.Retry`)."""

    def __init__(self, retry: Retry) -> None:
        super().__init__(retry.reason)
        self.retry = retry


class RefusedError(Exception):
    """A permanent failure (see :class:`~._transfer.Fail`)."""

    def __init__(self, fail: Fail) -> None:
        super().__init__(fail.reason)
        self.fail = fail


def disk_error(exc: OSError, path: Path) -> RefusedError:
    """A write or sync failure on the partial file: fatal, and the partial goes."""
    name = errno.errorcode.get(exc.errno or 0)
    what = f"{exc.strerror} ({name})" if exc.strerror and name else str(exc)
    return RefusedError(Fail(f"cannot write {path}: {what}", discard=True))


class Interrupt:
    """The sockets of one attempt, so that another thread can cut them (see module rules)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._fired = False

    def attach(self, sock: socket.socket) -> None:
        fd = os.dup(sock.fileno())
        with self._lock:
            self._fds.append(fd)
            if self._fired:
                _shutdown(fd)

    def fire(self) -> None:
        with self._lock:
            self._fired = True
            for fd in self._fds:
                _shutdown(fd)

    def release(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


def _shutdown(fd: int) -> None:
    # shutdown(2) acts on the socket, not the descriptor: the duplicate reaches it. A
    # socket object over the duplicate, detached again so that it does not close it.
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or not connected yet
    finally:
        sock.detach()


class _TrackingBackend(httpcore.NetworkBackend):
    """httpcore's blocking backend, registering each new socket with the thread's attempt."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextlib.contextmanager
    def tracking(self, interrupt: Interrupt) -> Iterator[None]:
        self._local.interrupt = interrupt
        try:
            yield
        finally:
            self._local.interrupt = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        interrupt: Interrupt | None = getattr(self._local, "interrupt", None)
        if interrupt is not None:
            interrupt.attach(stream.get_extra_info("socket"))
        return stream

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - artifact URLs are TCP
        del path, timeout, socket_options
        raise httpcore.UnsupportedProtocol("artifact downloads do not use Unix sockets")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - used by pool retries only
        time.sleep(seconds)


class Session:
    """A blocking connection pool and TLS context, shared by the fetches of one fetcher."""

    def __init__(
        self,
        *,
        ca_bundle: Path | None,
        connect_timeout: float,
        read_timeout: float,
        sources: Sequence[HttpSource],
        max_redirects: int,
        max_bytes: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = _TrackingBackend()
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(ca_bundle),
            max_connections=32,
            max_keepalive_connections=0,
            network_backend=self._backend,
        )
        self._timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": read_timeout,
            "pool": connect_timeout,
        }
        self._sources = tuple(sources)
        self._max_redirects = max_redirects
        self._max_bytes = max_bytes
        self._wall_clock = wall_clock

    def close(self) -> None:
        self._pool.close()

    def attempt(
        self,
        uri: str,
        download: PartialDownload,
        *,
        expected_size: int | None,
        progress: Progress,
        interrupt: Interrupt,
        stop: threading.Event,
    ) -> None:
        """GET ``uri`` (following redirects) into ``download`` until it is complete.

        Raises :class:`RetryLaterError`, :class:`RefusedError` or :class:`StoppedError`.
        Whatever happens, the bytes received are checkpointed before it returns (unless
        they are worthless).
        """
        try:
            with self._backend.tracking(interrupt):
                self._get(uri, download, expected_size, progress, stop)
        except OSError as exc:
            raise disk_error(exc, download.path) from exc
        except RefusedError as exc:
            if not exc.fail.discard:
                _checkpoint(download)
            raise
        except (StoppedError, RetryLaterError) as exc:
            _checkpoint(download)
            if stop.is_set() and not isinstance(exc, StoppedError):
                raise StoppedError from exc
            raise
        else:
            _checkpoint(download)
        finally:
            interrupt.release()

    def _get(
        self,
        uri: str,
        download: PartialDownload,
        expected_size: int | None,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        url = uri
        redirects_left = self._max_redirects
        while True:
            if stop.is_set():
                raise StoppedError
            offset = download.offset
            headers = request_headers(
                url,
                offset=offset,
                validator=download.validator,
                sources=self._sources,
                user_agent=USER_AGENT,
            )
            with self._request(url, headers, download) as response:
                lowered = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
                }
                outcome = interpret(
                    response.status,
                    lowered,
                    url=url,
                    offset=offset,
                    expected_size=expected_size,
                    redirects_left=redirects_left,
                    now=self._wall_clock(),
                )
                if isinstance(outcome, Follow):
                    url = outcome.location
                    redirects_left -= 1
                    continue
                if isinstance(outcome, AlreadyComplete):
                    return
                if isinstance(outcome, Retry):
                    if outcome.from_zero:
                        download.restart()
                    raise RetryLaterError(outcome)
                if isinstance(outcome, Fail):
                    raise RefusedError(outcome)
                total = self._receive(
                    response=response,
                    body=outcome,
                    download=download,
                    expected_size=expected_size,
                    progress=progress,
                    stop=stop,
                )
            if total is None or download.offset >= total:
                return
            # A server may answer a range with less than asked (some cap range sizes):
            # ask for the rest straight away, from the original URL.
            url = uri
            redirects_left = self._max_redirects

    def _receive(
        self,
        *,
        response: httpcore.Response,
        body: Body,
        download: PartialDownload,
        expected_size: int | None,
        progress: Progress,
        stop: threading.Event,
    ) -> int | None:
        """Append the body to ``download``; return the artifact's total size if known."""
        if body.start == 0 and download.offset > 0:
            download.restart()  # a 200 to a Range request: the whole artifact again
        total = body.total if body.total is not None else expected_size
        limit = expected_size if expected_size is not None else self._max_bytes
        download.set_response(body.validator, total)
        for chunk in response.iter_stream():
            if stop.is_set():
                raise StoppedError
            if download.offset + len(chunk) > limit:
                raise RefusedError(_too_large(expected_size, limit))
            download.append(chunk)
            progress(download.offset, total)
        download.flush()
        if body.length is not None and download.offset < body.start + body.length:
            raise RetryLaterError(Retry("the response body ended early"))
        return total

    @contextlib.contextmanager
    def _request(
        self, url: str, headers: list[tuple[str, str]], download: PartialDownload
    ) -> Iterator[httpcore.Response]:
        """The response to GET ``url``; httpcore's exceptions mapped (see module rules)."""
        before = download.offset
        try:
            with self._pool.stream(
                "GET", url, headers=headers, extensions={"timeout": self._timeouts}
            ) as response:
                yield response
        except httpcore.TimeoutException as exc:
            phase = _PHASES.get(type(exc), "waiting")
            raise RetryLaterError(
                Retry(f"timed out {phase} {show_url(url)}{_after(download, before)}")
            ) from exc
        except httpcore.ConnectError as exc:
            verify = _cert_error(exc)
            if verify is not None:
                raise RefusedError(
                    Fail(
                        f"TLS certificate verification failed for {show_url(url)}: {verify}",
                        hint="if the server uses a private CA, set artifacts.ca_bundle in "
                        "agent.toml",
                    )
                ) from exc
            raise RetryLaterError(
                Retry(f"cannot connect to {show_url(url)}: {_text(exc)}")
            ) from exc
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise RetryLaterError(
                Retry(f"connection lost{_after(download, before)}: {_text(exc)}")
            ) from exc
        except (httpcore.UnsupportedProtocol, httpcore.ProtocolError) as exc:
            raise RefusedError(Fail(f"cannot GET {show_url(url)}: {_text(exc)}")) from exc


_PHASES: dict[type[Exception], str] = {
    httpcore.ConnectTimeout: "connecting to",
    httpcore.ReadTimeout: "reading from",
    httpcore.WriteTimeout: "writing to",
    httpcore.PoolTimeout: "waiting for a connection to",
}


def _checkpoint(download: PartialDownload) -> None:
    try:
        download.checkpoint()
    except OSError as exc:
        raise disk_error(exc, download.path) from exc


def _after(download: PartialDownload, before: int) -> str:
    received = download.offset - before
    return f" after {received} bytes" if received else ""


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _cert_error(exc: BaseException) -> str | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _too_large(expected_size: int | None, limit: int) -> Fail:
    if expected_size is not None:
        return Fail(
            f"size mismatch: expected {expected_size} bytes, got more than that", discard=True
        )
    return Fail(
        f"the artifact is larger than the download limit of {limit} bytes "
        "(artifacts.max_download_bytes)",
        discard=True,
    )


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The system trust store, or only the operator's CA bundle when one is configured."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))
