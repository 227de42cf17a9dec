"""Child processes measured one by one: wall time, CPU time and peak RSS of exactly that child.

``os.wait4`` returns the resource usage of the one child it reaps, so a measurement is never
mixed with another child's (``RUSAGE_CHILDREN`` is the maximum over all of them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bulkfetch.simulator import TEST_API_KEY

_stderr: dict[int, IO[bytes]] = {}

__all__ = [
    "ChildUsage",
    "SimProcess",
    "bulkfetch_cmd",
    "child_env",
    "cpu_seconds",
    "free_port",
    "sim_process",
    "spawn",
    "wait",
]


@dataclass(frozen=True, slots=True)
class ChildUsage:
    returncode: int
    wall: float
    cpu: float  # user + system seconds
    user: float
    system: float
    max_rss_mb: float  # peak resident set size, MiB


def bulkfetch_cmd() -> list[str]:
    """The ``bulkfetch`` console script of this environment."""
    found = shutil.which("bulkfetch", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "bulkfetch"]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["EOS_API_KEY"] = TEST_API_KEY
    env.pop("EOS_API_URL", None)
    env.update(extra or {})
    return env


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, stdout: int | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``cmd``; returns the process and its start time (``time.monotonic``)."""
    # stderr goes to a file, not a pipe: a chatty child must never block on a full pipe.
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait()
    started = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else child_env(),
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=err,
    )
    _stderr[proc.pid] = err
    return proc, started


def wait(proc: subprocess.Popen[bytes], started: float) -> tuple[ChildUsage, str]:
    """Reap ``proc`` with ``wait4``: its own usage, and the tail of its stderr."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    err = b""
    file = _stderr.pop(proc.pid, None)
    if file is not None:
        file.seek(0)
        err = file.read()
        file.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (
        ChildUsage(
            returncode=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            user=usage.ru_utime,
            system=usage.ru_stime,
            max_rss_mb=usage.ru_maxrss / 1024.0,  # KiB on Linux
        ),
        err.decode("utf-8", "replace")[-2000:],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class SimProcess:
    """``bulkfetch simulate`` running in a process of its own."""

    proc: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/gdw/api"

    def cpu_seconds(self) -> float:
        """User + system CPU the simulator has used so far (``/proc``; 0 where there is none)."""
        return cpu_seconds(self.proc.pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU process ``pid`` has used so far (``/proc``; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sim_process(*flags: str) -> Iterator[SimProcess]:
    """``bulkfetch simulate FLAGS`` on a free port, stopped (SIGTERM) on exit. In a process of
    its own, the server neither shares a GIL with the harness nor is measured with a client."""
    port = free_port()
    proc, started = spawn([*bulkfetch_cmd(), "simulate", "--port", str(port), *flags])
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not open port {port}")
            time.sleep(0.05)
        yield SimProcess(proc, f"http://127.0.0.1:{port}")
    finally:
        # SIGTERM, not SIGINT: a harness started in the background of a shell (nohup, `&`)
        # passes SIGINT on as ignored, and the simulator would never stop.
        proc.send_signal(signal.SIGTERM)
        if not _exits_within(proc, 10.0):
            proc.kill()
        wait(proc, started)


def _exits_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether ``proc`` exits within ``seconds``; it is left unreaped for :func:`wait`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.02)
    return False
