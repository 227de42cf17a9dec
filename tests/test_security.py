"""Security: the API key never leaks, files follow the umask, names never escape the folder.

Every run here uses a fresh, distinctive key (``apk.`` + 64 random hex digits) and fails in
some way (key refused with 401 or 403, task errors, refused parameters, faults, a hostile
server that echoes the key back and points results at another host); afterwards stdout,
stderr, the report, the ledger's files and every file under the output folder are searched
for the key, and for any 16-digit piece of it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bulkfetch.manifest.jobs import load_manifest
from bulkfetch.simulator import SimConfig, render_result, result_content_type, run_in_thread
from tests.conftest import (
    FAST,
    FAST_FLAGS,
    bulkfetch_cli,
    make_jobs,
    run_cli,
    spawn_cli,
    write_jsonl,
)
from tests.test_run import assert_files_match_server


def new_key() -> str:
    return "apk." + secrets.token_hex(32)


def pieces(key: str) -> list[bytes]:
    """The key, and every 16-digit piece of its hex part (a truncated leak is a leak)."""
    hexpart = key[4:]
    return [key.encode()] + [hexpart[i : i + 16].encode() for i in range(0, len(hexpart) - 15, 4)]


def assert_key_absent(
    key: str, *, texts: tuple[str, ...] = (), folders: tuple[Path, ...] = ()
) -> int:
    """No piece of ``key`` in ``texts`` or any file under ``folders``; returns files searched."""
    needles = pieces(key)
    for text in texts:
        raw = text.encode()
        for needle in needles:
            assert needle not in raw, f"a piece of the API key in output: {needle!r}"
    searched = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                searched += 1
                raw = path.read_bytes()
                for needle in needles:
                    assert needle not in raw, f"a piece of the API key in {path}"
    return searched


# -- runs that fail in every way --------------------------------------------------------


FAILURES: dict[str, dict[str, Any]] = {
    "key-refused-401": {},  # the server expects another key
    "key-refused-403": {"forbidden": True},
    "task-errors-refused-params-and-faults": {
        "task_error_rate": 0.3,
        "create_5xx_rate": 0.1,
        "status_5xx_rate": 0.1,
        "reset_rate": 0.05,
        "truncate_rate": 0.1,
        "json_instead_rate": 0.1,
        "result_form": "redirect",
        "create_limit": 6,
    },
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_the_key_never_appears_in_any_output_or_file(tmp_path: Path, case: str) -> None:
    key = new_key()
    server_key = new_key() if case == "key-refused-401" else key
    jobs = make_jobs(10)
    options = FAILURES[case]
    if "task_error_rate" in options:
        options = options | {"bad_view_ids": frozenset({jobs[0]["view_id"]}), "seed": 5}
    config = SimConfig(**(FAST | {"api_key": server_key} | options))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    report = out / "report.json"
    env = {"EOS_API_KEY": key}
    with run_in_thread(config) as sim:
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            out,
            "--api-url",
            sim.api_url,
            "--report",
            report,
            "-v",  # every poll logged: the most there is to leak through
            *FAST_FLAGS,
            env=env,
        )
        counters = sim.counters()
    status = bulkfetch_cli("status", "--out", out, "--json", env=env)
    if case.startswith("key-refused"):
        assert proc.returncode == 3, proc.stderr
        assert "refused the API key" in proc.stderr
        assert counters["tasks_created"] == 0
    else:
        assert proc.returncode == 1, proc.stderr
        data = orjson.loads(report.read_bytes())
        assert data["states"]["failed"] >= 2, data["failures_by_reason"]
        reasons = " ".join(data["failures_by_reason"])
        assert "simulated task error" in reasons and "refused the job's parameters" in reasons
    assert status.returncode == 0, status.stderr
    assert (out / "bulkfetch-ledger.json").exists() and report.exists()
    searched = assert_key_absent(
        key,
        texts=(proc.stdout, proc.stderr, status.stdout, status.stderr),
        folders=(out,),
    )
    assert searched >= 3  # the ledger, its journal or lock, the report (and the images)


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Hostile:
    """A hostile EOS: echoes the key in every error it can, names files with ``..``, and
    sends results from another origin (another port: the key must not follow)."""

    modes: dict[str, str]  # view_id -> how its task answers
    seen: list[Seen] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_port: int = 0
    other_port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/gdw/api"

    def _note(self, request: web.Request) -> str:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.seen.append(Seen(request.path, request.query_string, headers))
        return request.headers.get("x-api-key", "")

    async def create(self, request: web.Request) -> web.Response:
        key = self._note(request)
        params = orjson.loads(await request.read())["params"]
        if self.modes[params["view_id"]] == "refused":
            return web.json_response({"error": f"key {key} may not order this scene"}, status=400)
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = params
        answer = {"status": "created", "task_id": task_id, "req_id": key, "task_timeout": 3600}
        return web.json_response(answer, status=202, headers={"X-Request-Id": key})

    async def status(self, request: web.Request) -> web.StreamResponse:
        key = self._note(request)
        task_id = request.match_info["task_id"]
        params = self.tasks[task_id]
        mode = self.modes[params["view_id"]]
        elsewhere = f"http://127.0.0.1:{self.other_port}/elsewhere/{task_id}"
        if mode == "task-error":
            message = {"error": f"quota exhausted for key {key} (x-api-key: {key})"}
            return web.json_response({"task_type": "error", "error_message": message})
        if mode == "redirect":
            return web.Response(status=302, headers={"Location": elsewhere})
        if mode == "bad-redirect":
            return web.Response(status=302, headers={"Location": "http://127.0.0.1:99999/x"})
        if mode == "bad-json-url":
            return web.json_response({"status": "done", "url": "http://[::1/result"})
        if mode == "json-url":
            return web.json_response(
                {"status": "done", "url": elsewhere, "filename": "../../evil.png", "key": key}
            )
        return self._result(params, "../../evil.jpg")

    async def search(self, request: web.Request) -> web.StreamResponse:
        key = self._note(request)
        if request.match_info["dataset"] == "landsat8":
            return web.json_response({"error": f"key {key} may not search landsat"}, status=400)
        evil = {
            "view_id": "S2/../../etc/2023/6/1/0",
            "sceneID": "../../../evil",
            "date": "2023-06-01",
            "cloudCoverage": 1.0,
            "dataset": "../up",
            "note": key,
        }
        return web.json_response({"results": [evil], "meta": {"found": 1, "page": 1}})

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        return self._result(self.tasks[request.match_info["task_id"]], "/etc/evil")

    @staticmethod
    def _result(params: dict[str, Any], name: str) -> web.Response:
        return web.Response(
            body=render_result(params),
            headers={
                "Content-Type": result_content_type(params),
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )


@contextmanager
def hostile_api(modes: dict[str, str]) -> Iterator[Hostile]:
    hostile = Hostile(modes)
    app = web.Application()
    app.router.add_post("/api/gdw/api", hostile.create)
    app.router.add_get("/api/gdw/api/{task_id}", hostile.status)
    app.router.add_get("/elsewhere/{task_id}", hostile.elsewhere)
    app.router.add_post("/api/lms/search/v2/{dataset}", hostile.search)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for _ in range(2):
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    hostile.api_port, hostile.other_port = (int(a[1]) for a in runner.addresses)
    try:
        yield hostile
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_hostile_search_server_gets_its_answers_kept_inside_the_folder(tmp_path: Path) -> None:
    key = new_key()
    fields = write_jsonl(
        tmp_path / "fields.jsonl", [{"id": "f", "geometry": make_jobs(1)[0]["geometry"]}]
    )
    args: list[str | Path] = ["search", fields, "--from", "2023-06-01", "--to", "2023-06-30"]
    args.append("--no-cache")
    args += ["--search-rate", "50/s", "--name-template", "{field}/{scene}_{sensor}_{dataset}"]
    with hostile_api({}) as server:
        url = server.api_url  # the search URL is derived from it
        ok = bulkfetch_cli(
            *args, "-o", tmp_path / "m.jsonl", "--api-url", url, env={"EOS_API_KEY": key}
        )
        refused = bulkfetch_cli(
            *args,
            "--dataset",
            "landsat8",
            "-o",
            tmp_path / "n.jsonl",
            "--api-url",
            url,
            env={"EOS_API_KEY": key},
        )
    assert ok.returncode == 0, ok.stderr
    [job] = load_manifest(tmp_path / "m.jsonl").jobs
    assert job.relative_path().parts[0] == "f" and len(job.relative_path().parts) == 2
    assert refused.returncode == 1 and "may not search landsat" in refused.stderr
    for proc in (ok, refused):
        assert key not in proc.stdout + proc.stderr
    assert key.encode() not in (tmp_path / "m.jsonl").read_bytes()
    assert all(not seen.query for seen in server.seen)  # the key went in the header only
    assert {seen.headers["x-api-key"] for seen in server.seen} == {key}


def test_a_hostile_server_gets_no_key_elsewhere_and_names_no_file(tmp_path: Path) -> None:
    key = new_key()
    jobs = make_jobs(10)
    kinds = ("refused", "task-error", "redirect", "json-url", "bytes")
    modes = {job["view_id"]: kinds[i % len(kinds)] for i, job in enumerate(jobs)}
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    report = out / "report.json"
    with hostile_api(modes) as api:
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            out,
            "--api-url",
            api.api_url,
            "--report",
            report,
            "-v",
            *FAST_FLAGS,
            env={"EOS_API_KEY": key},
        )
    assert proc.returncode == 1, proc.stderr
    rows = {row["view_id"]: row for row in orjson.loads(report.read_bytes())["job_list"]}
    for view_id, mode in modes.items():
        want = "failed" if mode in ("refused", "task-error") else "done"
        assert rows[view_id]["state"] == want, rows[view_id]
    assert "quota exhausted for key ***" in proc.stderr  # the echoed key, scrubbed
    # The key went in the header to the API, and nowhere else: not in any URL, and not to
    # the other origin the results were sent from.
    api_calls = [s for s in api.seen if s.path.startswith("/api/")]
    other = [s for s in api.seen if s.path.startswith("/elsewhere/")]
    assert api_calls and len(other) == 4
    assert all(s.headers.get("x-api-key") == key for s in api_calls)
    for seen in api.seen:
        assert key[4:] not in seen.query
    for seen in other:
        assert not any(key[4:] in value for value in seen.headers.values()), seen
    # Files are named by bulkfetch, never by the server (Content-Disposition, JSON names).
    expected = {
        job.relative_path().as_posix()
        for job in load_manifest(manifest).jobs
        if modes[job.view_id] in ("redirect", "json-url", "bytes")
    }
    written = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith("bulkfetch-ledger") and p != report
    }
    assert written == expected
    # Beside the output, only the cache folder (the shared rate store: the key's
    # fingerprint, never the key).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl", "out", "xdg-cache"]
    assert not Path("/etc/evil").exists()
    cache = tmp_path / "xdg-cache"
    assert_key_absent(key, texts=(proc.stdout, proc.stderr), folders=(out, cache))


# -- the process list ---------------------------------------------------------------------


@pytest.mark.parametrize("via", ["env", "key-file"])
def test_the_key_is_not_on_the_command_line(tmp_path: Path, via: str) -> None:
    key = new_key()
    config = SimConfig(**(FAST | {"api_key": key, "processing_median": 5.0}))
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(3))
    out = tmp_path / "out"
    extra: list[str | Path] = []
    env = {"EOS_API_KEY": key}
    if via == "key-file":
        key_file = tmp_path / "eos.key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        extra = ["--api-key-file", key_file]
        env = {"EOS_API_KEY": ""}
    with run_in_thread(config) as sim:
        proc = spawn_cli(
            "run", manifest, "--out", out, "--api-url", sim.api_url, *FAST_FLAGS, *extra, env=env
        )
        try:
            deadline = time.monotonic() + 20
            while sim.counters()["tasks_created"] < 3:
                assert time.monotonic() < deadline and proc.poll() is None, "run did not start"
                time.sleep(0.02)
            own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert b"bulkfetch.cli" in own and b"run" in own
            listing = subprocess.run(
                ["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=False
            ).stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 143, stderr
    cmdlines = [own]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdlines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue  # gone meanwhile
    assert_key_absent(
        key, texts=(listing, stdout, stderr, *(c.decode("utf-8", "replace") for c in cmdlines))
    )


# -- file modes -------------------------------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o027, 0o077])
def test_files_and_the_ledger_follow_the_users_umask(tmp_path: Path, mask: int) -> None:
    jobs = make_jobs(4)
    jobs[0]["name"] = "field-12/2023-07-19_NDVI"
    jobs[1]["name"] = "field-12/deeper/b"
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim, umask(mask):
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            out,
            "--api-url",
            sim.api_url,
            "--report",
            out / "report.json",
            *FAST_FLAGS,
        )
    assert proc.returncode == 0, proc.stderr
    assert_files_match_server(out, manifest)
    paths = [out, *out.rglob("*")]
    names = {p.name for p in paths}
    assert {"bulkfetch-ledger.json", "bulkfetch-ledger.json.lock", "report.json"} <= names
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert mode == want, f"{path.relative_to(tmp_path)}: {mode:o}, want {want:o}"


@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_key_file_others_can_read_gives_a_warning_naming_it(
    tmp_path: Path, mode: int, warns: bool
) -> None:
    key = new_key()
    key_file = tmp_path / "eos.key"
    key_file.write_text(key + "\n")
    key_file.chmod(mode)
    manifest = write_jsonl(tmp_path / "jobs.jsonl", make_jobs(1))
    with run_in_thread(SimConfig(**(FAST | {"api_key": key}))) as sim:
        proc = bulkfetch_cli(
            "run",
            manifest,
            "--out",
            tmp_path / "out",
            "--api-url",
            sim.api_url,
            "--api-key-file",
            key_file,
            *FAST_FLAGS,
            env={"EOS_API_KEY": ""},
        )
    assert proc.returncode == 0, proc.stderr  # the key was read from the file
    warning = [line for line in proc.stderr.splitlines() if "readable by other users" in line]
    if warns:
        assert warning and str(key_file) in warning[0], proc.stderr
        assert "chmod 600" in warning[0]
    else:
        assert not warning, proc.stderr
    assert_key_absent(key, texts=(proc.stdout, proc.stderr), folders=(tmp_path / "out",))


# -- names ----------------------------------------------------------------------------------


BAD_NAMES = ("../x", "/etc/x", "a/../../x", "CON", "nul.txt", "a\x00b", "..", "a\\..\\x", "C:x")


def test_names_that_could_escape_the_folder_are_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(len(BAD_NAMES) + 1)
    for job, name in zip(jobs, BAD_NAMES, strict=False):
        job["name"] = name
    jobs[-1]["name"] = "fine/name"  # a good one: still nothing is sent
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    with run_in_thread(SimConfig(**FAST)) as sim:
        proc = run_cli(sim, manifest, out)
        counters = sim.counters()
    validate = bulkfetch_cli("validate", manifest)
    assert proc.returncode == 2, proc.stderr
    assert validate.returncode == 2, validate.stderr
    assert "nothing was sent" in proc.stderr
    assert "Traceback" not in proc.stderr
    for line, name in enumerate(BAD_NAMES, start=1):
        assert f"jobs.jsonl: line {line}: name:" in proc.stderr, (name, proc.stderr)
        assert f"jobs.jsonl: line {line}: name:" in validate.stderr
    assert f"line {len(BAD_NAMES) + 1}:" not in proc.stderr
    assert counters["create_calls"] == 0 and counters["status_calls"] == 0
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


def test_a_symlink_inside_the_output_folder_does_not_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    jobs = make_jobs(3)
    jobs[0]["name"] = "link/escaped"
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    with run_in_thread(SimConfig(**FAST)) as sim:
        proc = run_cli(sim, manifest, out)
    assert proc.returncode != 0, proc.stderr
    assert "outside the output folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", ["bad-redirect", "bad-json-url"])
def test_a_malformed_result_url_fails_only_that_job(tmp_path: Path, mode: str) -> None:
    jobs = make_jobs(4)
    modes = {job["view_id"]: "bytes" for job in jobs} | {jobs[0]["view_id"]: mode}
    manifest = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    with hostile_api(modes) as api:
        proc = bulkfetch_cli(
            "run", manifest, "--out", out, "--api-url", api.api_url, "--report", report,
            *FAST_FLAGS, env={"EOS_API_KEY": new_key()},
        )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    rows = orjson.loads(report.read_bytes())["job_list"]
    assert [row["state"] for row in rows] == ["failed", "done", "done", "done"]
    assert rows[0]["error"]


def test_tls_verification_is_never_turned_off() -> None:
    """Every request goes through the client's one session, whose connector verifies TLS."""
    import anyio

    from bulkfetch.client import Client
    from bulkfetch.config import ApiKey

    async def main() -> None:
        async with Client("https://api-connect.eos.com/api/gdw/api", ApiKey("apk.x")) as c:
            connector = c.session.connector
            assert connector is not None
            assert getattr(connector, "_ssl", True) is True  # aiohttp's default: verify

    anyio.run(main)
    root = Path(__file__).resolve().parents[1] / "bulkfetch"
    for source in root.rglob("*.py"):
        text = source.read_text()
        for switch in ("ssl=False", "verify_ssl", "CERT_NONE", "check_hostname = False"):
            assert switch not in text, f"{source}: {switch}"
