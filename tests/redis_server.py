"""A real Redis server for the tests: Debian's ``redis-server`` on a free loopback port,
no persistence, stopped at the end. Read with ``redis-cli``-free plain RESP over a socket,
so the tests' view of Redis does not go through the client under test."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = "/usr/bin/redis-server"


def _command(port: int, *args: str) -> object:
    """One Redis command, its reply parsed (RESP2: enough for the tests)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        sock.sendall(b"".join(parts))
        reader = sock.makefile("rb")
        return _reply(reader)


def _reply(reader: object) -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = reader.read(n + 2)  # type: ignore[attr-defined]
        return data[:-2].decode()
    if kind == b"*":
        return [_reply(reader) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return Path(REDIS_SERVER).exists() or shutil.which("redis-server") is not None

    @staticmethod
    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    @classmethod
    def start(cls, workdir: Path) -> RedisServer:
        workdir.mkdir(parents=True, exist_ok=True)
        binary = REDIS_SERVER if Path(REDIS_SERVER).exists() else shutil.which("redis-server")
        assert binary is not None
        port = cls.free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = cls(port, process)
        deadline = time.monotonic() + 10
        while True:
            try:
                if _command(port, "PING") == "PONG":
                    return server
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def command(self, *args: str) -> object:
        return _command(self.port, *args)

    def lease_keys(self) -> list[str]:
        keys = self.command("KEYS", "bulkfetch:rate:*:leases")
        assert isinstance(keys, list)
        return [str(k) for k in keys]

    def leases(self) -> int:
        """Leases held (expired or not) on every key."""
        return sum(int(str(self.command("ZCARD", k))) for k in self.lease_keys())

    def lease_expiries(self) -> list[float]:
        """When each lease held runs out (Redis's clock: this host's here)."""
        out = []
        for key in self.lease_keys():
            reply = self.command("ZRANGE", key, "0", "-1", "WITHSCORES")
            assert isinstance(reply, list)
            out += [float(str(score)) for score in reply[1::2]]
        return out

    def dump(self) -> str:
        """Every key and value, as text."""
        out = []
        keys = self.command("KEYS", "*")
        assert isinstance(keys, list)
        for key in keys:
            kind = self.command("TYPE", str(key))
            with contextlib.suppress(RuntimeError):
                if kind == "hash":
                    out.append(f"{key} {self.command('HGETALL', str(key))}")
                elif kind == "zset":
                    out.append(f"{key} {self.command('ZRANGE', str(key), '0', '-1')}")
                else:
                    out.append(f"{key} {kind}")
        return "\n".join(out)

    def flush(self) -> None:
        self.command("FLUSHALL")
