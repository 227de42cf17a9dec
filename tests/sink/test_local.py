"""Tests for bulkfetch.sink.local, and the write every sink shares (bulkfetch.sink.base):
results reach their final name whole and checked, or never."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, cast

import anyio
import anyio.lowlevel
import pytest

import bulkfetch.sink.base as base_module
import bulkfetch.sink.local as sink_module
from bulkfetch.client import Client, Ready
from bulkfetch.config import ApiKey
from bulkfetch.durable import fsync_directory
from bulkfetch.errors import StorageError, TransientError
from bulkfetch.simulator import TEST_API_KEY, SimConfig, Simulator, render_result
from bulkfetch.sink.base import Sink, Written, check_result, sniff
from bulkfetch.sink.local import PART_SUFFIX, FolderSink

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
ZIP = b"PK\x03\x04" + b"z" * 100


class FakeReady:
    """Quacks like ``client.Ready``: a body in chunks, and the Content-Length the server sent."""

    def __init__(
        self,
        body: bytes,
        *,
        content_length: int | str | None = "auto",
        chunk: int = 100,
        fail_after: int | None = None,
        hang_after: int | None = None,
    ) -> None:
        self.body = body
        self.content_length = len(body) if content_length == "auto" else content_length
        self.chunk = chunk
        self.fail_after = fail_after
        self.hang_after = hang_after

    async def chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        for sent, i in enumerate(range(0, len(self.body), self.chunk)):
            if self.fail_after is not None and sent >= self.fail_after:
                raise TransientError("ClientPayloadError while downloading the result")
            if self.hang_after is not None and sent >= self.hang_after:
                await anyio.sleep_forever()
            yield self.body[i : i + self.chunk]
            await anyio.lowlevel.checkpoint()


def write(sink: Sink, relative: str, expected: str, ready: FakeReady) -> Written:
    async def main() -> Written:
        return await sink.write(PurePosixPath(relative), expected, cast(Ready, ready))

    return anyio.run(main)


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(PART_SUFFIX))


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- sniff / check_result ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"MM\x00*\x00\x00", "tiff"),
        (b"II+\x00\x08\x00", "tiff"),
        (b"MM\x00+\x00\x08", "tiff"),
        (b"PK\x03\x04\x14\x00", "zip"),
        (b'{"status": "done"}', "json"),
        (b"[1, 2]", "json"),
        (b' \n\t{"a": 1}', "json"),
        (b"GIF89a", None),
        (b"<html>", None),
        (b"", None),
        (b"\xff\xd8", None),  # too short to be sure
        (b"\x89PNG", None),
    ],
)
def test_sniff(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_check_result_accepts_a_complete_result_of_the_right_kind() -> None:
    check_result(expected="jpeg", head=JPEG[:16], size=len(JPEG), content_length=len(JPEG))
    check_result(expected="png", head=PNG[:16], size=len(PNG), content_length=None)
    check_result(expected="zip", head=ZIP[:16], size=len(ZIP), content_length=len(ZIP))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected": "jpeg", "head": JPEG[:16], "size": 100, "content_length": 200}, "truncated"),
        ({"expected": "jpeg", "head": JPEG[:16], "size": 300, "content_length": 200}, "truncated"),
        ({"expected": "jpeg", "head": b"", "size": 0, "content_length": None}, "empty"),
        ({"expected": "jpeg", "head": b"", "size": 0, "content_length": 0}, "empty"),
        (
            {"expected": "jpeg", "head": b'{"status":"done"}', "size": 17, "content_length": 17},
            "JSON",
        ),
        (
            {"expected": "jpeg", "head": PNG[:16], "size": 10, "content_length": None},
            "is png where jpeg",
        ),
        (
            {"expected": "tiff", "head": b"GIF89a", "size": 6, "content_length": None},
            "unknown format",
        ),
    ],
)
def test_check_result_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TransientError, match=message) as info:
        check_result(**kwargs)
    assert info.value.retryable


# -- target / file_ok -------------------------------------------------------------------------


def test_target_maps_inside_the_output_folder(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path)
    assert sink.target("a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert sink.target(PurePosixPath("c.png")) == tmp_path / "c.png"


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "a/../b", "/etc/passwd", "", "."])
def test_target_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(StorageError, match="outside the output folder"):
        FolderSink(tmp_path / "out").target(relative)


def test_target_refuses_a_symlinked_directory_pointing_outside(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    sink = FolderSink(out)
    with pytest.raises(StorageError, match="outside the output folder"):
        sink.target("link/x.jpg")
    with pytest.raises(StorageError):
        write(sink, "link/x.jpg", "jpeg", FakeReady(JPEG))
    assert list(elsewhere.iterdir()) == []


def test_target_refuses_a_symlinked_file_pointing_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me", encoding="utf-8")
    (out / "x.jpg").symlink_to(secret)
    with pytest.raises(StorageError):
        FolderSink(out).target("x.jpg")


def test_target_allows_a_symlink_that_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert FolderSink(tmp_path).target("alias/x.jpg") == tmp_path / "alias" / "x.jpg"


def test_file_ok(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.jpg").write_bytes(JPEG)
    assert sink.file_ok("d/f.jpg", len(JPEG))
    assert not sink.file_ok("d/f.jpg", len(JPEG) - 1)
    assert not sink.file_ok("d/missing.jpg", 0)
    assert not sink.file_ok("", 0)
    assert not sink.file_ok("../f.jpg", len(JPEG))


# -- write ------------------------------------------------------------------------------------


def test_write_puts_a_checked_file_in_place(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = FolderSink(out)
    written = write(sink, "S2/13/x.jpg", "jpeg", FakeReady(JPEG, chunk=7))
    target = out / "S2" / "13" / "x.jpg"
    assert target.read_bytes() == JPEG
    assert written == Written("S2/13/x.jpg", len(JPEG), hashlib.sha256(JPEG).hexdigest())
    assert leftovers(out) == []
    assert files(out) == ["S2/13/x.jpg"]
    assert sink.file_ok(written.path, written.size)


def test_write_large_body_in_many_chunks(tmp_path: Path) -> None:
    body = b"II*\x00" + os.urandom(3 * (1 << 20) + 12345)
    written = write(FolderSink(tmp_path), "big.tif", "tiff", FakeReady(body, chunk=100_000))
    assert (tmp_path / "big.tif").read_bytes() == body
    assert written.sha256 == hashlib.sha256(body).hexdigest()
    assert written.size == len(body)
    # Its own timing, first byte to written, then to fsynced under its name (for the log).
    assert 0 < written.stream_seconds <= written.seconds < 60


class _CountingReady(FakeReady):
    """Records, as each chunk is handed over, how many bytes the writer has written."""

    def __init__(self, body: bytes, written: list[int], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.written = written
        self.ahead: list[int] = []  # bytes received and not yet written, at each chunk

    async def chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in super().chunks(size):
            self.ahead.append(received - sum(self.written))
            received += len(chunk)
            yield chunk


def test_write_streams_big_bodies_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk holds the receiver back: at most QUEUE_BLOCKS + 2 blocks in memory."""
    block = 1000
    monkeypatch.setattr(base_module, "WRITE_CHUNK", block)
    written: list[int] = []
    real = sink_module._writev_all

    def slow(fd: int, blocks: list[bytes]) -> None:
        time.sleep(0.002)
        real(fd, blocks)
        written.append(sum(map(len, blocks)))

    monkeypatch.setattr(sink_module, "_writev_all", slow)
    body = b"II*\x00" + os.urandom(200 * block)
    ready = _CountingReady(body, written, chunk=250)
    result = write(FolderSink(tmp_path), "big.tif", "tiff", ready)
    assert (tmp_path / "big.tif").read_bytes() == body
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert len(written) > 100  # streamed block by block, not gathered
    assert max(ready.ahead) <= (base_module.QUEUE_BLOCKS + 2) * block + 250


