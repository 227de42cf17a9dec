"""What a request's outcome means for its job and its lane, carried out for the run.

A failed request stops the run (a refused key, a URL that is not the API), fails the job
(a refusal that will not pass, retries spent, a task created too often), pauses the lane (an
outage: ``policy.LaneHealth``) or retries the job after its back-off (``policy.retry_in``);
an answer ends an outage. The decisions are ``policy``'s and ``records``'; this class keeps
each lane's health and the first-contact watch, and changes the job's record through the
run (``Run.save``).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, NoReturn

import anyio

from bulkfetch import policy, records
from bulkfetch.errors import ApiError
from bulkfetch.lanes import job_tag
from bulkfetch.manifest.geometry import multipolygon_advice
from bulkfetch.records import JobRecord

if TYPE_CHECKING:
    from bulkfetch.engine import Run

__all__ = ["Outcomes"]

log = logging.getLogger(__name__)


class Outcomes:
    """The run's reactions to answers and failures (see the module docstring)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._health = {"create": policy.LaneHealth(), "status": policy.LaneHealth()}
        self._contact_failing = anyio.Event()  # set at the first failure before contact

    def outage(self, lane: str) -> tuple[float, float] | None:
        """``(since, until)`` of ``lane``'s outage (see ``Run.outage``), or None."""
        since = self._health[lane].since
        return None if since is None else (since, since + self.run.config.max_outage)

    async def watch_first_contact(self) -> None:
        """Stop the run when the grace of a URL that never answered as the API runs out,
        even while the lanes wait out their back-off (see ``contact``)."""
        run = self.run
        await self._contact_failing.wait()
        while (due := run.contact.due()) is not None:
            await anyio.sleep(max(0.0, due - run.clock()))
            stop = run.contact.expired(run.clock())
            if stop is not None:
                self._stop_for(stop)

    def _stop_for(self, exc: ApiError) -> NoReturn:
        """Stop the run with ``exc``: creations on their way get the grace of a stop."""
        self.run.create.stop()
        raise exc

    def api_failure(self, record: JobRecord, exc: ApiError, *, creating: bool) -> None:
        """A request for ``record``'s job failed with ``exc``: stop the run, fail the job,
        pause the lane (an outage), or retry the job after its back-off (``policy``)."""
        run = self.run
        now = run.clock()
        stop = exc if exc.fatal else run.contact.failed(exc, now)
        if stop is not None:
            if creating:  # refused, or never reached the API: no task was made
                run.save(records.requeue(record, now=now, reason=str(stop)))
            self._stop_for(stop)
        if run.contact.since is not None:
            self._contact_failing.set()
        key = record.key
        if not exc.retryable:
            if creating:
                advice = multipolygon_advice(run.jobs[key].params.get("geometry"))
                self.fail(record, str(exc) + advice, retryable=False)
            else:
                run.poller.remove(key)
                self.fail(record, str(exc), retryable=False)
            return
        run.counters.transient_errors += 1
        lane = "create" if creating else "status"
        limiter = run.create_limiter if creating else run.status_limiter
        interval = limiter.configured.interval
        health, pause = self._health[lane].failed(
            key, now=now, max_outage=run.config.max_outage, interval=interval, draw=random.random()
        )
        self._health[lane] = health
        if pause is not None:  # the server seems down: the job keeps its retry budget
            limiter.pause(pause)
            if health.streak == policy.OUTAGE_STREAK:
                log.warning(
                    "%s lane: %d failures in a row (%s); the API seems down, pausing",
                    lane,
                    health.streak,
                    exc,
                )
            if creating:
                run.save(records.requeue(record, now=now, reason=str(exc)))
                run.enqueue(key, now)
            else:
                run.poller.retry_later(key, at=now)
            return
        errors = record.run_errors + 1
        delay = policy.retry_in(
            errors,
            max_errors=run.config.max_errors,
            base=run.config.backoff_base or 2 * interval,
            cap=run.config.backoff_cap,
            draw=random.random(),
        )
        if delay is None:
            run.poller.remove(key)
            self.fail(record, f"{errors - 1} retries failed; last: {exc}", retryable=True)
            return
        log.info("%s: %s; retrying in %.3gs", job_tag(run.jobs[key]), exc, delay)
        run.save(records.transient_failure(record, now=now, reason=str(exc)))
        if creating:
            run.enqueue(key, now + delay)
        else:
            run.poller.retry_later(key, at=now + delay)

    def lane_answered(self, *, creating: bool) -> None:
        """The API answered a request of this lane: no outage (any more)."""
        run = self.run
        run.contact.answered()
        lane = "create" if creating else "status"
        if self._health[lane].was_down:
            log.info("%s lane: the API answers again", lane)
        self._health[lane] = self._health[lane].answered()

    def expired(
        self,
        key: str,
        why: str = "the task expired before it could be fetched",
        gone_at: float | None = None,
    ) -> None:
        """``key``'s task expired (or EOS forgot it at ``gone_at``): create it again, or
        fail it once it was created as often as a job may be (``policy.expiry``)."""
        run = self.run
        record = run.record(key)
        run.counters.expired += 1
        now = run.clock()
        decision = policy.expiry(
            why,
            creates=record.run_creates,
            max_creates_per_job=run.config.max_creates_per_job,
            now=now,
            deadline=record.deadline,
            gone_at=gone_at,
        )
        if decision.give_up:
            self.fail(record, decision.reason, retryable=True)
            return
        log.info("%s: %s; creating again", job_tag(run.jobs[key]), why)
        run.save(records.requeue(record, now=now, reason=why))
        run.enqueue(key, decision.not_before)

    def fail(self, record: JobRecord, reason: str, *, retryable: bool) -> None:
        run = self.run
        run.counters.failed += 1
        run.save(records.fail(record, now=run.clock(), reason=reason, retryable=retryable))
        log.warning("%s: failed: %s", job_tag(run.jobs[record.key]), reason)
        run.notify()
