"""Tests for bulkfetch.limiter.retry_after: each form of Retry-After read, and obeyed in bounds."""

from __future__ import annotations

import email.utils
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch import client
from bulkfetch.limiter.retry_after import (
    MAX_WINDOWS,
    bounded_pause,
    parse_retry_after,
    retry_after_resolution,
)

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT
SLOT, WINDOW = 6.0, 60.0  # 10/min


@pytest.mark.parametrize(
    ("header", "asked"),
    [
        (None, None),  # absent: the limiter decides
        ("0.35", 0.35),  # exact
        ("1", 1.0),  # whole seconds, rounded up
        ("60", 60.0),  # the whole window
        (email.utils.formatdate(NOW + 7, usegmt=True), 7.0),  # an HTTP date
        ("0", 0.0),
        ("-5", 0.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # skewed clocks
        ("10800", 10800.0),  # three hours
    ],
)
def test_every_form_is_read(header: str | None, asked: float | None) -> None:
    seconds = parse_retry_after(header, now=NOW)
    assert seconds == (pytest.approx(asked) if asked is not None else None)


@pytest.mark.parametrize(
    ("asked", "pause"),
    [
        (None, None),
        (0.35, SLOT),  # shorter than a slot: the lane's next slot
        (0.0, SLOT),
        (-5.0, SLOT),
        (12.0, 12.0),  # honoured as asked
        (60.0, 60.0),  # a whole window: honoured
        (10800.0, MAX_WINDOWS * WINDOW),  # hours: capped, the lane tries again
        (math.inf, None),
        (math.nan, None),
    ],
)
def test_the_pause_is_what_was_asked_within_bounds(
    asked: float | None, pause: float | None
) -> None:
    assert bounded_pause(asked, interval=SLOT, window=WINDOW) == pause


@given(
    asked=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    interval=st.floats(1e-3, 3600.0),
    window=st.floats(1e-3, 86400.0),
)
def test_the_pause_is_always_bounded(asked: float | None, interval: float, window: float) -> None:
    pause = bounded_pause(asked, interval=interval, window=window)
    if asked is None or not math.isfinite(asked):
        assert pause is None
        return
    assert pause is not None
    assert interval <= pause <= MAX_WINDOWS * max(window, interval)
    if interval <= asked <= MAX_WINDOWS * window:
        assert pause == asked


def test_the_client_reads_it_with_the_same_function() -> None:
    assert client.parse_retry_after is parse_retry_after


@pytest.mark.parametrize(
    ("value", "resolution"),
    [
        (None, 0.0),
        ("0.35", 0.0),  # exact
        ("1", 1.0),  # whole seconds, perhaps rounded up
        ("60", 1.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0),  # a date has whole seconds
        ("soon", 1.0),  # unreadable: the wait itself is None, so this is never used
    ],
)
def test_how_far_off_a_retry_after_may_be(value: str | None, resolution: float) -> None:
    assert retry_after_resolution(value) == resolution
