"""Rules of an HTTP artifact transfer, free of I/O: what to send, and what an answer means.

:mod:`keystone_edge.artifacts.http` does the sockets and the files; every decision it takes
is a function here, fed with values (a status, headers, offsets) and returning a value.
Rules:

- Only ``GET``, only ``identity`` content coding: the sha256 is over the artifact's bytes,
  and a transparently gzipped body would not match it.
- Resume: a request for the rest of a partial download carries ``Range: bytes=N-`` and,
  when a validator was seen before, ``If-Range`` with it (a strong ``ETag``, else
  ``Last-Modified``; RFC 9110 13.1.5 forbids weak tags there). ``206`` with a
  ``Content-Range`` starting at N appends; ``200`` is the whole artifact again, and what
  was kept is dropped. A ``206`` for another range is a retry from zero. ``416`` whose
  ``Content-Range: bytes */T`` says T == N means the partial file already holds every byte.
  Resuming without a validator is still safe: the content is checked against its sha256
  at the end, whatever the server did.
- Sizes: a declared length (``Content-Length`` of a ``200``, the total of a
  ``Content-Range``) that differs from the recipe's ``size`` fails at once, and so does a
  body that grows past it: the content cannot match, and the partial is discarded.
- Transient (retried with backoff): 408, 425, 429 and 5xx except 501 and 505, connection
  failures, resets, timeouts, and bodies that end early. ``Retry-After`` (seconds or an
  HTTP date) replaces the computed backoff, up to a cap. Everything else fails at once:
  401/403 (credentials), 404/410 (not there), other 4xx, 501, 505, TLS certificate
  errors.
- Backoff: the n-th consecutive retry waits between half and all of
  ``min(maximum, initial * 2**(n-1))`` (equal jitter: spread out, never close to zero).
- Redirects: 301, 302, 303, 307, 308 with a ``Location``, resolved against the current URL,
  at most ``max_redirects`` in a row; only to ``http``/``https``; never from ``https`` to
  ``http`` (a downgrade would drop the TLS protection of the credentials and of the
  transfer).
- Credentials: the configured source whose prefix matches the URL (same scheme, host and
  port, and a path prefix ending at a segment boundary; the longest wins) adds its
  headers and bearer token. They are matched again at every redirect hop, so a redirect
  to another host never carries them there.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from keystone_edge.artifacts.verify import public_uri

__all__ = [
    "AlreadyComplete",
    "Body",
    "Fail",
    "Follow",
    "HttpSource",
    "Outcome",
    "Retry",
    "interpret",
    "parse_content_range",
    "parse_retry_after",
    "request_headers",
    "retry_delay",
    "show_url",
    "source_for",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_4XX = frozenset({408, 425, 429})
_PERMANENT_5XX = frozenset({501, 505})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 5.1 (field names are tokens) and 5.5 (values; ASCII only here).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True, slots=True, repr=False)
class HttpSource:
    """Extra request headers for every URL under ``prefix`` (e.g. a bearer token).

    ``repr`` shows the prefix and header names only: the values are credentials.
    """

    prefix: str
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.prefix)
        if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"source prefix: expected an http:// or https:// URL with a host, "
                f"got {self.prefix!r}"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"source prefix: expected scheme://host[:port][/path], got {self.prefix!r} "
                "(no query, fragment or user name)"
            )
        values = [*self.headers.values()]
        if self.bearer_token is not None:
            values.append(self.bearer_token)
        for name in self.headers:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"source header name: expected an HTTP token, got {name!r}")
        if any(not _FIELD_VALUE.fullmatch(v) for v in values):
            # Named without the value: it is a credential.
            raise ValueError(
                f"source {self.prefix}: expected header values and tokens of printable "
                "ASCII without line breaks"
            )

    def __repr__(self) -> str:
        names = sorted(self.headers) + (["Authorization"] if self.bearer_token else [])
        return f"HttpSource({self.prefix!r}, headers={names})"

    def header_items(self) -> list[tuple[str, str]]:
        items = list(self.headers.items())
        if self.bearer_token is not None:
            items.append(("Authorization", f"Bearer {self.bearer_token}"))
        return items


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number: matches nothing
        port = -1
    return scheme, (parts.hostname or "").lower(), port, parts.path or "/"


def _under(path: str, prefix_path: str) -> bool:
    if prefix_path.endswith("/"):
        return path.startswith(prefix_path)
    return path == prefix_path or path.startswith(prefix_path + "/")


def source_for(url: str, sources: Sequence[HttpSource]) -> HttpSource | None:
    """The source whose prefix covers ``url`` (longest path prefix wins), if any."""
    scheme, host, port, path = _origin(url)
    best: HttpSource | None = None
    best_length = -1
    for source in sources:
        s_scheme, s_host, s_port, s_path = _origin(source.prefix)
        if (s_scheme, s_host, s_port) != (scheme, host, port) or not _under(path, s_path):
            continue
        if len(s_path) > best_length:
            best, best_length = source, len(s_path)
    return best


def show_url(url: str) -> str:
    """``url`` as logs and errors show it (:func:`~.verify.public_uri`)."""
    return public_uri(url)


def request_headers(
    url: str,
    *,
    offset: int,
    validator: str | None,
    sources: Sequence[HttpSource],
    user_agent: str,
) -> list[tuple[str, str]]:
    """Headers of a GET for ``url`` that wants the bytes from ``offset`` on."""
    headers = [
        ("User-Agent", user_agent),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
    ]
    if offset > 0:
        headers.append(("Range", f"bytes={offset}-"))
        if validator is not None:
            headers.append(("If-Range", validator))
    source = source_for(url, sources)
    if source is not None:
        headers.extend(source.header_items())
    return headers


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Body:
    """Read the body: it holds the artifact's bytes from ``start`` on."""

    start: int
    length: int | None  # bytes in this body, when declared
    total: int | None  # the artifact's full size, when known
    validator: str | None  # for If-Range on a later resume


