"""What a 429's ``Retry-After`` asks for, and how much of it a lane obeys: pure functions.

Nothing is known of how EOS fills the header (``eos-api.md``), so every form a server may
send is read: delta-seconds, exact (``0.35``) or rounded up to whole seconds (``1``), a whole
window whatever the wait (``60``), an HTTP date, or nothing at all. ``parse_retry_after``
turns the header into seconds; ``bounded_pause`` keeps what it asks within sane bounds:

* at least one slot of the lane (``interval``): ``0``, a negative number or a date in the
  past (clock skew) mean "now", but a lane just refused goes no faster than its pace;
* at most ``max_windows`` windows of the configured rate: a server that asks for hours
  (a daily quota, a misconfigured proxy, a date off by a time zone) gets one request
  every two windows instead of a lane asleep for the rest of the run. Each of those
  requests costs one 429 at worst, and finds out as soon as the server takes requests
  again.

No header at all is ``None``: the limiter then decides the pause from what it has seen.
"""

from __future__ import annotations

import email.utils
import math
import time

__all__ = ["MAX_WINDOWS", "bounded_pause", "parse_retry_after", "retry_after_resolution"]

#: The longest pause a Retry-After obtains, in windows of the configured rate.
MAX_WINDOWS = 2.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    ``None`` when there is no header or it is unreadable (``soon``, ``NaN``, ``inf``); a
    negative number or a date in the past is 0 (go now). ``now`` is the unix time a date is
    counted from (the real clock if None).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def bounded_pause(
    retry_after: float | None, *, interval: float, window: float, max_windows: float = MAX_WINDOWS
) -> float | None:
    """The pause a lane takes for ``retry_after`` seconds asked, within sane bounds.

    ``interval`` is the lane's pace (seconds per request) and ``window`` the period of its
    configured rate (60 s for 10/min): the result lies in
    ``[interval, max_windows * max(window, interval)]``. ``None`` (no usable header) stays
    ``None``.
    """
    if retry_after is None or not math.isfinite(retry_after):
        return None
    ceiling = max_windows * max(window, interval)
    return min(max(retry_after, interval), ceiling)


def retry_after_resolution(value: str | None) -> float:
    """Seconds by which a ``Retry-After`` may be off what the server meant: 0 for a delta
    with a fraction (it said the wait exactly), 1 for whole seconds (perhaps rounded up) and
    for an HTTP date (whole seconds), 0 with no header."""
    if value is None:
        return 0.0
    try:
        seconds = float(value.strip())
    except ValueError:
        return 1.0  # an HTTP date, or unreadable (then unused)
    return 0.0 if math.isfinite(seconds) and seconds != math.floor(seconds) else 1.0
