"""The run: one process driving every job of a manifest through the EOS task API.

A thin shell: the decisions are pure and live elsewhere, a job's state, its record and the
transitions that change it, in ``records``; what a run does with each job in
``scheduler.resume_action``; which task to poll next in the ``Poller``; retries, outages,
quotas, expiry and back-off in ``policy``. This module feeds them the clock and what the
API said, and carries out their decisions through two lanes (``lanes``: the create lane
and the status lane, each behind its own ``Limiter``), recording every state change in the
ledger before acting on it, so a run killed at any instant is resumed by the next one:
created tasks are polled rather than created again, done files are not fetched again.

A job's state lives in one place, its ledger record (``Run.record``), changed only through
``records``' transitions and stored with ``Run.save``. No coroutine per job: a job is a
record in the ledger and an entry in either the create queue or the poller.

``Run.stop()`` (SIGINT/SIGTERM in the CLI) stops creating, lets a creation already sent
finish for a moment so its task is not lost, and returns; everything is already saved.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from bulkfetch import policy, records
from bulkfetch.client import Client
from bulkfetch.config import ApiKey, RunConfig
from bulkfetch.contact import FirstContact
from bulkfetch.errors import BulkfetchError, first_error
from bulkfetch.lanes import CreateLane, StatusLane, job_tag
from bulkfetch.ledger import Ledger
from bulkfetch.limiter.burst import ServerKind
from bulkfetch.limiter.lane import Limiter
from bulkfetch.limiter.share import RateSession
from bulkfetch.manifest.jobs import Job, Manifest
from bulkfetch.outcomes import Outcomes
from bulkfetch.processing import ProcessingModel
from bulkfetch.records import JobRecord, JobState
from bulkfetch.scheduler import (
    Action,
    Poller,
    resume_action,
    safety_margin,
    window_size,
)
from bulkfetch.sink.factory import open_sink
from bulkfetch.urls import display_url

__all__ = ["Counters", "Run"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Counters:
    """What a run did, for progress, the report and the exit code."""

    jobs: int = 0
    done: int = 0
    skipped_done: int = 0
    failed: int = 0
    creating: int = 0
    create_calls: int = 0
    status_calls: int = 0
    create_429: int = 0
    status_429: int = 0
    not_ready: int = 0
    transient_errors: int = 0
    expired: int = 0
    lost_creates: int = 0
    bytes: int = 0
    #: Why creation stopped before the manifest was through ("" if it did not).
    held_back: str = ""
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Run:
    """One run of a manifest against the API, with its ledger open."""

    def __init__(
        self,
        manifest: Manifest,
        config: RunConfig,
        key: ApiKey,
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
        rates: RateSession | None = None,
    ) -> None:
        self.manifest = manifest
        #: The key's rate shared with other processes (``rate_share``), or None.
        self.rates = rates
        self.config = config
        self.ledger = ledger
        self.jobs: dict[str, Job] = {job.key: job for job in manifest.jobs}
        self.sink = open_sink(config.out)
        self.client = Client(config.api_url, key, timeout=config.request_timeout)
        self.server_kind = ServerKind()  # how the server counts, as a lane learns it
        self.create_limiter = self._limiter("create")
        self.status_limiter = self._limiter("status")
        self.model = ProcessingModel(
            prior_median=config.first_poll_after or 2 * config.status_rate.interval
        )
        self.model.load(ledger.meta.processing)
        self.counters = Counters(jobs=len(self.jobs))
        self.task_timeout = ledger.meta.task_timeout
        self.poller = Poller(
            self.model,
            margin=safety_margin(config.deadline_margin, self.task_timeout),
            min_gap=config.status_rate.interval,
            eager=not config.save_status_calls,
        )
        self.clock = clock
        self.create = CreateLane(self, self.create_limiter)
        self.status = StatusLane(self, self.status_limiter, config.max_downloads)
        self.time_box: float | None = None
        self.contact = FirstContact(display_url(config.api_url), config.first_contact_grace)
        self._wake = anyio.Event()
        self._waiting = 0  # lanes in wait()
        self._unflushed = anyio.Event()  # set when put_soon left records to write
        self._scope: anyio.CancelScope | None = None
        self.outcomes = Outcomes(self)

    def _limiter(self, lane: str) -> Limiter:
        cfg = self.config
        rate = cfg.create_rate if lane == "create" else cfg.status_rate
        shared = self.rates.lane(lane) if self.rates else None
        # Only creations burst: every one is known up front, where a status call made
        # before its task is likely ready is wasted.
        burst = cfg.burst and lane == "create"
        return Limiter(
            lane, rate, learn=cfg.learn_rates, shared=shared, burst=burst, kind=self.server_kind
        )

    # -- setup -------------------------------------------------------------------

    def plan(self) -> dict[Action, int]:
        """Decide what to do with each job, from the ledger; nothing is sent."""
        now = self.clock()
        tally: dict[Action, int] = {}
        for key, job in self.jobs.items():
            record = self.ledger.get(key)
            # Only a done job has a file to check: a stat per done job, nothing for the rest.
            file_ok = (
                record is not None
                and record.state is JobState.DONE
                and self.sink.file_ok(record.path, record.size)
            )
            action = resume_action(
                record,
                now=now,
                file_ok=file_ok,
                retry_failed=self.config.retry_failed,
                margin=self.poller.margin,
            )
            tally[action] = tally.get(action, 0) + 1
            self._start_job(job, record, action, now)
        return tally

    def _start_job(self, job: Job, record: JobRecord | None, action: Action, now: float) -> None:
        match action:
            case Action.SKIP_DONE:
                self.counters.done += 1
                self.counters.skipped_done += 1
            case Action.SKIP_FAILED | Action.WAIT_RETRY:
                self.counters.failed += 1
            case Action.POLL:
                assert record is not None
                self.poller.add(job.key, created_at=record.created_at, deadline=record.deadline)
            case Action.RECREATE_EXPIRED:
                assert record is not None
                self.counters.expired += 1
                log.info("%s: its task expired; creating again", job_tag(job))
                self.enqueue(job.key, max(now, record.deadline))
            case Action.RECREATE_LOST:
                assert record is not None
                self.counters.lost_creates += 1
                self.save(records.recover_lost(record, now=now))
                log.info("%s: creation answer was lost; creating again", job_tag(job))
                self.enqueue(job.key, now)
            case _:
                if record is None:
                    path = job.relative_path().as_posix()
                    self.save(
                        records.new_job(job.key, path=path, slot=job.slot, now=now), soon=True
                    )
                elif record.state is JobState.FAILED:  # --retry-failed, or its back-off is over
                    log.info("%s: failed before (%s); trying again", job_tag(job), record.reason)
                    self.save(records.retry(record, now=now))
                self.enqueue(job.key, now)

    # -- the run -----------------------------------------------------------------

    async def run(self) -> Counters:
        """Drive every job to done or failed, or until ``stop()``; returns the counters."""
        # Leftovers removed, done results checked, and results already at the destination
        # that the ledger does not know of (it was lost) taken as done: nothing is sent yet.
        # A --shard run leaves the other parts' temporary files alone: they may be writing.
        found = await self.sink.prepare(
            self.ledger.records(), self.jobs.values(), own_only=self.config.shard is not None
        )
        for record in found:
            self.ledger.put_soon(record)
        if found:
            self.ledger.flush()
            log.info("%d results already at the destination: not fetched again", len(found))
        tally = self.plan()
        log.info(
            "%d jobs: %s",
            len(self.jobs),
            ", ".join(f"{n} {a.value}" for a, n in sorted(tally.items())) or "nothing to do",
        )
        if self.config.max_duration is not None:
            self.time_box = self.counters.started + self.config.max_duration
        try:
            async with self.client, anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self.time_box is not None:
                    left = self.time_box - self.clock()
                    tg.cancel_scope.deadline = anyio.current_time() + left
                if not self._finished():
                    if self.rates is not None:
                        tg.start_soon(self.rates.serve)
                    tg.start_soon(self._flush_ledger)
                    tg.start_soon(self.outcomes.watch_first_contact)
                    tg.start_soon(self.create.loop, tg)
                    tg.start_soon(self.status.loop, tg)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self.counters.finished = self.clock()
            if self.time_box is not None and self.counters.finished >= self.time_box:
                self.counters.held_back = self.counters.held_back or "the time box ran out"
            self._save_meta()
        return self.counters

    def stop(self) -> None:
        """Stop creating and return promptly; created tasks stay in the ledger."""
        self.create.stop()
        if self._scope is not None:
            self._scope.cancel()

    def outage(self, lane: str) -> tuple[float, float] | None:
        """``(since, until)``, clock times, while ``lane`` ("create" or "status") waits out
        a server that seems down: since when, and until when its failures do not count
        against jobs. None when the lane's last request was answered. Read-only, for the
        progress display."""
        return self.outcomes.outage(lane)

    def _finished(self) -> bool:
        nothing_to_create = not self.create.queue or bool(self.counters.held_back)
        return nothing_to_create and len(self.poller) == 0 and self.counters.creating == 0

    def notify(self) -> None:
        """Something changed: wake the lanes waiting, and end the run if all is done."""
        # A new Event only when a lane waits on this one: planning a big resume notifies
        # once per queued job (50,000) with no lane started yet.
        if self._waiting:
            self._wake.set()
            self._wake = anyio.Event()
        if self._finished() and self._scope is not None:
            self._scope.cancel()

    async def wait(self, until: float) -> None:
        """Sleep until ``until`` (clock time) or until something changes."""
        delay = until - self.clock()
        if delay > 0:
            self._waiting += 1
            try:
                with anyio.move_on_after(min(delay, 3600.0)):
                    await self._wake.wait()
            finally:
                self._waiting -= 1

    def window(self) -> int:
        """How many tasks to keep in flight (``scheduler.window_size``, or the flag's)."""
        if self.config.max_in_flight is not None:
            return self.config.max_in_flight
        return window_size(
            status_interval=self.status_limiter.interval,
            model=self.model,
            task_timeout=self.task_timeout,
            margin=self.poller.margin,
        )

    # -- bookkeeping -------------------------------------------------------------

    def learn_task_timeout(self, task_timeout: float) -> None:
        """The API said how long tasks live: keep the deadline margin and the ledger in step."""
        if task_timeout != self.task_timeout:
            self.task_timeout = task_timeout
            self.poller.margin = safety_margin(self.config.deadline_margin, task_timeout)
            self.ledger.save_meta(self.ledger.meta.replace(task_timeout=task_timeout))

    def enqueue(self, key: str, not_before: float) -> None:
        """Create ``key``'s task from ``not_before`` (clock time) on."""
        self.create.enqueue(key, not_before)
        self.notify()

    def record(self, key: str) -> JobRecord:
        """``key``'s state: its ledger record (a new one for a job it does not know)."""
        record = self.ledger.get(key)
        if record is None:
            job = self.jobs[key]
            record = records.new_job(key, path=job.relative_path().as_posix(), slot=job.slot)
        return record

    def save(self, record: JobRecord, *, soon: bool = False) -> JobRecord:
        """Record a change durably, or with ``soon`` in the ledger's next group commit:
        for changes no request depends on (``_flush_ledger`` writes them within one turn of
        the event loop, a durable change before that takes them along)."""
        if soon:
            self.ledger.put_soon(record)
            self._unflushed.set()
        else:
            self.ledger.put(record)
        return record

    async def commit(self) -> None:
        """Make every change recorded so far durable, in a group commit: first let the
        other tasks ready in this turn of the loop record theirs (creations started
        together), then one write and one fsync for all; a no-op when a commit since then
        took ours along (``flush`` empties the staged records only once they are written).
        """
        await anyio.lowlevel.checkpoint()
        self.ledger.flush()

    async def _flush_ledger(self) -> None:
        while True:
            await self._unflushed.wait()
            self._unflushed = anyio.Event()
            self.ledger.flush()

    def count_creates(self, n: int) -> None:
        """Add ``n`` to today's creation count in the ledger (a week of days is kept)."""
        meta = self.ledger.meta
        by_day = policy.count_creates(meta.creates_by_day, now=self.clock(), n=n)
        self.ledger.save_meta(meta.replace(creates_by_day=by_day))

    def _save_meta(self) -> None:
        try:
            self.ledger.save_meta(self.ledger.meta.replace(processing=self.model.to_json()))
            if self.config.max_creates_per_day is None and self.counters.create_calls:
                self.count_creates(self.counters.create_calls)
        except BulkfetchError as exc:  # a full disk must not hide the run's own outcome
            log.warning("could not save what this run learned: %s", exc)
