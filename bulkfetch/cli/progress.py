"""What a run shows while it goes: a bar on a terminal, a progress line elsewhere.

Both say the same, made by pure functions over a :class:`Snapshot` (plain numbers read
from the engine), so what a user reads is tested without a run: jobs done, failed and in
flight, bytes, an ETA, and each lane's pace (``create 10/min``), or, when a lane is
paused, until when and why: a 429 (``paused until 10:05:30 (429)``) or a server that
seems down (since when, and how much longer the lane waits it out before failures count
against jobs).

The bar keeps log lines apart from itself. While it is up, bulkfetch's console handler
writes through ``tqdm.write`` (tqdm's ``logging_redirect_tqdm``): the bar is cleared, the
line printed, the bar drawn again below it, so a log line never lands after the bar on
its line. The bar is trimmed to the terminal's width less three columns, so neither a
redraw nor the ``^C`` a terminal echoes after it wraps (a wrapped bar leaves a copy in
the scrollback at each redraw). Its last draw comes
after the run, with the final count: a run ending between two draws still ends at N/N.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from bulkfetch.units import duration_text, size_text

if TYPE_CHECKING:
    from bulkfetch.engine import Run

__all__ = [
    "LaneView",
    "Snapshot",
    "bar_text",
    "fit",
    "lane_text",
    "pace_text",
    "progress_line",
    "show_bar",
    "show_lines",
    "snapshot",
]

log = logging.getLogger("bulkfetch")

#: Seconds between two draws of the bar.
BAR_EVERY = 0.5
#: Columns left free at the right of the bar: room for a ^C echoed by the terminal.
ROOM = 3
#: Columns the bar's own blocks keep, at least, on a narrow terminal.
MIN_BAR = 10


@dataclass(frozen=True, slots=True)
class LaneView:
    """One lane as the progress display shows it."""

    name: str
    interval: float  # seconds between requests at the pace in force
    paused_for: float = 0.0  # seconds until the lane's pause ends (0: not paused)
    down_since: float | None = None  # clock time the API seemed down on this lane
    down_until: float | None = None  # clock time from which failures count against jobs


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run's figures at one instant."""

    jobs: int
    done: int
    failed: int
    in_flight: int
    bytes: int
    fetched: int  # downloaded by this run (``done`` counts jobs already there too)
    elapsed: float  # seconds since the display started
    now: float  # clock time (unix), for "since" and "until"
    lanes: tuple[LaneView, ...] = ()


def pace_text(interval: float) -> str:
    """A lane's pace as people say it: 6.0 → ``10/min``, 0.05 → ``20/s``, 600 → ``6/h``."""
    per_second = 1.0 / interval if interval > 0 else float("inf")
    for unit, seconds in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
        n = per_second * seconds
        if n >= 1 or unit == "h":
            return f"{n:.0f}/{unit}" if n >= 100 else f"{n:.3g}/{unit}"
    raise AssertionError("unreachable")


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def lane_text(lane: LaneView, now: float) -> str:
    """``create 10/min``; or why and until when the lane is paused."""
    if lane.down_since is not None:
        since = _clock(lane.down_since)
        if lane.down_until is not None and now < lane.down_until:
            return (
                f"{lane.name} PAUSED: API down since {since}, waiting until "
                f"{_clock(lane.down_until)} ({duration_text(lane.down_until - now)} more)"
                + (f", next try in {duration_text(lane.paused_for)}" if lane.paused_for else "")
            )
        return (
            f"{lane.name}: API down since {since}, no longer waiting: failures count against jobs"
        )
    if lane.paused_for > 0:
        until = _clock(now + lane.paused_for)
        return f"{lane.name} PAUSED until {until} (429, {duration_text(lane.paused_for)})"
    return f"{lane.name} {pace_text(lane.interval)}"


