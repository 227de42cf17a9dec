"""The public entry points: one call runs a manifest, from Python or from the CLI.

``run_async()`` is the whole run in the caller's event loop; ``run()`` wraps it for plain
code. Both read and validate the manifest first (nothing is sent if it is invalid), check
its colormaps with EOS (:mod:`bulkfetch.colormaps.check`; an unknown one is a manifest
error, nothing created), take the ledger's lock, drive the engine, write the report if
asked, and return a ``RunResult`` whose ``exit_code`` is the one the CLI exits with:

====  ==========================================================================
0     every job of the manifest is done
1     the run ended with some jobs failed (their reasons are in the ledger/report)
75    stopped with work left by the time box or a creation quota: run again later
2     bad usage or an invalid manifest: nothing was sent
3     the API refused the key (401/403) or the plan (402), or the URL is not the task API
      (it never answered as the task API in this run): the run stopped
4     a local storage problem (disk full, unwritable folder, damaged ledger)
5     another run holds the ledger's lock
130   interrupted by SIGINT; 143 by SIGTERM (everything is saved; run again)
====  ==========================================================================
"""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from bulkfetch.colormaps.check import TIMEOUT as COLORMAP_TIMEOUT
from bulkfetch.colormaps.check import check_colormaps
from bulkfetch.config import ApiKey, Rate, RunConfig, load_api_key, parse_duration
from bulkfetch.engine import Counters, Run
from bulkfetch.errors import (
    BulkfetchError,
    LedgerError,
    LedgerLocked,
    ManifestError,
    StorageError,
    UsageError,
    first_error,
)
from bulkfetch.ledger import Ledger
from bulkfetch.ledger_meta import RunSummary
from bulkfetch.limiter.share import RateSession, open_rates
from bulkfetch.limiter.store import check_store_url
from bulkfetch.manifest.cache import cache_path, load_manifest_cached
from bulkfetch.manifest.jobs import Manifest
from bulkfetch.manifest.shard import Shard
from bulkfetch.report.data import build_report, job_rows, lane_figures, write_report
from bulkfetch.sink.destination import store_url
from bulkfetch.sink.local import FolderSink
from bulkfetch.urls import check_service_url

