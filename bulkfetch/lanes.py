"""The run's two lanes, each carrying out the decisions for its kind of request.

* the **create lane** (:class:`CreateLane`) takes the next job to create from its queue,
  once the window, the quotas and the time box allow (``policy.quota_block``), records the
  intent in the ledger (``records.begin_create``), POSTs it, and records the task
  (``records.task_created``) as soon as the answer comes;
* the **status lane** (:class:`StatusLane`) spends every slot it may while a task is in
  flight, each on the task the ``Poller`` says is most likely to be ready, and, when the
  answer is the file, hands it to the sink (``records.file_written``).

Each lane has its own ``Limiter``. What a failure means (retry, outage, give up) is the
run's (``Outcomes.api_failure``), decided by ``policy``; a job's state is its ledger record.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from bulkfetch import policy, records
from bulkfetch.client import Failed, Pending
from bulkfetch.errors import ApiError, RateLimited, TaskGone
from bulkfetch.limiter.lane import Limiter
from bulkfetch.logs import JobTag
from bulkfetch.manifest.jobs import Job

if TYPE_CHECKING:
    from bulkfetch.engine import Run

__all__ = ["GRACE_ON_STOP", "CreateLane", "StatusLane", "job_tag"]

log = logging.getLogger(__name__)

#: Seconds a creation already sent may take to answer after a stop, so its task is kept.
GRACE_ON_STOP = 5.0


def job_tag(job: Job) -> JobTag:
    return JobTag(job.key, job.view_id, job.bm_type)


class CreateLane:
    """Jobs waiting to be created, and the loop that creates them."""

    def __init__(self, run: Run, limiter: Limiter) -> None:
        self.run = run
        self.limiter = limiter
        self.queue: list[tuple[float, int, str]] = []  # (not before, seq, key) to create
        self._seq: Iterator[int] = itertools.count()
        self.stopping = False
        self.scopes: set[anyio.CancelScope] = set()  # of the creations on their way
        self.launched = 0  # creations started by this run (for the run quota)
        # Set once the first creation is over: until then, nothing else is sent, so a
        # refused key or a wrong URL costs one request, not a burst of them.
        self.first_over = anyio.Event()
        self._day, self._day_base, self._launched_today = "", 0, 0  # (for the day quota)

    def __len__(self) -> int:
        return len(self.queue)

    def enqueue(self, key: str, not_before: float) -> None:
        heapq.heappush(self.queue, (not_before, next(self._seq), key))

    def stop(self) -> None:
        """Create nothing more; creations on their way get ``GRACE_ON_STOP`` to answer."""
        self.stopping = True
        grace = anyio.current_time() + GRACE_ON_STOP
        for scope in self.scopes:
            scope.deadline = min(scope.deadline, grace)

    def may_create(self, now: float) -> bool:
        """Whether the time box and the quotas leave room for one more creation."""
        run, cfg = self.run, self.run.config
        day = policy.today(now)
        if day != self._day:
            self._day, self._day_base = day, run.ledger.meta.created_on(day)
            self._launched_today = 0
        turnaround = 0.0
        if run.time_box is not None:
            # Turnaround of a task created now: its processing, plus its place in the
            # status lane's queue behind every task already in flight.
            ahead = len(run.poller) + run.counters.creating + 1
            turnaround = run.model.quantile(0.9) + ahead * run.status_limiter.interval
        why = policy.quota_block(
            launched=self.launched,
            max_creates=cfg.max_creates,
            created_today=self._day_base + self._launched_today,
            max_creates_per_day=cfg.max_creates_per_day,
            now=now,
            time_box=run.time_box,
            turnaround=turnaround,
        )
        if why and not run.counters.held_back:
            run.counters.held_back = why
            log.warning("no more creations: %s; %d jobs left for the next run", why, len(self))
            run.notify()
        return not why

    async def loop(self, tg: anyio.abc.TaskGroup) -> None:
        run = self.run
        while True:
            now = run.clock()
            if not self.queue or len(run.poller) + run.counters.creating >= run.window():
                await run.wait(math.inf)
                continue
            if self.queue[0][0] > now:
                await run.wait(self.queue[0][0])
                continue
            if not self.may_create(now):
                return
            if self.launched and not self.first_over.is_set():
                await self.first_over.wait()
                if self.stopping:
                    return
                continue
            due = await self.limiter.acquire()
            if not self.queue or self.queue[0][0] > run.clock():
                self.limiter.release_unused()
                continue
            _, _, key = heapq.heappop(self.queue)
            # Counted here, not in the spawned task: the quota check must see it at once.
            self.launched += 1
            self._launched_today += 1
            run.counters.creating += 1
            tg.start_soon(self._create_one, key, due)

    async def _create_one(self, key: str, due: float) -> None:
        try:
            await self._create(key, due)
        finally:
            # Only now, with the task in the poller or the job re-queued or failed, may
            # the run see "nothing creating" and conclude that it is finished.
            self.run.counters.creating -= 1
            self.first_over.set()
            self.run.notify()

    async def _create(self, key: str, due: float) -> None:
        """Create ``key``'s task in the create slot ``due`` (the limiter's clock)."""
        run = self.run
        job = run.jobs[key]
        # The intent is durable before the request leaves (``commit`` below): a crash from
        # then on is seen by the next run as a creation whose answer may have been lost.
        record = run.save(records.begin_create(run.record(key), now=run.clock()), soon=True)
        run.counters.create_calls += 1
        run.contact.begin(run.clock())
        if run.config.max_creates_per_day is not None:
            run.count_creates(1)  # durably before the POST: the quota must hold a crash
        # Shielded: cancelling the run must not cut off an answer that is on its way, or
        # the task would exist on EOS with nobody knowing its id. stop() shortens the
        # deadline to a grace period instead.
        grace = GRACE_ON_STOP if self.stopping else 2 * run.config.request_timeout
        scope = anyio.CancelScope(shield=True, deadline=anyio.current_time() + grace)
        self.scopes.add(scope)
        created = None
        sent = due
        try:
            with scope:
                await run.commit()
                sent = await self.limiter.sending(due)
                created = await run.client.create(job.api_body())
        except RateLimited as exc:
            pause = self.limiter.rate_limited_by_server(
                exc.retry_after, sent, resolution=exc.retry_after_resolution
            )
            run.counters.create_429 += 1
            run.save(records.undo_create(record, now=run.clock()))
            log.debug(
                "create lane: 429 (Retry-After %s), pausing %.3gs: %r",
                exc.retry_after,
                pause,
                self.limiter,
            )
            run.enqueue(key, run.clock())
            return
        except ApiError as exc:
            run.outcomes.api_failure(record, exc, creating=True)
            return
        finally:
            self.scopes.discard(scope)
        if created is None:
            log.warning("%s: no answer to a creation; the next run creates it again", job_tag(job))
            return
        self.limiter.succeeded(sent)
        run.outcomes.lane_answered(creating=True)
        run.learn_task_timeout(created.task_timeout)
        record = records.task_created(
            record,
            now=run.clock(),
            task_id=created.task_id,
            req_id=created.req_id,
            task_timeout=created.task_timeout,
        )
        run.save(record, soon=True)
        run.poller.add(key, created_at=record.created_at, deadline=record.deadline)
        log.info("%s: created task %s", job_tag(job), created.task_id)


class StatusLane:
    """The loop that polls created tasks and fetches their files."""

    def __init__(self, run: Run, limiter: Limiter, max_downloads: int) -> None:
        self.run = run
        self.limiter = limiter
        self._downloads = anyio.Semaphore(max_downloads)

    async def loop(self, tg: anyio.abc.TaskGroup) -> None:
        run, poller = self.run, self.run.poller
        while True:
            for key in poller.take_expired():
                run.outcomes.expired(key)
            poller.set_draining(not run.create.queue and not run.counters.creating)
            due = poller.wants_slot(run.clock())
            if due > run.clock():
                await run.wait(due)
                continue
            due = await self.limiter.acquire()
            chosen = poller.next_for_slot(run.clock())
            for expired in poller.take_expired():
                run.outcomes.expired(expired)
            if chosen is None:
                self.limiter.release_unused()
                continue
            await self._downloads.acquire()
            tg.start_soon(self._poll_one, chosen, due)

    async def _poll_one(self, key: str, due: float) -> None:
        try:
            await self._poll(key, due)
        finally:
            self._downloads.release()
            self.run.notify()

    async def _poll(self, key: str, due: float) -> None:
        """Poll ``key``'s task in the status slot ``due`` (the limiter's clock)."""
        run = self.run
        job = run.jobs[key]
        record = run.record(key)
        run.counters.status_calls += 1
        run.contact.begin(run.clock())
        sent = await self.limiter.sending(due)
        try:
            async with run.client.status(record.task_id) as answer:
                self.limiter.succeeded(sent)
                run.outcomes.lane_answered(creating=False)
                now = run.clock()
                if isinstance(answer, Pending):
                    run.counters.not_ready += 1
                    run.poller.not_ready(key, now=now)
                    log.debug("%s: not ready (%s)", job_tag(job), answer.word)
                    return
                if isinstance(answer, Failed):
                    run.poller.remove(key)
                    run.outcomes.fail(record, f"EOS task failed: {answer.message}", retryable=False)
                    return
                written = await run.sink.write(
                    job.relative_path(), job.expected_kind, answer, key=job.key
                )
        except RateLimited as exc:
            pause = self.limiter.rate_limited_by_server(
                exc.retry_after, sent, resolution=exc.retry_after_resolution
            )
            run.counters.status_429 += 1
            log.debug(
                "status lane: 429 (Retry-After %s), pausing %.3gs: %r",
                exc.retry_after,
                pause,
                self.limiter,
            )
            run.poller.retry_later(key, at=run.clock())
            return
        except TaskGone as exc:
            run.poller.remove(key)
            said = f" (HTTP {exc.status})" if exc.status else ""
            why = f"EOS no longer knows the task{said}"
            run.outcomes.expired(key, why=why, gone_at=run.clock())
            return
        except ApiError as exc:
            run.outcomes.api_failure(record, exc, creating=False)
            return
        # Learns from when the answer came (``now``), not from after the download.
        run.poller.found_ready(key, now=now)
        run.counters.done += 1
        run.counters.bytes += written.size
        done = records.file_written(
            record, now=run.clock(), path=written.path, size=written.size, sha256=written.sha256
        )
        run.save(done, soon=True)
        log.info(
            "%s: done, %s (%s)",
            job_tag(job),
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


def _size_and_speed(size: int, seconds: float) -> str:
    """``1234 bytes``; from a megabyte on, the speed to the fsynced file too."""
    if size < 1_000_000 or seconds <= 0:
        return f"{size} bytes"
    return f"{size} bytes, {size / seconds / 1e6:.0f} MB/s"