def test_write_makes_new_folders_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []

    def record(path: Path) -> None:
        synced.append(path)
        fsync_directory(path)

    monkeypatch.setattr(sink_module, "fsync_directory", record)
    write(FolderSink(tmp_path), "a/b/x.jpg", "jpeg", FakeReady(JPEG))
    # Each new folder's entry in its parent, then the file's entry in its folder.
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    write(FolderSink(tmp_path), "a/b/y.jpg", "jpeg", FakeReady(JPEG))
    assert synced == [tmp_path / "a" / "b"]


def test_write_without_content_length(tmp_path: Path) -> None:
    written = write(FolderSink(tmp_path), "p.png", "png", FakeReady(PNG, content_length=None))
    assert (tmp_path / "p.png").read_bytes() == PNG
    assert written.size == len(PNG)


def test_write_replaces_an_older_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"old")
    write(FolderSink(tmp_path), "x.jpg", "jpeg", FakeReady(JPEG))
    assert (tmp_path / "x.jpg").read_bytes() == JPEG


@pytest.mark.parametrize(
    ("ready", "expected", "message"),
    [
        (FakeReady(JPEG, content_length=len(JPEG) + 500), "jpeg", "truncated"),
        (FakeReady(JPEG[:1000], content_length=len(JPEG)), "jpeg", "truncated"),
        (FakeReady(PNG), "jpeg", "png where jpeg"),
        (FakeReady(b'{"status": "done"}'), "jpeg", "JSON"),
        (FakeReady(b"<html>oops</html>"), "jpeg", "unknown format"),
        (FakeReady(b""), "jpeg", "empty"),
        (FakeReady(JPEG, fail_after=3), "jpeg", "ClientPayloadError"),
    ],
    ids=["short-claims-more", "cut", "wrong-kind", "json", "html", "empty", "read-error"],
)
def test_write_bad_body_leaves_nothing(
    tmp_path: Path, ready: FakeReady, expected: str, message: str
) -> None:
    with pytest.raises(TransientError, match=message):
        write(FolderSink(tmp_path), "sub/x.jpg", expected, ready)
    assert not (tmp_path / "sub" / "x.jpg").exists()
    assert leftovers(tmp_path) == []
    assert files(tmp_path) == []