@dataclass(frozen=True, slots=True)
class Follow:
    """A redirect to ``location`` (absolute)."""

    location: str


@dataclass(frozen=True, slots=True)
class AlreadyComplete:
    """416 for a range that starts right at the end: the partial file is the artifact."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again after a delay (``retry_after`` if the server set one)."""

    reason: str
    retry_after: float | None = None
    from_zero: bool = False  # what is kept cannot be resumed: start over


@dataclass(frozen=True, slots=True)
class Fail:
    """A permanent failure. ``discard``: the partial download is worthless, delete it."""

    reason: str
    discard: bool = False
    hint: str | None = None


Outcome = Body | Follow | AlreadyComplete | Retry | Fail


def parse_content_range(value: str) -> tuple[int | None, int | None, int | None] | None:
    """``bytes FIRST-LAST/TOTAL`` -> (first, last, total); ``*`` parts are None.

    None when the value is not a byte range at all.
    """
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, slash, total_text = spec.strip().partition("/")
    if not slash:
        return None
    total: int | None = None
    if total_text != "*":
        if not total_text.isdigit():
            return None
        total = int(total_text)
    if span == "*":
        return None, None, total
    first_text, dash, last_text = span.partition("-")
    if not dash or not first_text.isdigit() or not last_text.isdigit():
        return None
    first, last = int(first_text), int(last_text)
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait per a ``Retry-After`` value (delta seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    retry_after: float | None,
    retry_after_max: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before the next attempt, after ``failures`` consecutive failures."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), retry_after_max)
    ceiling = min(maximum, initial * 2.0 ** max(failures - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _validator(headers: Mapping[str, str]) -> str | None:
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified") or None


def _length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def _size_mismatch(expected: int, declared: int, what: str) -> Fail:
    return Fail(
        f"size mismatch: expected {expected} bytes, got {declared} bytes ({what})",
        discard=True,
    )


def interpret(
    status: int,
    headers: Mapping[str, str],
    *,
    url: str,
    offset: int,
    expected_size: int | None,
    redirects_left: int,
    now: float,
) -> Outcome:
    """What a response means for a GET of ``url`` that asked for bytes ``offset``-.

    ``headers`` has lower-case names. ``now`` (wall-clock seconds) dates ``Retry-After``.
    """
    if status == 200:
        length = _length(headers)
        if expected_size is not None and length is not None and length != expected_size:
            return _size_mismatch(expected_size, length, "Content-Length")
        return Body(0, length, length, _validator(headers))
    if status == 206:
        return _partial_content(headers, offset=offset, expected_size=expected_size)
    if status == 416:
        parsed = parse_content_range(headers.get("content-range", ""))
        total = parsed[2] if parsed is not None else None
        if total is not None and expected_size is not None and total != expected_size:
            return _size_mismatch(expected_size, total, "Content-Range")
        if offset > 0 and total == offset:
            return AlreadyComplete()
        return Retry(f"HTTP 416 for the range from byte {offset}", from_zero=True)
    if status in REDIRECT_STATUSES:
        return _redirect(status, headers, url=url, redirects_left=redirects_left)
    if status in _TRANSIENT_4XX or (500 <= status <= 599 and status not in _PERMANENT_5XX):
        return Retry(
            f"HTTP {status}",
            retry_after=parse_retry_after(headers.get("retry-after"), now=now),
        )
    if status in (401, 403):
        return Fail(
            f"HTTP {status}: the server refused the credentials sent (or their absence)",
            hint="configure a bearer token or headers for this URL in [[artifacts.sources]] "
            "of agent.toml",
        )
    if status in (404, 410):
        return Fail(f"HTTP {status}: not found on the server")
    return Fail(f"unexpected HTTP status {status}")


def _partial_content(
    headers: Mapping[str, str], *, offset: int, expected_size: int | None
) -> Outcome:
    raw = headers.get("content-range")
    parsed = parse_content_range(raw) if raw is not None else None
    first, last, total = parsed if parsed is not None else (None, None, None)
    if first is None or last is None:
        return Retry(f"HTTP 206 with an unusable Content-Range {raw!r}", from_zero=True)
    if total is not None and expected_size is not None and total != expected_size:
        return _size_mismatch(expected_size, total, "Content-Range")
    if first != offset:
        return Retry(
            f"HTTP 206 for bytes {first}-{last}, expected bytes from {offset}", from_zero=True
        )
    length = last - first + 1
    declared = _length(headers)
    if declared is not None and declared != length:
        return Retry(
            f"HTTP 206 with Content-Length {declared} for a {length}-byte range", from_zero=True
        )
    return Body(first, length, total, _validator(headers))


def _redirect(status: int, headers: Mapping[str, str], *, url: str, redirects_left: int) -> Outcome:
    location = headers.get("location", "").strip()
    if not location:
        return Fail(f"HTTP {status} redirect without a Location header")
    target = urljoin(url, location)
    if redirects_left <= 0:
        return Fail(f"too many redirects (the last one, HTTP {status}, to {show_url(target)})")
    old_scheme = urlsplit(url).scheme.lower()
    new_scheme = urlsplit(target).scheme.lower()
    if new_scheme not in _DEFAULT_PORTS:
        return Fail(f"refusing a redirect to {show_url(target)}: expected an http(s) URL")
    if old_scheme == "https" and new_scheme == "http":
        return Fail(
            f"refusing a redirect from {show_url(url)} to {show_url(target)}: "
            "expected https, got a downgrade to plain http"
        )
    return Follow(target)
