"""The run on a real terminal: ``bulkfetch run`` in a tmux pane, its raw output checked.

The bar must stay at the bottom with log lines printed above it (never after it on its
line), leave no redraw in the scrollback, and end at N/N.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulkfetch.simulator import TEST_API_KEY, SimulatorThread

from .conftest import make_jobs, write_jsonl

BAR = re.compile(r"\d+/\d+ \|")
LOG = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
JOBS = 40


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed for the terminal test (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    return tmux


def _run_in_tmux(tmp_path: Path, command: list[str], *, timeout: float = 60) -> tuple[str, str]:
    """Run ``command`` in a 120x40 tmux pane; return its raw output and the rendered
    screen with its whole scrollback."""
    tmux = [_tmux(), "-S", str(tmp_path / "tmux.sock")]
    raw = tmp_path / "raw.txt"
    env = ["-e", f"EOS_API_KEY={TEST_API_KEY}", "-e", "NO_PROXY=127.0.0.1,localhost"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "40", *env, "-c", str(tmp_path), "sh"],
        check=True,
    )
    try:
        subprocess.run([*tmux, "pipe-pane", "-o", f"cat > {shlex.quote(str(raw))}"], check=True)
        line = f"{shlex.join(command)}; echo EXIT=$?"
        subprocess.run([*tmux, "send-keys", line, "Enter"], check=True)
        end = time.monotonic() + timeout
        while "EXIT=" not in raw.read_text(errors="replace").replace(line, ""):
            assert time.monotonic() < end, raw.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    return raw.read_text(errors="replace"), screen


def test_bar_stays_at_the_bottom_with_log_lines_above_it(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(JOBS))
    command = [
        sys.executable,
        "-m",
        "bulkfetch.cli",
        "run",
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--api-url",
        sim.api_url,
        "--create-rate",
        "20/s",
        "--status-rate",
        "20/s",
    ]
    raw, screen = _run_in_tmux(tmp_path, command)
    output = raw[raw.index("bulkfetch.cli") :]
    assert "EXIT=0" in output, output[-2000:]

    bars = []
    logs = 0
    for line in output.split("\n"):
        frames = line.split("\r")
        for i, frame in enumerate(frames):
            if LOG.search(frame):
                logs += 1
                # A log line starts a line of its own: at column 0, nothing of the bar
                # left before it on its line (only the bar's clearing blanks), and no bar
                # after it.
                assert LOG.match(frame), repr(line)
                assert all(not f.strip() for f in frames[:i]), repr(line)
                assert not BAR.search(frame), repr(line)
            if BAR.match(frame):
                bars.append(frame)
                assert len(frame) <= 117, f"a bar that wraps leaves copies: {frame!r}"
    assert logs >= JOBS, output[-2000:]  # one "done" line per job, at least
    assert len(bars) > 1, "the bar was redrawn"
    assert bars[-1].startswith(f"{JOBS}/{JOBS} |"), bars[-1]
    assert f"{JOBS} done, 0 failed, 0 in flight" in bars[-1]
    assert "create 19.8/s" in bars[-1] or "create 20/s" in bars[-1], bars[-1]

    # What stays on the screen and in its scrollback: one bar, the final one.
    rendered = [row for row in screen.splitlines() if BAR.match(row)]
    assert rendered == [rendered[-1]], rendered
    assert rendered[-1].startswith(f"{JOBS}/{JOBS} |"), rendered
    assert not any(LOG.search(row) and BAR.search(row) for row in screen.splitlines())
