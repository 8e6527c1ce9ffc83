"""Durations and sizes: strict parsing, the text they remember, and round trips."""

from __future__ import annotations

import math
import pickle
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.units import Duration, Size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1m500ms", 60.5),
        ("250us", 0.00025),
        ("1d2h3m4s5ms6us", 93784.005006),
    ],
)
def test_durations_parse_to_seconds_and_keep_their_text(text: str, seconds: float) -> None:
    duration = parse_duration(text)
    assert math.isclose(duration, seconds, rel_tol=1e-12, abs_tol=1e-12)
    assert duration.text == text
    assert str(duration) == text
    assert repr(duration) == f"Duration({text!r})"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10", "invalid duration '10': expected terms like '500ms', '10s' or '1h30m'"),
        ("10 s", "invalid duration '10 s'"),
        ("-1s", "invalid duration '-1s'"),
        ("1x", "invalid duration '1x'"),
        ("", "invalid duration '': expected a value such as '10s'"),
        ("30m1h", "invalid duration '30m1h': units must appear once each, largest first"),
        ("1s1s", "units must appear once each"),
        ("\u0663s", "invalid duration"),  # an Arabic-Indic digit: ASCII digits only
        ("1" * 400 + "s", "too large"),
    ],
)
def test_bad_durations_say_what_was_expected(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize("value", [10, 1.5, True, None, ["10s"]])
def test_durations_must_be_strings(value: Any) -> None:
    with pytest.raises(TypeError, match="expected a duration string such as '500ms'"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("128Mi", 128 * 2**20),
        ("1G", 10**9),
        ("1GB", 10**9),
        ("1.5K", 1500),
        ("2Ti", 2 * 2**40),
        ("10B", 10),
    ],
)
def test_sizes_parse_to_bytes(value: Any, nbytes: int) -> None:
    size = parse_size(value)
    assert size == nbytes
    assert size.text == str(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("128 Mi", "invalid size '128 Mi': expected a number with an optional unit"),
        ("128mi", "invalid size '128mi'"),
        ("1.5B", "invalid size '1.5B': not a whole number of bytes"),
        ("1.0000000000000000000001K", "not a whole number of bytes"),
        ("1" * 400 + "Ki", "too large"),
        (-1, "invalid size -1: must not be negative"),
        (2**64, "too large"),
    ],
)
def test_bad_sizes_say_what_was_expected(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


@pytest.mark.parametrize("value", [True, 1.5, None])
def test_sizes_must_be_integers_or_strings(value: Any) -> None:
    with pytest.raises(TypeError, match="expected a size such as '128Mi'"):
        parse_size(value)


def test_parsed_values_pass_through_and_pickle() -> None:
    duration = parse_duration("1h30m")
    size = parse_size("128Mi")
    assert parse_duration(duration) is duration
    assert parse_size(size) is size
    assert pickle.loads(pickle.dumps(duration)).text == "1h30m"
    assert pickle.loads(pickle.dumps(size)).text == "128Mi"


@given(st.integers(min_value=0, max_value=10**12))
def test_a_duration_built_from_milliseconds_reads_back(ms: int) -> None:
    duration = Duration(ms / 1000)
    assert math.isclose(parse_duration(duration.text), ms / 1000, rel_tol=1e-9, abs_tol=1e-9)


@given(st.integers(min_value=0, max_value=2**62))
def test_a_size_built_from_bytes_reads_back(nbytes: int) -> None:
    assert parse_size(Size(nbytes).text) == nbytes