def test_write_bad_body_keeps_the_previous_good_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(JPEG)
    with pytest.raises(TransientError):
        write(
            FolderSink(tmp_path), "x.jpg", "jpeg", FakeReady(JPEG[:500], content_length=len(JPEG))
        )
    assert (tmp_path / "x.jpg").read_bytes() == JPEG
    assert leftovers(tmp_path) == []


class _RecordingPart(sink_module._PartFile):
    """A ``_PartFile`` that keeps the descriptor it opened, to check afterwards it was closed."""

    fds: ClassVar[list[int]] = []

    def write(self, blocks: list[bytes]) -> None:
        opened = self._fd >= 0
        super().write(blocks)
        if not opened:
            self.fds.append(self._fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _cancel_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: int) -> int:
    """Cancel ``times`` writes midway, after the file was opened and written to; return how
    many left their descriptor open (then closed here, so no other test sees it)."""
    _RecordingPart.fds = []
    monkeypatch.setattr(sink_module, "_PartFile", _RecordingPart)
    monkeypatch.setattr(base_module, "WRITE_CHUNK", 64)  # stream: a file is open midway
    sink = FolderSink(tmp_path)

    async def main() -> None:
        with anyio.move_on_after(0.05) as scope:
            await sink.write(
                PurePosixPath("x.jpg"), "jpeg", cast(Ready, FakeReady(JPEG, hang_after=4))
            )
        assert scope.cancelled_caught

    leaked = 0
    for run in range(times):
        anyio.run(main)
        assert len(_RecordingPart.fds) == run + 1
        fd = _RecordingPart.fds[-1]
        if _is_open(fd):  # checked at once: a closed descriptor's number is reused
            os.close(fd)
            leaked += 1
    return leaked


def test_write_cancelled_midway_leaves_no_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cancel_writes(tmp_path, monkeypatch, 2)
    assert files(tmp_path) == []


def test_write_cancelled_midway_closes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _cancel_writes(tmp_path, monkeypatch, 5) == 0


def _enospc(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("write_chunk", [1 << 20, 64], ids=["in-one-call", "streamed"])
def test_write_disk_full_at_fsync_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_chunk: int
) -> None:
    monkeypatch.setattr(base_module, "WRITE_CHUNK", write_chunk)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(StorageError, match="disk full") as info:
        write(FolderSink(tmp_path), "x.jpg", "jpeg", FakeReady(JPEG))
    assert not info.value.retryable
    assert files(tmp_path) == []


