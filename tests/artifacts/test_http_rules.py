"""The HTTP transfer rules (``_transfer``), without a network; and agent.toml -> HttpOptions."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.artifacts._transfer import (
    AlreadyComplete,
    Body,
    Fail,
    Follow,
    HttpSource,
    Retry,
    interpret,
    parse_content_range,
    parse_retry_after,
    request_headers,
    retry_delay,
    show_url,
    source_for,
)
from keystone_edge.artifacts.http import http_options
from keystone_edge.config import ArtifactSource, ArtifactsSection
from keystone_edge.errors import AgentConfigError

URL = "https://h.example/a.bin"
NOW = 1_700_000_000.0


def answer(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    offset: int = 0,
    expected_size: int | None = None,
    redirects_left: int = 5,
    url: str = URL,
) -> object:
    return interpret(
        status,
        headers or {},
        url=url,
        offset=offset,
        expected_size=expected_size,
        redirects_left=redirects_left,
        now=NOW,
    )


# -- responses -------------------------------------------------------------------------------


def test_200_is_the_whole_artifact_with_its_validator() -> None:
    assert answer(200, {"content-length": "10", "etag": '"x"'}) == Body(0, 10, 10, '"x"')
    assert answer(200, {}) == Body(0, None, None, None)


def test_a_weak_etag_is_no_validator_but_last_modified_is() -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert answer(200, {"etag": 'W/"x"', "last-modified": date}) == Body(0, None, None, date)


def test_200_with_a_content_length_contradicting_the_size_fails_and_discards() -> None:
    assert answer(200, {"content-length": "10"}, expected_size=11) == Fail(
        "size mismatch: expected 11 bytes, got 10 bytes (Content-Length)", discard=True
    )


def test_206_for_the_asked_range_appends() -> None:
    headers = {"content-range": "bytes 100-199/200", "content-length": "100", "etag": '"e"'}
    assert answer(206, headers, offset=100) == Body(100, 100, 200, '"e"')


def test_206_for_another_range_starts_over() -> None:
    outcome = answer(206, {"content-range": "bytes 0-199/200"}, offset=100)
    assert outcome == Retry("HTTP 206 for bytes 0-199, expected bytes from 100", from_zero=True)


def test_206_with_a_total_contradicting_the_size_fails() -> None:
    outcome = answer(206, {"content-range": "bytes 100-199/200"}, offset=100, expected_size=300)
    assert outcome == Fail(
        "size mismatch: expected 300 bytes, got 200 bytes (Content-Range)", discard=True
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-range": "bytes */200"}, {"content-range": "items 1-2/3"}],
)
def test_206_without_a_usable_range_starts_over(headers: dict[str, str]) -> None:
    outcome = answer(206, headers, offset=100)
    assert isinstance(outcome, Retry)
    assert outcome.from_zero


def test_206_whose_length_disagrees_with_its_range_starts_over() -> None:
    headers = {"content-range": "bytes 100-199/200", "content-length": "5"}
    outcome = answer(206, headers, offset=100)
    assert isinstance(outcome, Retry)
    assert outcome.from_zero


def test_416_at_the_end_means_complete_otherwise_start_over() -> None:
    assert answer(416, {"content-range": "bytes */200"}, offset=200) == AlreadyComplete()
    outcome = answer(416, {"content-range": "bytes */150"}, offset=200)
    assert isinstance(outcome, Retry)
    assert outcome.from_zero
    assert answer(416, {"content-range": "bytes */150"}, offset=200, expected_size=200) == Fail(
        "size mismatch: expected 200 bytes, got 150 bytes (Content-Range)", discard=True
    )


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 507, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    assert answer(status) == Retry(f"HTTP {status}")


def test_retry_after_seconds_and_dates() -> None:
    assert answer(503, {"retry-after": "12"}) == Retry("HTTP 503", retry_after=12.0)
    later = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert answer(429, {"retry-after": later}) == Retry("HTTP 429", retry_after=30.0)
    assert answer(503, {"retry-after": "soon"}) == Retry("HTTP 503")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "HTTP 404: not found on the server"),
        (410, "HTTP 410: not found on the server"),
        (400, "unexpected HTTP status 400"),
        (501, "unexpected HTTP status 501"),
        (505, "unexpected HTTP status 505"),
        (204, "unexpected HTTP status 204"),
    ],
)
def test_permanent_failures(status: int, reason: str) -> None:
    outcome = answer(status)
    assert isinstance(outcome, Fail)
    assert outcome.reason == reason
    assert not outcome.discard


def test_auth_failures_carry_a_hint() -> None:
    outcome = answer(403)
    assert isinstance(outcome, Fail)
    assert outcome.hint is not None
    assert "[[artifacts.sources]]" in outcome.hint


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_resolve_relative_locations(status: int) -> None:
    assert answer(status, {"location": "../b/c.bin"}) == Follow("https://h.example/b/c.bin")


def test_redirect_refusals() -> None:
    assert answer(302, {"location": "http://h.example/a.bin"}) == Fail(
        "refusing a redirect from https://h.example/a.bin to http://h.example/a.bin: "
        "expected https, got a downgrade to plain http"
    )
    assert answer(302, {"location": "ftp://h.example/a"}) == Fail(
        "refusing a redirect to ftp://h.example/a: expected an http(s) URL"
    )
    assert answer(302, {}) == Fail("HTTP 302 redirect without a Location header")
    assert answer(302, {"location": "/x"}, redirects_left=0) == Fail(
        "too many redirects (the last one, HTTP 302, to https://h.example/x)"
    )


def test_an_http_to_https_redirect_is_an_upgrade() -> None:
    outcome = answer(301, {"location": "https://h.example/a"}, url="http://h.example/a")
    assert outcome == Follow("https://h.example/a")


# -- ranges and retry-after ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-99/100", (0, 99, 100)),
        ("bytes 5-9/*", (5, 9, None)),
        ("bytes */100", (None, None, 100)),
        ("BYTES 0-0/1", (0, 0, 1)),
        ("bytes 10-5/100", None),
        ("bytes 0-100/100", None),
        ("bytes 0-99", None),
        ("bytes a-b/c", None),
        ("", None),
    ],
)
def test_content_range(value: str, parsed: tuple[int | None, ...] | None) -> None:
    assert parse_content_range(value) == parsed


@given(st.integers(0, 2**62), st.integers(0, 2**20), st.integers(1, 2**62))
def test_content_range_round_trips(first: int, length: int, extra: int) -> None:
    last = first + length
    total = last + extra
    assert parse_content_range(f"bytes {first}-{last}/{total}") == (first, last, total)


def test_retry_after_in_the_past_is_zero() -> None:
    earlier = format_datetime(datetime.fromtimestamp(NOW - 60, UTC), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0
    assert parse_retry_after(None, now=NOW) is None


@given(st.integers(1, 40), st.floats(0.01, 10), st.floats(1, 600), st.integers(0, 2**32))
def test_backoff_grows_with_equal_jitter_and_is_capped(
    failures: int, initial: float, maximum: float, seed: int
) -> None:
    delay = retry_delay(
        failures,
        initial=initial,
        maximum=maximum,
        retry_after=None,
        retry_after_max=300,
        rng=random.Random(seed),
    )
    ceiling = min(maximum, initial * 2.0 ** (failures - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_retry_after_wins_over_backoff_up_to_its_cap() -> None:
    rng = random.Random(1)
    kwargs = {"initial": 1.0, "maximum": 60.0, "retry_after_max": 300.0, "rng": rng}
    assert retry_delay(1, retry_after=120.0, **kwargs) == 120.0  # type: ignore[arg-type]
    assert retry_delay(1, retry_after=9999.0, **kwargs) == 300.0  # type: ignore[arg-type]


# -- sources and headers ---------------------------------------------------------------------


def test_a_source_matches_on_origin_and_path_segments() -> None:
    repo = HttpSource("https://repo.example/artifacts", bearer_token="t")
    root = HttpSource("https://repo.example", bearer_token="r")
    sources = [root, repo]
    assert source_for("https://repo.example/artifacts/a.bin", sources) is repo
    assert source_for("https://REPO.example:443/artifacts", sources) is repo
    assert source_for("https://repo.example/artifacts-old/a.bin", sources) is root
    assert source_for("https://repo.example/other", sources) is root
    assert source_for("http://repo.example/artifacts/a.bin", sources) is None
    assert source_for("https://repo.example:8443/artifacts/a.bin", sources) is None
    assert source_for("https://repo.example.evil/artifacts/a.bin", sources) is None
    assert source_for("https://user@repo.example/artifacts/a", sources) is repo


def test_request_headers_ask_for_the_rest_with_credentials_for_the_source() -> None:
    source = HttpSource("https://h.example/", {"X-Tenant": "acme"}, "tok")
    headers = request_headers(URL, offset=100, validator='"e"', sources=[source], user_agent="ks/1")
    assert headers == [
        ("User-Agent", "ks/1"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
        ("Range", "bytes=100-"),
        ("If-Range", '"e"'),
        ("X-Tenant", "acme"),
        ("Authorization", "Bearer tok"),
    ]
    plain = request_headers(
        "https://other.example/a", offset=0, validator='"e"', sources=[source], user_agent="ks/1"
    )
    assert [name for name, _ in plain] == ["User-Agent", "Accept", "Accept-Encoding"]


def test_a_source_repr_hides_its_secrets() -> None:
    source = HttpSource("https://h.example/", {"X-Key": "secret-1"}, "secret-2")
    assert repr(source) == "HttpSource('https://h.example/', headers=['X-Key', 'Authorization'])"
    config = ArtifactSource(prefix="https://h.example/", headers={"X-Key": "s1"}, bearer_token="s2")
    assert "s1" not in repr(config)
    assert "s2" not in repr(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "ftp://h/"}, "expected an http:// or https:// URL with a host"),
        ({"prefix": "https://h/?q=1"}, "no query, fragment or user name"),
        ({"prefix": "https://h/", "headers": {"Bad Name": "v"}}, "expected an HTTP token"),
        ({"prefix": "https://h/", "bearer_token": "a\r\nX-Evil: 1"}, "without line breaks"),
    ],
)
def test_bad_sources_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        HttpSource(**kwargs)  # type: ignore[arg-type]
    assert "X-Evil" not in str(caught.value)


def test_show_url_drops_credentials_and_query() -> None:
    assert (
        show_url("https://u:p@h.example:8443/a/b.bin?sig=1#f") == "https://h.example:8443/a/b.bin"
    )
    assert show_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


# -- agent.toml ------------------------------------------------------------------------------


def test_http_options_from_the_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    section = ArtifactsSection(
        retries=2,
        sources=[
            ArtifactSource(prefix="https://a.example/", bearer_token_file=str(token)),
            ArtifactSource(prefix="https://b.example/", headers={"X-K": "v"}),
        ],
    )
    options = http_options(section)
    assert options.retries == 2
    assert options.read_timeout == 30.0
    assert options.max_bytes == 8 * 2**30
    assert [s.bearer_token for s in options.sources] == ["from-file", None]
    assert dict(options.sources[1].headers) == {"X-K": "v"}


def test_http_options_name_the_bad_key(tmp_path: Path) -> None:
    both = ArtifactSource(prefix="https://a/", bearer_token="x", bearer_token_file="/nope")
    with pytest.raises(AgentConfigError, match=r"^artifacts.sources\[0\]: expected bearer_token"):
        http_options(ArtifactsSection(sources=[both]))
    missing = ArtifactSource(prefix="https://a/", bearer_token_file=str(tmp_path / "nope"))
    with pytest.raises(AgentConfigError, match=r"sources\[0\].bearer_token_file: cannot read"):
        http_options(ArtifactsSection(sources=[missing]))
    with pytest.raises(AgentConfigError, match=r"sources\[0\]: source prefix: expected an http"):
        http_options(ArtifactsSection(sources=[ArtifactSource(prefix="file:///x")]))
    with pytest.raises(AgentConfigError, match="artifacts.ca_bundle: expected a PEM file"):
        http_options(ArtifactsSection(ca_bundle=str(tmp_path / "missing.pem")))
