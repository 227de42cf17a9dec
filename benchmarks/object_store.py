"""Case 7: one large result into S3 (moto's server on loopback), against boto3's upload_file.

moto's S3 server (``python -m moto.server``, a process of its own) holds the bucket; the
simulator (another process) serves a generated TIFF of each size, as in case 5. For each
size and repeat:

1. ``bulkfetch run --out s3://bench/...`` (a child process, measured with ``wait4``)
   fetches the one job and streams it into a multipart upload. Two figures:
   **to the completed object**, from the first byte received to CompleteMultipartUpload
   answered (the object whole under its key): the ``done`` event's ``seconds`` less the
   ``copy_seconds`` of what follows; and **to done**, with that: the HEAD and the
   server-side copy onto itself that adds the sha256 to the object's metadata (S3 fixes
   metadata when an upload starts, before the sha256 is known);
2. boto3's ``upload_file`` (in a child process of its own, defaults: 8 MiB parts, 10
   threads) uploads the very same bytes, which ``curl`` fetched from the simulator to a
   local file first (so boto3 reads from the page cache, a head start bulkfetch lacks),
   from its call to its return (the object complete; boto3 sets no metadata after).

The ratio compares the completed objects. The CPU each process used during each upload
is reported too (moto's, the simulator's): on a 2-core machine moto, a Python server
whose request handling holds one GIL, is the bottleneck of both clients, so what moto
does with each upload's requests decides much of its speed. Both declare a checksum
when they create the upload (boto3 CRC32, bulkfetch sha256): for an upload declaring
none, moto computes a full-object checksum at completion over a second copy of the
object (2.2 s more of its CPU for 500 MB; with
``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` both clients declare none, and both
slow down alike). Objects are deleted after
each upload: moto holds them in memory. Best of the repeats for each, with the peak RSS
of the bulkfetch process, which must stay flat in file size.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from benchmarks.common import CaseResult, job_params, write_manifest
from benchmarks.procs import (
    bulkfetch_cmd,
    child_env,
    cpu_seconds,
    free_port,
    sim_process,
    spawn,
    wait,
)

__all__ = ["run_object_store_case"]

MB = 1_000_000
BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION": "us-east-1",
}
_BOTO = """
import sys, time, boto3
s3 = boto3.client("s3")
started = time.monotonic()
s3.upload_file(sys.argv[1], sys.argv[2], sys.argv[3])
print(time.monotonic() - started)
"""


@dataclass(frozen=True, slots=True)
class Upload:
    size: int
    seconds: float  # first byte to the object complete under its key
    rss_mb: float
    cpu: float  # the process's user + system seconds, all threads
    copy_seconds: float = 0.0  # then, the HEAD and copy that add the sha256 to its metadata
    moto_cpu: float = 0.0  # moto's CPU seconds meanwhile (the copy included)
    sim_cpu: float = 0.0  # the simulator's

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / MB

    @property
    def done_mbps(self) -> float:
        return self.size / (self.seconds + self.copy_seconds) / MB


@contextmanager
def _moto() -> Iterator[tuple[dict[str, str], int]]:
    """moto's S3 server with the bench bucket: the clients' environment, and its pid."""
    port = free_port()
    proc, started = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
    env = CREDENTIALS | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        _boto(env, "s3.create_bucket(Bucket=sys.argv[1])", BUCKET)
        yield env, proc.pid
    finally:
        proc.terminate()
        wait(proc, started)


def _boto(env: dict[str, str], statement: str, *args: str) -> str:
    code = f"import sys, boto3\ns3 = boto3.client('s3')\nprint({statement})"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _delete(env: dict[str, str], key: str) -> None:
    _boto(env, "s3.delete_object(Bucket=sys.argv[1], Key=sys.argv[2])", BUCKET, key)


def _bulkfetch(api_url: str, manifest: Path, prefix: str, env: dict[str, str]) -> Upload:
    cmd = [
        *bulkfetch_cmd(),
        *("run", str(manifest), "--out", f"s3://{BUCKET}/{prefix}", "--api-url", api_url),
        *("--create-rate", "20/s", "--status-rate", "20/s", "--log-format", "json", "-v"),
    ]
    proc, started = spawn(cmd, env=child_env(env))
    usage, err = wait(proc, started)
    if usage.returncode != 0:
        raise RuntimeError(f"bulkfetch run exited {usage.returncode}: {err}")
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith('{"')]
    done = next(e for e in events if "stream_seconds" in e)
    copied = next((e["copy_seconds"] for e in events if "copy_seconds" in e), 0.0)
    _delete(env, f"{prefix}/{done['path']}")
    return Upload(done["bytes"], done["seconds"] - copied, usage.max_rss_mb, usage.cpu, copied)


def _boto_upload(source: Path, key: str, env: dict[str, str]) -> Upload:
    proc, started = spawn(
        [sys.executable, "-c", _BOTO, str(source), BUCKET, key],
        env=child_env(env),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    text = proc.stdout.read().decode()
    proc.stdout.close()
    usage, err = wait(proc, started)
    if usage.returncode != 0:
        raise RuntimeError(f"boto3 upload_file exited {usage.returncode}: {err}")
    _delete(env, key)
    return Upload(source.stat().st_size, float(text.strip()), usage.max_rss_mb, usage.cpu)


def run_object_store_case(*, sizes: list[int], repeats: int) -> CaseResult:
    started = time.monotonic()
    result = CaseResult(
        "object-store",
        "7. One large result into S3",
        "One tiff job streamed into moto's S3 server on loopback (`--out s3://...`, "
        f"{', '.join(f'{s // MB} MB' for s in sizes)}), against boto3's `upload_file` of the "
        f"same bytes from a local file; best of {repeats} each. Each of moto, the simulator, "
        "bulkfetch and boto3 is a process of its own on the same machine.",
    )
    rows: list[list[str]] = []
    best: dict[int, tuple[Upload, Upload]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, _moto() as (env, moto_pid):
        work = Path(tmp)
        manifest = write_manifest(work / "big.jsonl", [job_params(0, fmt="tiff")])
        for size in sizes:
            flags = [
                *("--seed", "6", "--create-rate", "20/s", "--status-rate", "20/s"),
                *("--processing-median", "0.05", "--processing-sigma", "0"),
                *("--result-form", "redirect", "--retry-after", "float"),
                *("--big-result-bytes", str(size), "--chunk-size", str(1 << 20)),
            ]
            ours: list[Upload] = []
            theirs: list[Upload] = []
            source = work / f"result-{size}.tif"
            with sim_process(*flags) as sim:
                for rep in range(repeats):
                    moto_before, sim_before = cpu_seconds(moto_pid), sim.cpu_seconds()
                    upload = _bulkfetch(sim.api_url, manifest, f"bf-{size}-{rep}", env)
                    ours.append(
                        replace(
                            upload,
                            moto_cpu=cpu_seconds(moto_pid) - moto_before,
                            sim_cpu=sim.cpu_seconds() - sim_before,
                        )
                    )
                    if not source.exists():
                        with urllib.request.urlopen(f"{sim.url}/_sim/tasks") as answer:
                            task = json.loads(answer.read())[-1]
                        url = f"{sim.url}/_sim/results/{task['task_id']}"
                        subprocess.run(["curl", "-sS", "-o", str(source), url], check=True)
                    moto_before = cpu_seconds(moto_pid)
                    upload = _boto_upload(source, f"boto-{size}-{rep}", env)
                    theirs.append(replace(upload, moto_cpu=cpu_seconds(moto_pid) - moto_before))
            if ours[0].size != source.stat().st_size:
                raise RuntimeError(f"boto3 uploaded {source.stat().st_size}, bulkfetch {size}")
            # Only the first MB: a harness grown by the whole file would hand its size on to
            # the next children it forks (their peak RSS counts the pages before the exec).
            with source.open("rb") as f:
                digest = hashlib.sha256(f.read(MB)).hexdigest()[:8]
            source.unlink()
            top = max(ours, key=lambda u: u.mbps)
            ratios = [o.mbps / t.mbps for o, t in zip(ours, theirs, strict=True)]
            boto_top = max(theirs, key=lambda u: u.mbps)
            best[size] = (top, boto_top)
            rows.append(
                [
                    f"{top.size / MB:.0f} MB",
                    f"{boto_top.mbps:.0f}",
                    f"{top.mbps:.0f}",
                    f"{top.mbps / boto_top.mbps:.2f}",
                    f"{statistics.median(ratios):.2f}",
                    f"{top.done_mbps:.0f} ({top.copy_seconds:.1f} s)",
                    f"{max(u.rss_mb for u in ours):.0f}",
                    f"{max(u.rss_mb for u in theirs):.0f}",
                    f"{min(u.cpu for u in ours):.1f} / {min(u.cpu for u in theirs):.1f}",
                    f"{min(u.moto_cpu for u in ours):.1f} / {min(u.moto_cpu for u in theirs):.1f}",
                    f"{min(u.sim_cpu for u in ours):.1f}",
                    digest,
                ]
            )
    result.tables.append(
        (
            "Throughput in MB/s (10^6 bytes) to the completed object (and to done, with the "
            "metadata copy); peak RSS and CPU of each process",
            [
                "size",
                "boto3 upload_file MB/s",
                "bulkfetch fetch + upload MB/s",
                "bulkfetch / boto3 (best / best)",
                "median of each repeat's bulkfetch / boto3",
                "bulkfetch done MB/s (sha256 copy)",
                "bulkfetch peak RSS MiB",
                "boto3 peak RSS MiB",
                "CPU s bulkfetch / boto3",
                "moto's CPU s for bulkfetch's (with the copy) / boto3's",
                "simulator CPU s",
                "first MB's sha256",
            ],
            rows,
        )
    )
    big, small = max(sizes), min(sizes)
    top, boto_top = best[big]
    ratio = top.mbps / boto_top.mbps
    result.target(f"throughput vs boto3 ({big // MB} MB)", "≥ 0.8", ratio, ratio >= 0.8, ".2f")
    rss_big, rss_small = best[big][0].rss_mb, best[small][0].rss_mb
    result.target(f"peak RSS, {big // MB} MB (MiB)", "< 150", rss_big, rss_big < 150, ".0f")
    result.target(
        f"RSS growth {small // MB} MB → {big // MB} MB (MiB)",
        "flat (≤ 10)",
        rss_big - rss_small,
        abs(rss_big - rss_small) <= 10,
        "+.0f",
    )
    result.paragraphs.append(
        f"**What it shows.** bulkfetch received the {big // MB} MB result from the simulator "
        f"and had it complete in the bucket (CompleteMultipartUpload answered) at "
        f"{top.mbps:.0f} MB/s, {ratio:.2f} of boto3's `upload_file` of the same bytes from a "
        f"local file ({boto_top.mbps:.0f} MB/s), with a peak RSS of {rss_big:.0f} MiB "
        f"({rss_small:.0f} MiB for {small // MB} MB). Then the HEAD and the copy onto itself "
        f"that add the sha256 to its metadata took {top.copy_seconds:.1f} s: "
        f"{top.done_mbps:.0f} MB/s to done; boto3's upload sets no metadata. On this "
        f"{os.cpu_count()}-core machine moto, whose Python request handling holds one GIL, "
        f"is the bottleneck of both: it used {top.moto_cpu:.1f} s of CPU for bulkfetch's "
        f"run (the copy, which rewrites the object in moto, included) and "
        f"{boto_top.moto_cpu:.1f} s for boto3's upload, the simulator "
        f"{top.sim_cpu:.1f} s to serve the result."
    )
    result.seconds = time.monotonic() - started
    return result