def _patch_writes(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """The second write of a file fails with ``error``, as a filling disk does."""
    real = sink_module._writev_all
    calls = 0

    def failing(fd: int, blocks: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise OSError(error, os.strerror(error))
        real(fd, blocks)

    monkeypatch.setattr(sink_module, "_writev_all", failing)
    monkeypatch.setattr(base_module, "WRITE_CHUNK", 64)  # write every chunk at once


def test_write_disk_full_midway_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patch_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(StorageError, match="disk full") as info:
        write(FolderSink(tmp_path), "d/x.jpg", "jpeg", FakeReady(JPEG))
    assert str(tmp_path / "d" / "x.jpg") in str(info.value)
    assert files(tmp_path) == []


def test_write_other_os_error_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patch_writes(monkeypatch, errno.EIO)
    with pytest.raises(StorageError, match="cannot write") as info:
        write(FolderSink(tmp_path), "x.jpg", "jpeg", FakeReady(JPEG))
    assert "disk full" not in str(info.value)
    assert files(tmp_path) == []


def test_write_into_unwritable_folder_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"a file where a folder is needed")
    with pytest.raises(StorageError, match="cannot write"):
        write(FolderSink(tmp_path), "blocker/x.jpg", "jpeg", FakeReady(JPEG))


# -- remove_partials --------------------------------------------------------------------------


def test_remove_partials_deletes_only_leftovers(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    parts = [
        tmp_path / f".x.jpg.0a1b2c3d{PART_SUFFIX}",
        tmp_path / "a" / "b" / f".y.png.deadbeef{PART_SUFFIX}",
    ]
    keep = [tmp_path / "x.jpg", tmp_path / "a" / "b" / "y.png", tmp_path / "a" / "notes.part"]
    for path in parts + keep:
        path.write_bytes(b"data")
    assert FolderSink(tmp_path).remove_partials() == 2
    assert all(not p.exists() for p in parts)
    assert all(p.exists() for p in keep)
    assert FolderSink(tmp_path).remove_partials() == 0


def test_a_shard_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    """Parts of one manifest (--shard) may write into one folder at once: a part that
    starts must not delete the temporary files another is writing."""
    (tmp_path / "a").mkdir()
    mine = tmp_path / "a" / f".y.v2.png.deadbeef{PART_SUFFIX}"
    theirs = tmp_path / f".x.jpg.0a1b2c3d{PART_SUFFIX}"
    for path in (mine, theirs):
        path.write_bytes(b"data")
    owned = [PurePosixPath("a/y.v2.png"), PurePosixPath("z.jpg")]
    assert FolderSink(tmp_path).remove_own_partials(owned) == 1
    assert not mine.exists()
    assert theirs.exists()


def test_remove_partials_without_output_folder(tmp_path: Path) -> None:
    assert FolderSink(tmp_path / "never-made").remove_partials() == 0


def test_remove_partials_does_not_follow_symlinks_outside(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    foreign = elsewhere / f".z.jpg.00000000{PART_SUFFIX}"
    foreign.write_bytes(b"not ours")
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    FolderSink(out).remove_partials()
    assert foreign.exists()


# -- a real result from the simulator ---------------------------------------------------------


PARAMS: dict[str, Any] = {
    "view_id": "S2/13/R/EL/2023/7/19/0",
    "bm_type": "NDVI",
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[-104.879, 27.166], [-104.870, 27.166], [-104.870, 27.172]]],
    },
    "px_size": 4,
    "format": "png",
}


@pytest.mark.parametrize("truncate", [False, True])
def test_write_a_real_result(tmp_path: Path, truncate: bool) -> None:
    config = SimConfig(
        processing_median=0.01,
        processing_sigma=0.0,
        status_limit=1000,
        status_window=1.0,
        truncate_rate=1.0 if truncate else 0.0,
    )
    sink = FolderSink(tmp_path)

    async def main() -> Written | None:
        async with Simulator(config) as sim, Client(sim.api_url, ApiKey(TEST_API_KEY)) as client:
            created = await client.create({"type": "jpeg", "params": PARAMS})
            await anyio.sleep(0.05)
            async with client.status(created.task_id) as answer:
                assert isinstance(answer, Ready)
                if truncate:
                    with pytest.raises(TransientError):
                        await sink.write(PurePosixPath("r/x.png"), "png", answer)
                    return None
                return await sink.write(PurePosixPath("r/x.png"), "png", answer)

    written = anyio.run(main)
    if truncate:
        assert files(tmp_path) == []
        return
    expected = render_result(PARAMS)
    assert written is not None
    assert (tmp_path / "r" / "x.png").read_bytes() == expected
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert leftovers(tmp_path) == []
