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
from tests.conftest import make_jobs, write_jsonl

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


def _run_in_tmux(
    tmp_path: Path, command: list[str], *, ctrl_c_at: str = "", timeout: float = 60
) -> tuple[str, str]:
    """Run ``command`` in a 120x40 tmux pane, typing Ctrl-C once its output matches the
    regular expression ``ctrl_c_at`` (if given); return its raw output and the rendered
    screen with its whole scrollback."""
    tmux = [_tmux(), "-S", str(tmp_path / "tmux.sock")]
    raw = tmp_path / "raw.txt"
    env = ["-e", f"EOS_API_KEY={TEST_API_KEY}", "-e", "NO_PROXY=127.0.0.1,localhost"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "40", *env, "-c", str(tmp_path), "sh"],
        check=True,
    )
    raw.touch()  # (pipe-pane starts its cat in the background: the file may come late)
    try:
        pipe = f"cat >> {shlex.quote(str(raw))}"
        subprocess.run([*tmux, "pipe-pane", "-o", pipe], check=True)
        line = f"{shlex.join(command)}; echo EXIT=$?"
        subprocess.run([*tmux, "send-keys", line, "Enter"], check=True)
        end = time.monotonic() + timeout
        while "EXIT=" not in (text := raw.read_text(errors="replace").replace(line, "")):
            assert time.monotonic() < end, text[-2000:]
            if ctrl_c_at and re.search(ctrl_c_at, text):
                subprocess.run([*tmux, "send-keys", "C-c"], check=True)
                ctrl_c_at = ""
            time.sleep(0.1)
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    return raw.read_text(errors="replace"), screen


def _command(sim: SimulatorThread, tmp_path: Path, rate: str) -> list[str]:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(JOBS))
    return [
        *(sys.executable, "-m", "bulkfetch.cli", "run", str(manifest)),
        *("--out", str(tmp_path / "out"), "--api-url", sim.api_url),
        *("--create-rate", rate, "--status-rate", rate),
    ]


def test_bar_stays_at_the_bottom_with_log_lines_above_it(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    raw, screen = _run_in_tmux(tmp_path, _command(sim, tmp_path, "20/s"))
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
    # The lane's pace: the rate less the limiter's margin and the jitter it measured.
    pace = re.search(r"create ([0-9.]+)/s", bars[-1])
    assert pace is not None, bars[-1]
    assert 18.0 <= float(pace.group(1)) <= 20.0, bars[-1]

    # What stays on the screen and in its scrollback: one bar, the final one.
    rendered = [row for row in screen.splitlines() if BAR.match(row)]
    assert rendered == [rendered[-1]], rendered
    assert rendered[-1].startswith(f"{JOBS}/{JOBS} |"), rendered
    assert not any(LOG.search(row) and BAR.search(row) for row in screen.splitlines())


def test_ctrl_c_on_a_terminal_says_what_was_saved_and_how_to_carry_on(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    command = _command(sim, tmp_path, "5/s")
    raw, screen = _run_in_tmux(tmp_path, command, ctrl_c_at=r"\n\r?([3-9]|[12]\d)/40 \|")
    assert "EXIT=130" in raw, raw[-2000:]
    rows = screen.splitlines()
    bars = [row for row in rows if BAR.match(row)]
    assert len(bars) == 1 and not bars[0].startswith(f"{JOBS}/"), bars  # the last one only
    text = "\n".join(rows)
    assert re.search(r"^summary: 40 jobs: \d+ done \(\d+ downloaded, 0 already there\)", text, re.M)
    assert "exit 130: interrupted by SIGINT (Ctrl-C): everything is saved" in text
    assert re.search(r"^saved: \d+ files downloaded by this run are in ", text, re.M)
    # The command to carry on, whole (tmux wraps it at 120 columns).
    joined = "".join(row.ljust(120) if len(row) == 120 else row + "\n" for row in rows)
    (said,) = re.findall(r"^to carry on: (.*)$", joined, re.M)
    assert shlex.split(said)[1:] == command[3:]  # 'bulkfetch' + the arguments as typed
