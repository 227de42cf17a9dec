"""The run: one process driving every job of a manifest through the EOS task API.

Two lanes share the process, each behind its own ``Limiter``:

* the **create lane** takes the next job to create, records the intent in the ledger
  (``creating``), POSTs it, and records the task (``created``) as soon as the answer comes;
* the **status lane** spends every slot it may while a task is in flight, each on the task
  the ``Poller`` says is most likely to be ready (with ``save_status_calls``, only once its
  odds are good), and, when the answer is the file, hands it to the ``Sink``.

The decisions are the scheduler's; this module only carries them out and records every
state change in the ledger before acting on it, so a run killed at any instant is resumed
by the next one: created tasks are polled rather than created again, done files are not
fetched again. No coroutine per job: a job is a record in the ledger and an entry in
either the create queue or the poller.

``Run.stop()`` (SIGINT/SIGTERM in the CLI) stops creating, lets a creation already sent
finish for a moment so its task is not lost, and returns; everything is already saved.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel

from bulkfetch.client import Client, Failed, Pending
from bulkfetch.config import ApiKey, RunConfig
from bulkfetch.contact import FirstContact
from bulkfetch.errors import ApiError, BulkfetchError, RateLimited, TaskGone, first_error
from bulkfetch.ledger import JobRecord, JobState, Ledger
from bulkfetch.limiter.lane import Limiter
from bulkfetch.limiter.share import RateSession
from bulkfetch.logs import JobTag
from bulkfetch.manifest.geometry import multipolygon_advice
from bulkfetch.manifest.jobs import Job, Manifest
from bulkfetch.processing import ProcessingModel
from bulkfetch.scheduler import (
    Action,
    Poller,
    resume_action,
    retry_backoff,
    safety_margin,
    window_size,
)
from bulkfetch.sink.destination import open_sink
from bulkfetch.urls import display_url

__all__ = ["Counters", "Run"]

log = logging.getLogger(__name__)

#: Seconds a creation already sent may take to answer after a stop, so its task is kept.
GRACE_ON_STOP = 5.0
#: Failures in a row on a lane, across jobs, that are taken for an outage.
OUTAGE_STREAK = 4
DEFAULT_TASK_TIMEOUT = 172800.0


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
        self.create_limiter = Limiter(
            "create",
            config.create_rate,
            learn=config.learn_rates,
            shared=rates.lane("create") if rates else None,
        )
        self.status_limiter = Limiter(
            "status",
            config.status_rate,
            learn=config.learn_rates,
            shared=rates.lane("status") if rates else None,
        )
        self.model = ProcessingModel(
            prior_median=config.first_poll_after or 2 * config.status_rate.interval
        )
        self.model.load(ledger.meta.get("processing"))
        self.counters = Counters(jobs=len(self.jobs))
        self.task_timeout = float(ledger.meta.get("task_timeout", DEFAULT_TASK_TIMEOUT))
        self.poller = Poller(
            self.model,
            margin=safety_margin(config.deadline_margin, self.task_timeout),
            min_gap=config.status_rate.interval,
            eager=not config.save_status_calls,
        )
        self._clock = clock
        self._queue: list[tuple[float, int, str]] = []  # (not before, seq, key) to create
        self._seq: Iterator[int] = itertools.count()
        self._creates: dict[str, int] = {}  # creations this run, per job
        self._errors: dict[str, int] = {}  # transient failures this run, per job
        self._wake = anyio.Event()
        self._waiting = 0  # lanes in _wait()
        self._unflushed = anyio.Event()  # set when put_soon left records to write
        self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._create_scopes: set[anyio.CancelScope] = set()
        self._time_box: float | None = None
        self._launched = 0  # creations started by this run (for the run quota)
        self._streak = {"create": 0, "status": 0}  # failures in a row per lane
        self._streak_jobs: dict[str, set[str]] = {"create": set(), "status": set()}
        self._outage_since: dict[str, float] = {}
        self._day, self._day_base, self._launched_today = "", 0, 0  # (for the day quota)
        self._downloads = anyio.Semaphore(config.max_downloads)
        self._contact = FirstContact(display_url(config.api_url), config.first_contact_grace)
        self._contact_failing = anyio.Event()  # set at the first failure before contact

    # -- setup -------------------------------------------------------------------

    def plan(self) -> dict[Action, int]:
        """Decide what to do with each job, from the ledger; nothing is sent."""
        now = self._clock()
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
                log.info("%s: its task expired; creating again", _short(job))
                self._enqueue(job.key, max(now, record.deadline))
            case Action.RECREATE_LOST:
                assert record is not None
                self.counters.lost_creates += 1
                self._put(
                    record,
                    state=JobState.PENDING,
                    lost_creates=record.lost_creates + 1,
                    reason="a creation's answer was lost when the last run stopped",
                )
                log.info("%s: creation answer was lost; creating again", _short(job))
                self._enqueue(job.key, now)
            case _:
                if record is None:
                    path = job.relative_path().as_posix()
                    self._put(JobRecord(key=job.key, path=path, slot=job.slot), soon=True)
                elif record.state is JobState.FAILED:  # --retry-failed, or its back-off is over
                    log.info("%s: failed before (%s); trying again", _short(job), record.reason)
                    self._put(record, state=JobState.PENDING)
                self._enqueue(job.key, now)

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
            self._time_box = self.counters.started + self.config.max_duration
        try:
            async with self.client, anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self._time_box is not None:
                    left = self._time_box - self._clock()
                    tg.cancel_scope.deadline = anyio.current_time() + left
                if not self._finished():
                    if self.rates is not None:
                        tg.start_soon(self.rates.serve)
                    tg.start_soon(self._flush_ledger)
                    tg.start_soon(self._watch_first_contact)
                    tg.start_soon(self._create_lane, tg)
                    tg.start_soon(self._status_lane, tg)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self.counters.finished = self._clock()
            if self._time_box is not None and self.counters.finished >= self._time_box:
                self.counters.held_back = self.counters.held_back or "the time box ran out"
            self._save_meta()
        return self.counters

    def stop(self) -> None:
        """Stop creating and return promptly; created tasks stay in the ledger."""
        self._stopping = True
        grace = anyio.current_time() + GRACE_ON_STOP
        for scope in self._create_scopes:
            scope.deadline = min(scope.deadline, grace)
        if self._scope is not None:
            self._scope.cancel()

    def outage(self, lane: str) -> tuple[float, float] | None:
        """``(since, until)``, clock times, while ``lane`` ("create" or "status") waits out
        a server that seems down: since when, and until when its failures do not count
        against jobs. None when the lane's last request was answered. Read-only, for the
        progress display."""
        since = self._outage_since.get(lane)
        return None if since is None else (since, since + self.config.max_outage)

    def _finished(self) -> bool:
        nothing_to_create = not self._queue or bool(self.counters.held_back)
        return nothing_to_create and len(self.poller) == 0 and self.counters.creating == 0

    def _may_create(self, now: float) -> bool:
        """Whether the time box and the quotas leave room for one more creation."""
        cfg = self.config
        why = ""
        today = _today(now)
        if today != self._day:
            self._day, self._day_base, self._launched_today = today, self._creates_today(), 0
        if cfg.max_creates is not None and self._launched >= cfg.max_creates:
            why = f"the run's creation quota ({cfg.max_creates}) is used"
        elif (
            cfg.max_creates_per_day is not None
            and self._day_base + self._launched_today >= cfg.max_creates_per_day
        ):
            why = f"today's creation quota ({cfg.max_creates_per_day}) is used"
        elif self._time_box is not None:
            # Turnaround of a task created now: its processing, plus its place in the
            # status lane's queue behind every task already in flight.
            ahead = len(self.poller) + self.counters.creating + 1
            turnaround = self.model.quantile(0.9) + ahead * self.status_limiter.interval
            if now + turnaround > self._time_box:
                why = "the time box leaves no room to see another task through"
        if why and not self.counters.held_back:
            self.counters.held_back = why
            log.warning(
                "no more creations: %s; %d jobs left for the next run", why, len(self._queue)
            )
            self._notify()
        return not why

    def _creates_today(self) -> int:
        return int(self.ledger.meta.get("creates_by_day", {}).get(_today(self._clock()), 0))

    def _count_creates(self, n: int) -> None:
        """Add ``n`` to today's creation count in the ledger (a week of days is kept)."""
        now = self._clock()
        today, week_ago = _today(now), _today(now - 7 * 86400)
        by_day = {
            day: count
            for day, count in self.ledger.meta.get("creates_by_day", {}).items()
            if day >= week_ago
        }
        by_day[today] = int(by_day.get(today, 0)) + n
        self.ledger.set_meta("creates_by_day", by_day)

    def _notify(self) -> None:
        # A new Event only when a lane waits on this one: planning a big resume notifies
        # once per queued job (50,000) with no lane started yet.
        if self._waiting:
            self._wake.set()
            self._wake = anyio.Event()
        if self._finished() and self._scope is not None:
            self._scope.cancel()

    async def _wait(self, until: float) -> None:
        """Sleep until ``until`` (clock time) or until something changes."""
        delay = until - self._clock()
        if delay > 0:
            self._waiting += 1
            try:
                with anyio.move_on_after(min(delay, 3600.0)):
                    await self._wake.wait()
            finally:
                self._waiting -= 1

    def window(self) -> int:
        if self.config.max_in_flight is not None:
            return self.config.max_in_flight
        return window_size(
            status_interval=self.status_limiter.interval,
            model=self.model,
            task_timeout=self.task_timeout,
            margin=self.poller.margin,
        )

    async def _create_lane(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            now = self._clock()
            in_flight = len(self.poller) + self.counters.creating
            if not self._queue or in_flight >= self.window():
                await self._wait(math.inf)
                continue
            if self._queue[0][0] > now:
                await self._wait(self._queue[0][0])
                continue
            if not self._may_create(now):
                return
            due = await self.create_limiter.acquire()
            if not self._queue or self._queue[0][0] > self._clock():
                self.create_limiter.release_unused()
                continue
            _, _, key = heapq.heappop(self._queue)
            # Counted here, not in the spawned task: the quota check must see it at once.
            self._launched += 1
            self._launched_today += 1
            self.counters.creating += 1
            tg.start_soon(self._create_one, key, due)

    async def _create_one(self, key: str, due: float) -> None:
        try:
            await self._create(key, due)
        finally:
            # Only now, with the task in the poller or the job re-queued or failed, may
            # the run see "nothing creating" and conclude that it is finished.
            self.counters.creating -= 1
            self._notify()

    async def _create(self, key: str, due: float) -> None:
        """Create ``key``'s task in the create slot ``due`` (the limiter's clock)."""
        job = self.jobs[key]
        record = self._record(key)
        self._creates[key] = self._creates.get(key, 0) + 1
        # The intent is durable before the request leaves (``_commit`` below): a crash from
        # then on is seen by the next run as a creation whose answer may have been lost.
        record = self._put(record, soon=True, state=JobState.CREATING, creates=record.creates + 1)
        self.counters.create_calls += 1
        self._contact.begin(self._clock())
        if self.config.max_creates_per_day is not None:
            self._count_creates(1)  # durably before the POST: the quota must hold a crash
        # Shielded: cancelling the run must not cut off an answer that is on its way, or
        # the task would exist on EOS with nobody knowing its id. stop() shortens the
        # deadline to a grace period instead.
        grace = GRACE_ON_STOP if self._stopping else 2 * self.config.request_timeout
        scope = anyio.CancelScope(shield=True, deadline=anyio.current_time() + grace)
        self._create_scopes.add(scope)
        created = None
        sent = due
        try:
            with scope:
                await self._commit()
                sent = await self.create_limiter.sending(due)
                created = await self.client.create(job.api_body())
        except RateLimited as exc:
            pause = self.create_limiter.rate_limited_by_server(exc.retry_after, sent)
            self.counters.create_429 += 1
            self._creates[key] -= 1
            self._put(record, state=JobState.PENDING, creates=record.creates - 1)
            log.debug("create lane: 429, pausing %.3gs", pause)
            self._enqueue(key, self._clock())
            return
        except ApiError as exc:
            self._api_failure(key, record, exc, creating=True)
            return
        finally:
            self._create_scopes.discard(scope)
        if created is None:
            log.warning("%s: no answer to a creation; the next run creates it again", _short(job))
            return
        self.create_limiter.succeeded(sent)
        self._lane_ok(creating=True)
        now = self._clock()
        if created.task_timeout != self.task_timeout:
            self.task_timeout = created.task_timeout
            self.poller.margin = safety_margin(self.config.deadline_margin, self.task_timeout)
            self.ledger.set_meta("task_timeout", created.task_timeout)
        self._put(
            record,
            soon=True,
            state=JobState.CREATED,
            task_id=created.task_id,
            req_id=created.req_id,
            created_at=now,
            deadline=now + created.task_timeout,
            reason="",
        )
        self.poller.add(key, created_at=now, deadline=now + created.task_timeout)
        log.info("%s: created task %s", _short(job), created.task_id)

    async def _status_lane(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            for key in self.poller.take_expired():
                self._expired(key)
            self.poller.set_draining(not self._queue and not self.counters.creating)
            due = self.poller.wants_slot(self._clock())
            if due > self._clock():
                await self._wait(due)
                continue
            due = await self.status_limiter.acquire()
            chosen = self.poller.next_for_slot(self._clock())
            for expired in self.poller.take_expired():
                self._expired(expired)
            if chosen is None:
                self.status_limiter.release_unused()
                continue
            await self._downloads.acquire()
            tg.start_soon(self._poll_one, chosen, due)

    async def _poll_one(self, key: str, due: float) -> None:
        try:
            await self._poll(key, due)
        finally:
            self._downloads.release()
            self._notify()

    async def _poll(self, key: str, due: float) -> None:
        """Poll ``key``'s task in the status slot ``due`` (the limiter's clock)."""
        job = self.jobs[key]
        record = self._record(key)
        self.counters.status_calls += 1
        self._contact.begin(self._clock())
        sent = await self.status_limiter.sending(due)
        try:
            async with self.client.status(record.task_id) as answer:
                self.status_limiter.succeeded(sent)
                self._lane_ok(creating=False)
                now = self._clock()
                if isinstance(answer, Pending):
                    self.counters.not_ready += 1
                    self.poller.not_ready(key, now=now)
                    log.debug("%s: not ready (%s)", _short(job), answer.word)
                    return
                if isinstance(answer, Failed):
                    self.poller.remove(key)
                    self._fail(key, record, f"EOS task failed: {answer.message}", retryable=False)
                    return
                written = await self.sink.write(
                    job.relative_path(), job.expected_kind, answer, key=job.key
                )
        except RateLimited as exc:
            pause = self.status_limiter.rate_limited_by_server(exc.retry_after, sent)
            self.counters.status_429 += 1
            log.debug("status lane: 429, pausing %.3gs", pause)
            self.poller.retry_later(key, at=self._clock())
            return
        except TaskGone:
            self.poller.remove(key)
            self._expired(key, why="EOS no longer knows the task (404)", gone_at=self._clock())
            return
        except ApiError as exc:
            self._api_failure(key, record, exc, creating=False)
            return
        # Learns from when the answer came (``now``), not from after the download.
        self.poller.found_ready(key, now=now)
        self.counters.done += 1
        self.counters.bytes += written.size
        self._put(
            record,
            soon=True,
            state=JobState.DONE,
            path=written.path,
            size=written.size,
            sha256=written.sha256,
            reason="",
        )
        log.info(
            "%s: done, %s (%s)",
            _short(job),
            written.path,
            _size_and_speed(written.size, written.seconds),
            extra={
                "fields": {
                    "path": written.path,
                    "bytes": written.size,
                    "seconds": round(written.seconds, 6),
                    "stream_seconds": round(written.stream_seconds, 6),
                }
            },
        )

    # -- outcomes ----------------------------------------------------------------

    async def _watch_first_contact(self) -> None:
        """Stop the run when the grace of a URL that never answered as the API runs out,
        even while the lanes wait out their back-off (see ``contact``)."""
        await self._contact_failing.wait()
        while (due := self._contact.due()) is not None:
            await anyio.sleep(max(0.0, due - self._clock()))
            stop = self._contact.expired(self._clock())
            if stop is not None:
                self._stop_for(stop)

    def _stop_for(self, exc: ApiError) -> NoReturn:
        """Stop the run with ``exc``: creations on their way get the grace of a stop."""
        self._stopping = True
        grace = anyio.current_time() + GRACE_ON_STOP
        for scope in self._create_scopes:
            scope.deadline = min(scope.deadline, grace)
        raise exc

    def _api_failure(self, key: str, record: JobRecord, exc: ApiError, *, creating: bool) -> None:
        stop = exc if exc.fatal else self._contact.failed(exc, self._clock())
        if stop is not None:
            if creating:  # refused, or never reached the API: no task was made
                self._put(record, state=JobState.PENDING, reason=str(stop))
            self._stop_for(stop)
        if self._contact.since is not None:
            self._contact_failing.set()
        job = self.jobs[key]
        if not exc.retryable:
            if creating:
                advice = multipolygon_advice(job.params.get("geometry"))
                self._fail(key, record, str(exc) + advice, retryable=False)
            else:
                self.poller.remove(key)
                self._fail(key, record, str(exc), retryable=False)
            return
        self.counters.transient_errors += 1
        if self._lane_outage(creating, exc, key):
            if creating:
                self._put(record, state=JobState.PENDING, reason=str(exc))
                self._enqueue(key, self._clock())
            else:
                self.poller.retry_later(key, at=self._clock())
            return
        errors = self._errors.get(key, 0) + 1
        self._errors[key] = errors
        if errors > self.config.max_errors:
            self.poller.remove(key)
            self._fail(key, record, f"{errors - 1} retries failed; last: {exc}", retryable=True)
            return
        lane = self.create_limiter if creating else self.status_limiter
        base = self.config.backoff_base or 2 * lane.configured.interval
        delay = _backoff(errors, base, self.config.backoff_cap)
        log.info("%s: %s; retrying in %.3gs", _short(job), exc, delay)
        if creating:
            self._put(record, state=JobState.PENDING, errors=record.errors + 1, reason=str(exc))
            self._enqueue(key, self._clock() + delay)
        else:
            self._put(record, errors=record.errors + 1, reason=str(exc))
            self.poller.retry_later(key, at=self._clock() + delay)

    def _lane_ok(self, creating: bool) -> None:
        self._contact.answered()
        lane = "create" if creating else "status"
        if self._streak[lane] >= OUTAGE_STREAK:
            log.info("%s lane: the API answers again", lane)
        self._streak[lane] = 0
        self._streak_jobs[lane].clear()
        self._outage_since.pop(lane, None)

    def _lane_outage(self, creating: bool, exc: ApiError, key: str) -> bool:
        """Whether a failure is part of a server-wide outage, and if so pause the lane.

        Several failures in a row across jobs say the server (or the network) is down,
        not that these jobs are bad: the lane waits with back-off and the jobs keep their
        retry budgets, for up to ``max_outage`` seconds in all.
        """
        lane = "create" if creating else "status"
        self._streak[lane] += 1
        self._streak_jobs[lane].add(key)
        streak = self._streak[lane]
        # One job failing again and again is that job's problem, not an outage.
        if streak < OUTAGE_STREAK or len(self._streak_jobs[lane]) < 2:
            return False
        now = self._clock()
        since = self._outage_since.setdefault(lane, now)
        if now - since > self.config.max_outage:
            return False
        limiter = self.create_limiter if creating else self.status_limiter
        pause = _backoff(streak - OUTAGE_STREAK + 1, 2 * limiter.configured.interval, 60.0)
        limiter.pause(pause)
        if streak == OUTAGE_STREAK:
            log.warning(
                "%s lane: %d failures in a row (%s); the API seems down, pausing", lane, streak, exc
            )
        return True

    def _expired(
        self,
        key: str,
        why: str = "the task expired before it could be fetched",
        gone_at: float | None = None,
    ) -> None:
        record = self._record(key)
        self.counters.expired += 1
        if self._creates.get(key, 0) >= self.config.max_creates_per_job:
            self._fail(key, record, f"{why}, {self._creates[key]} times", retryable=True)
            return
        log.info("%s: %s; creating again", _short(self.jobs[key]), why)
        self._put(record, state=JobState.PENDING, reason=why)
        # Not polled within the safety margin, but not created again before its deadline
        # either: until then the old task may still be alive on EOS.
        self._enqueue(key, max(self._clock(), record.deadline if gone_at is None else gone_at))

    def _fail(self, key: str, record: JobRecord, reason: str, *, retryable: bool) -> None:
        self.counters.failed += 1
        failures = record.failures + 1
        retry_at = self._clock() + retry_backoff(failures) if retryable else 0.0
        self._put(
            record,
            state=JobState.FAILED,
            reason=reason,
            retryable=retryable,
            failures=failures,
            retry_at=retry_at,
        )
        log.warning("%s: failed: %s", _short(self.jobs[key]), reason)
        self._notify()

    # -- bookkeeping -------------------------------------------------------------

    def _enqueue(self, key: str, not_before: float) -> None:
        heapq.heappush(self._queue, (not_before, next(self._seq), key))
        self._notify()

    def _record(self, key: str) -> JobRecord:
        record = self.ledger.get(key)
        if record is None:
            job = self.jobs[key]
            record = JobRecord(key=key, path=job.relative_path().as_posix(), slot=job.slot)
        return record

    def _put(self, record: JobRecord, *, soon: bool = False, **changes: Any) -> JobRecord:
        """Record a change durably, or with ``soon`` in the ledger's next group commit:
        for changes no request depends on (``_flush_ledger`` writes them within one turn of
        the event loop, a durable change before that takes them along)."""
        changes["updated_at"] = self._clock()
        updated = record.replace(**changes)
        if soon:
            self.ledger.put_soon(updated)
            self._unflushed.set()
        else:
            self.ledger.put(updated)
        return updated

    async def _commit(self) -> None:
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

    def _save_meta(self) -> None:
        try:
            self.ledger.set_meta("processing", self.model.to_json())
            if self.config.max_creates_per_day is None and self.counters.create_calls:
                self._count_creates(self.counters.create_calls)
        except BulkfetchError as exc:  # a full disk must not hide the run's own outcome
            log.warning("could not save what this run learned: %s", exc)


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with full jitter in its upper half: base * 2**(n-1), capped."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _today(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def _short(job: Job) -> JobTag:
    return JobTag(job.key, job.view_id, job.bm_type)


def _size_and_speed(size: int, seconds: float) -> str:
    """``1234 bytes``; from a megabyte on, the speed to the fsynced file too."""
    if size < 1_000_000 or seconds <= 0:
        return f"{size} bytes"
    return f"{size} bytes, {size / seconds / 1e6:.0f} MB/s"