def _eta(s: Snapshot) -> str:
    left = s.jobs - s.done - s.failed
    if left <= 0 or s.fetched <= 0 or s.elapsed <= 0:
        return ""
    return f", ETA {duration_text(left * s.elapsed / s.fetched)}"


def _paused(lane: LaneView) -> bool:
    return lane.down_since is not None or lane.paused_for > 0


def _lanes(s: Snapshot) -> str:
    # Paused lanes first: on a narrow terminal the end of the line is what gets cut.
    lanes = sorted(s.lanes, key=lambda lane: not _paused(lane))
    return ", ".join(lane_text(lane, s.now) for lane in lanes)


def _figures(s: Snapshot) -> str:
    return f"{s.failed} failed, {s.in_flight} in flight, {size_text(s.bytes)}{_eta(s)}"


def progress_line(s: Snapshot) -> str:
    """The progress line logged when stderr is not a terminal (cron, a log file)."""
    lanes = f"; {_lanes(s)}" if s.lanes else ""
    return f"progress: {s.done}/{s.jobs} done, {_figures(s)}{lanes}"


def bar_text(s: Snapshot) -> str:
    """What follows the bar's blocks: the figures, then the lanes; a paused lane first of
    all (the bar is cut to the terminal's width from the right)."""
    figures = f"{s.done} done, {_figures(s)}"
    if any(_paused(lane) for lane in s.lanes):
        return f"{_lanes(s)} | {figures}"
    return f"{figures} | {_lanes(s)}" if s.lanes else figures


def fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` characters, with an ellipsis when cut."""
    if len(text) <= room:
        return text
    return text[: max(0, room - 1)] + "…" if room > 0 else ""


def snapshot(engine: Run, *, elapsed: float) -> Snapshot:
    """The engine's figures now (read-only)."""
    c = engine.counters
    lanes = []
    for name, limiter in (("create", engine.create_limiter), ("status", engine.status_limiter)):
        since, until = engine.outage(name) or (None, None)
        lanes.append(LaneView(name, limiter.interval, limiter.paused_for(), since, until))
    return Snapshot(
        jobs=c.jobs,
        done=c.done,
        failed=c.failed,
        in_flight=len(engine.poller) + c.creating,
        bytes=c.bytes,
        fetched=c.done - c.skipped_done,
        elapsed=elapsed,
        now=time.time(),
        lanes=tuple(lanes),
    )


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80


async def show_bar(engine: Run, *, stream: TextIO | None = None) -> None:
    """Draw the progress bar on ``stream`` (stderr) until cancelled, then the final count."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    out = stream if stream is not None else sys.stderr
    started = time.monotonic()
    bar: Any = tqdm(
        total=engine.counters.jobs,
        file=out,
        bar_format="{n_fmt}/{total_fmt} |{bar}| {desc}",
        ncols=_width(out) - ROOM,
        mininterval=0,
        leave=True,
    )

    def draw() -> None:
        s = snapshot(engine, elapsed=time.monotonic() - started)
        # Never the last columns: a full line may wrap on a redraw, and so would the ^C a
        # terminal echoes after the bar (a wrapped line stays in the scrollback).
        width = _width(out) - ROOM
        head = len(f"{s.jobs}/{s.jobs} || ")
        bar.ncols = width
        bar.n = s.done + s.failed
        bar.set_description_str(fit(bar_text(s), width - head - MIN_BAR), refresh=False)
        bar.refresh()

    try:
        with logging_redirect_tqdm(loggers=[log], tqdm_class=tqdm):
            try:
                while True:
                    draw()
                    await anyio.sleep(BAR_EVERY)
            finally:
                draw()  # the final count: the run may have ended since the last draw
    finally:
        bar.close()


async def show_lines(engine: Run, *, every: float) -> None:
    """Log a progress line every ``every`` seconds until cancelled."""
    started = time.monotonic()
    while True:
        await anyio.sleep(every)
        log.info("%s", progress_line(snapshot(engine, elapsed=time.monotonic() - started)))
