"""What the HTML report shows, read from a ledger, its manifest and the result files.

Contract: :func:`collect` reads a ledger (opened read-only, so it is safe while a run goes
on), the manifest if there is one, and the result files, into plain :class:`ReportData`
that :mod:`bulkfetch.report.page` renders. Thumbnails are made one file at a time (at most
``max_thumbs``, in path order); a file that is missing or cannot be read gets a tile saying
why. A bucket destination's objects are copied one at a time for as long as one is read.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bulkfetch._version import __version__
from bulkfetch.ledger import JobState, Ledger
from bulkfetch.ledger_meta import RunSummary
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.report.failures import group_failures
from bulkfetch.report.thumbnails import ThumbnailError, thumbnail
from bulkfetch.sink.destination import store_url

if TYPE_CHECKING:
    from bulkfetch.sink.object_store import ObjectStore

__all__ = ["MAX_THUMBS", "STATES", "ReportData", "RunFigures", "Tile", "collect", "run_figures"]

MAX_THUMBS = 2000
"""Thumbnails on one page, at most: the rest are counted, not shown."""
_MAX_REASONS = 200  # failure reasons listed
#: The states the page counts, in its order.
STATES = ("done", "failed", "created", "creating", "pending")


@dataclass(frozen=True, slots=True)
class Tile:
    """One done job on the contact sheet. ``thumb`` is JPEG bytes, or empty with ``problem``."""

    key: str
    path: str
    view_id: str = ""
    bm_type: str = ""
    geometry: Any = None
    thumb: bytes = b""
    problem: str = ""
    note: str = ""  # shown under the caption, e.g. a size that differs from the ledger's


@dataclass(frozen=True, slots=True)
class RunFigures:
    """Figures of one run, or the sum over runs (``runs`` > 1)."""

    runs: int = 0
    started: float = 0.0
    elapsed: float = 0.0
    outcome: str = ""
    requests: Mapping[str, int] = field(default_factory=dict)
    rate_limited: Mapping[str, int] = field(default_factory=dict)
    bytes: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, as plain data (see :func:`render_html`)."""

    title: str
    ledger: str
    generated: str
    version: str = __version__
    manifest: str = ""
    notes: Sequence[str] = ()  # things the reader should know: manifest not found, ...
    counts: Mapping[str, int] = field(default_factory=dict)
    last_run: RunFigures | None = None
    all_runs: RunFigures | None = None
    failures: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()  # reason, [(key, view_id)]
    more_reasons: int = 0
    tiles: Sequence[Tile] = ()
    hidden_tiles: int = 0
    thumb_size: int = 160


def run_figures(runs: Sequence[RunSummary]) -> tuple[RunFigures | None, RunFigures | None]:
    """The last run's figures and the sum over all runs, from the ledger's ``runs`` (or None)."""
    figures = [
        RunFigures(
            runs=1,
            started=run.started,
            elapsed=max(0.0, run.finished - run.started) if run.finished else 0.0,
            outcome=run.outcome,
            requests=dict(run.requests),
            rate_limited=dict(run.rate_limited),
            bytes=run.bytes,
            done=run.done,
            failed=run.failed,
        )
        for run in runs
    ]
    if not figures:
        return None, None

    def total(name: str) -> dict[str, int]:
        sums: Counter[str] = Counter()
        for f in figures:
            sums.update(getattr(f, name))
        return dict(sums)

    overall = RunFigures(
        runs=len(figures),
        started=min((f.started for f in figures if f.started), default=0.0),
        elapsed=sum(f.elapsed for f in figures),
        requests=total("requests"),
        rate_limited=total("rate_limited"),
        bytes=sum(f.bytes for f in figures),
        done=figures[-1].done,
        failed=figures[-1].failed,
    )
    return figures[-1], overall


def _inside(base: Path, relative: str) -> Path | None:
    """``base / relative`` if ``relative`` is a plain relative path (no ``..``), else None."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative:
        return None
    return base.joinpath(*pure.parts)


def _readable(
    store: ObjectStore | None, relative: str, path: Path
) -> contextlib.AbstractContextManager[Path]:
    """A local file to read the result from: ``path``, or the object copied for the time
    of the ``with`` (one at a time: the report never holds more than one result)."""
    return contextlib.nullcontext(path) if store is None else store.fetched(relative)


def collect(
    ledger: Ledger,
    manifest: Manifest | None,
    out_dir: Path,
    *,
    title: str = "",
    thumb_size: int = 160,
    max_thumbs: int = MAX_THUMBS,
    notes: Iterable[str] = (),
    now: datetime | None = None,
) -> ReportData:
    """Read ``ledger``, ``manifest`` and the files under ``out_dir`` into :class:`ReportData`.

    Jobs are the ledger's records plus the manifest's jobs it does not hold yet (pending).
    Thumbnails are made one file at a time, for at most ``max_thumbs`` done jobs.
    """
    records = dict(ledger.records())
    jobs = {job.key: job for job in manifest.jobs} if manifest is not None else {}
    states: Counter[str] = Counter(str(r.state) for r in records.values())
    states["pending"] += sum(1 for key in jobs if key not in records)
    counts = {s: states.get(s, 0) for s in STATES} | {"jobs": len(records.keys() | jobs.keys())}

    # Grouped by reason without its job-specific parts (view_id, ids, numbers).
    reasons = group_failures(
        (records[key].reason, (key, jobs[key].view_id if key in jobs else ""))
        for key in sorted(records)
        if records[key].state is JobState.FAILED
    )

    done = sorted(
        (r for r in records.values() if r.state is JobState.DONE), key=lambda r: (r.path, r.key)
    )
    tiles = []
    url = store_url(out_dir)
    store = None
    if url is not None and done:
        from bulkfetch.sink.object_store import ObjectStore

        store = ObjectStore(url)
    for record in done[:max_thumbs]:
        job = jobs.get(record.key)
        path = _inside(out_dir, record.path)
        thumb, problem, note = b"", "", ""
        if path is None:
            problem = "the ledger's path leaves the output folder: not read"
        else:
            try:
                with _readable(store, record.path, path) as local:
                    thumb = thumbnail(local, thumb_size)
                    if record.size and local.stat().st_size != record.size:
                        note = "size differs from the ledger's: the file was changed"
            except ThumbnailError as exc:
                problem = str(exc)
            except FileNotFoundError:
                problem = "file missing"
            except OSError as exc:
                problem = f"cannot read: {exc.strerror or exc}"
        tiles.append(
            Tile(
                key=record.key,
                path=record.path,
                view_id=job.view_id if job else "",
                bm_type=job.bm_type if job else "",
                geometry=job.params.get("geometry") if job else None,
                thumb=thumb,
                problem=problem,
                note=note,
            )
        )
    last, overall = run_figures(ledger.meta.runs)
    stamp = (now or datetime.now().astimezone()).isoformat(sep=" ", timespec="seconds")
    return ReportData(
        title=title or f"bulkfetch report: {ledger.path.parent.name or ledger.path.name}",
        ledger=str(ledger.path),
        generated=stamp,
        manifest=str(manifest.path) if manifest is not None else "",
        notes=tuple(notes),
        counts=counts,
        last_run=last,
        all_runs=overall,
        failures=[(group.title, group.jobs) for group in reasons[:_MAX_REASONS]],
        more_reasons=max(0, len(reasons) - _MAX_REASONS),
        tiles=tiles,
        hidden_tiles=max(0, len(done) - max_thumbs),
        thumb_size=thumb_size,
    )