__all__ = ["RunResult", "run", "run_async"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API, EXIT_STORAGE, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INCOMPLETE, EXIT_SIGINT, EXIT_SIGTERM = 75, 130, 143
#: Run summaries kept in the ledger's meta, newest last.
RUN_HISTORY = 50


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run ended with. ``jobs`` has one row per manifest job (see the report)."""

    exit_code: int
    outcome: str
    counters: Counters
    jobs: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK


#: Old keyword -> its name now (the CLI flag's). ``max_creates`` itself changed meaning
#: (it was the per-job cap, now ``max_creates_per_job``; it is now the run's quota, as
#: ``--max-creates``), so it cannot be kept for the old meaning.
RENAMED = {"max_creates_run": "max_creates", "max_creates_day": "max_creates_per_day"}


def _config(out: Path | str, options: Mapping[str, Any]) -> RunConfig:
    opts = dict(options)
    for old, new in RENAMED.items():
        if old in opts:
            if new in opts:
                raise UsageError(f"give {new}= only ({old}= is its old name)")
            warnings.warn(
                f"{old}= is now {new}=, as the CLI's flag", DeprecationWarning, stacklevel=4
            )
            opts[new] = opts.pop(old)
    for name in ("create_rate", "status_rate", "colormap_rate"):
        if isinstance(opts.get(name), str):
            opts[name] = Rate.parse(opts[name])
    for name in ("ledger", "report"):
        if isinstance(opts.get(name), str):
            opts[name] = Path(opts[name])
    if isinstance(opts.get("shard"), str):
        opts["shard"] = Shard.parse(opts["shard"])
    if "rate_store" in opts:
        opts["rate_store"] = check_store_url(str(opts["rate_store"]))
    for name in ("max_duration", "max_outage"):  # "50m", as the flag takes it
        if isinstance(opts.get(name), str):
            opts[name] = parse_duration(opts[name])
    try:
        return RunConfig(out=Path(out), **opts)
    except TypeError as exc:
        raise UsageError(str(exc)) from None


async def run_async(
    manifest: Manifest | Path | str,
    *,
    out: Path | str,
    api_key: ApiKey | str | None = None,
    api_key_file: Path | str | None = None,
    handle_signals: bool = False,
    config: RunConfig | None = None,
    progress: Callable[[Run], Coroutine[Any, Any, None]] | None = None,
    **options: Any,
) -> RunResult:
    """Run every job of ``manifest`` into ``out``; see ``RunConfig`` for ``options``.

    Each option is named as the ``run`` command's flag (``max_creates_per_job=4`` for
    ``--max-creates-per-job 4``, ``max_creates=100`` for ``--max-creates 100``); rates,
    durations and paths may be given as the flag's text (``create_rate="10/min"``,
    ``max_duration="50m"``).

    The key is ``api_key``, else read from ``api_key_file`` (as ``--api-key-file``), else
    from the ``EOS_API_KEY`` environment variable. With ``handle_signals``,
    SIGINT and SIGTERM stop the run cleanly (exit codes 130 and 143). ``progress`` is a
    coroutine function given the engine while it runs (the CLI's progress display).
    """
    cfg = replace(config, out=Path(out)) if config is not None else _config(out, options)
    store_url(cfg.out)  # a scheme other than s3/gs/az: a usage error
    check_service_url(cfg.api_url, "--api-url")
    key = api_key if isinstance(api_key, ApiKey) else None
    if isinstance(api_key, str):
        key = ApiKey(api_key)
    if key is None:
        key = load_api_key(Path(api_key_file) if api_key_file is not None else None)
    if not isinstance(manifest, Manifest):
        manifest = load_manifest_cached(Path(manifest), cache_path(cfg.ledger_path))
    if cfg.shard is not None:
        manifest = cfg.shard.select(manifest)
    for warning in manifest.warnings:
        log.warning("%s", warning)
    # Before anything is sent: a rate store named and not answering stops the run (exit 3).
    async with open_rates(cfg, key) as rates:
        return await _run_sharing(manifest, cfg, key, rates, handle_signals, progress)


async def _run_sharing(
    manifest: Manifest,
    cfg: RunConfig,
    key: ApiKey,
    rates: RateSession | None,
    handle_signals: bool,
    progress: Callable[[Run], Coroutine[Any, Any, None]] | None,
) -> RunResult:
    """The run once the manifest is read and the key's rate is shared (``rates``)."""
    if cfg.colormap_check:  # before anything is created: a typo would fail every job
        timeout = min(cfg.request_timeout, COLORMAP_TIMEOUT)
        notes = await check_colormaps(
            manifest.jobs,
            api_url=cfg.api_url,
            key=key,
            rate=cfg.colormap_rate,
            request_timeout=timeout,
        )
        for note in notes:
            log.warning("%s; carrying on", note)
    folder = [cfg.ledger_path.parent] if store_url(cfg.out) else [cfg.out]
    try:
        for path in folder:  # (a bucket is checked by the engine, before any creation)
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder {exc.filename}: {exc.strerror}") from None
    if not store_url(cfg.out):  # (a bucket is checked by the engine, before any creation)
        FolderSink(cfg.out).check_writable()
    with Ledger.open(cfg.ledger_path) as ledger:
        engine = Run(manifest, cfg, key, ledger, rates=rates)
        stopped_by: list[int] = []
        fatal: BulkfetchError | None = None
        try:
            try:
                async with anyio.create_task_group() as tg:
                    if handle_signals:
                        tg.start_soon(_watch_signals, engine, stopped_by)
                    if progress is not None:
                        tg.start_soon(progress, engine)
                    await engine.run()
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise first_error(group) from None
        except BulkfetchError as exc:
            if not exc.fatal and not isinstance(exc, StorageError):
                raise
            fatal = exc
        code, outcome = _outcome(engine.counters, stopped_by, fatal)
        _remember_run(ledger, manifest, engine.counters, outcome, code)
        rows = job_rows(manifest, ledger)
        report = build_report(
            manifest=manifest,
            ledger=ledger,
            counters=engine.counters.to_json(),
            lanes={
                "create": lane_figures(engine.create_limiter),
                "status": lane_figures(engine.status_limiter),
            },
            outcome=outcome,
        )
    if cfg.report is not None:
        write_report(cfg.report, report)
    return RunResult(code, outcome, engine.counters, rows, report)


def _outcome(
    counters: Counters, stopped_by: list[int], fatal: BulkfetchError | None
) -> tuple[int, str]:
    if isinstance(fatal, StorageError):
        return EXIT_STORAGE, f"stopped: {fatal}"
    if fatal is not None:
        return EXIT_API, f"stopped: {fatal}"
    if stopped_by:
        name = signal.Signals(stopped_by[0]).name
        code = EXIT_SIGINT if stopped_by[0] == signal.SIGINT else EXIT_SIGTERM
        return code, f"interrupted by {name}; run again to carry on"
    if counters.held_back and counters.done + counters.failed < counters.jobs:
        left = counters.jobs - counters.done - counters.failed
        return EXIT_INCOMPLETE, f"stopped with {left} jobs left: {counters.held_back}"
    if counters.failed:
        return EXIT_FAILED, f"{counters.failed} of {counters.jobs} jobs failed"
    if counters.done < counters.jobs:
        return EXIT_FAILED, f"{counters.jobs - counters.done} jobs not finished"
    return EXIT_OK, f"all {counters.jobs} jobs done"


def _remember_run(
    ledger: Ledger, manifest: Manifest, counters: Counters, outcome: str, code: int
) -> None:
    """Keep a short history of runs in the ledger, for ``plan`` estimates and the report."""
    summary = RunSummary(
        started=counters.started,
        finished=counters.finished,
        outcome=outcome,
        exit_code=code,
        requests={"create": counters.create_calls, "status": counters.status_calls},
        rate_limited={"create": counters.create_429, "status": counters.status_429},
        bytes=counters.bytes,
        downloaded=counters.done - counters.skipped_done,
        done=counters.done,
        failed=counters.failed,
        jobs=counters.jobs,
        manifest=str(manifest.path.resolve()),
    )
    meta = ledger.meta
    runs = (*meta.runs[-(RUN_HISTORY - 1) :], summary)
    try:
        ledger.save_meta(meta.replace(runs=runs, manifest=summary.manifest))
    except BulkfetchError as exc:  # a full disk must not hide the run's own outcome
        log.warning("could not record the run in the ledger: %s", exc)


async def _watch_signals(engine: Run, stopped_by: list[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not stopped_by:
                log.warning(
                    "%s: stopping; created tasks are kept for the next run",
                    signal.Signals(signum).name,
                )
                stopped_by.append(signum)
                engine.stop()


def run(
    manifest: Manifest | Path | str,
    *,
    out: Path | str,
    api_key: ApiKey | str | None = None,
    **options: Any,
) -> RunResult:
    """``run_async`` for code without an event loop."""

    async def main() -> RunResult:
        return await run_async(manifest, out=out, api_key=api_key, **options)

    return anyio.run(main)


def exit_code_for(exc: BulkfetchError) -> int:
    """The exit code for an error raised before or outside a run."""
    if isinstance(exc, LedgerLocked):
        return EXIT_LOCKED
    if isinstance(exc, UsageError | ManifestError):
        return EXIT_USAGE
    if isinstance(exc, StorageError | LedgerError):
        return EXIT_STORAGE
    if exc.fatal:
        return EXIT_API
    return EXIT_FAILED
