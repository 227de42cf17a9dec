"""Every error bulkfetch raises, in one tree.

::

    BulkfetchError                  anything bulkfetch raises on purpose
    ├── UsageError                  a flag, rate, path or key the user gave is unusable    (exit 2)
    ├── ManifestError               the manifest is invalid; holds every Problem found     (exit 2)
    │   └── FieldsError             a fields file (for search) is invalid                   (exit 2)
    ├── LedgerError                 the ledger cannot be used as it is
    │   ├── LedgerCorrupt           a bad record in the middle, or not a bulkfetch ledger
    │   ├── LedgerVersionError      written by a newer bulkfetch; never overwritten
    │   └── LedgerLocked            another run holds the ledger right now
    ├── StorageError                writing a result or the ledger failed (disk full, fsync)
    ├── RateStoreError              the shared rate store (--rate-store) cannot be reached at
    │                               the start (exit 3); mid-run, the lanes fall back instead
    └── ApiError                    the EOS API answered something other than what we asked for
        ├── AuthError               401/402/403: the key, plan or credit is refused; the run
        │                           stops (fatal)
        ├── EndpointError           the API URL is not a task API (404/405/410 on create, or
        │                           no answer as the task API from it yet) (fatal)
        ├── RateLimited             429 (or "rate limit" under another code): the lane
        │                           pauses; never a job's fault (retryable)
        ├── TaskGone                404/410 on a task: expired or never existed; create it again
        ├── BadRequest              other 4xx on create: this job's parameters are wrong
        │                           (or a search's query)
        └── TransientError          connection errors, timeouts, 5xx, truncated or wrong
            │                       bodies: retried with back-off within the job's budget
            └── NotTheApi           an answer no task API gives (an HTML page, a 2xx that is
                                    not its JSON): before the API has answered as itself
                                    in a run, it stops the run as an EndpointError

A task that EOS reports as failed is not an error of the call that asked: the status
call answers ``client.Failed`` (the server's message kept), and the engine records the
job as failed, not retried (the same parameters fail the same way).

How an HTTP answer maps onto ``ApiError`` is :mod:`bulkfetch._http`'s ``error_for``.
Retry decisions read ``retryable`` (may succeed later) and ``fatal`` (nothing else in the
run can succeed either: stop it); nothing compares exact exception types to decide
whether to try again. Messages never contain the API key or a URL that carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequest",
    "BulkfetchError",
    "EndpointError",
    "FieldsError",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerLocked",
    "LedgerVersionError",
    "ManifestError",
    "NotTheApi",
    "Problem",
    "RateLimited",
    "RateStoreError",
    "StorageError",
    "TaskGone",
    "TransientError",
    "UsageError",
    "first_error",
]


class BulkfetchError(Exception):
    """Base of everything bulkfetch raises on purpose.

    ``retryable`` says whether doing the same thing again later may succeed.
    """

    retryable: bool = False
    fatal: bool = False


class UsageError(BulkfetchError):
    """Raised when an option, rate, path or key given by the user cannot be used."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest, located precisely enough to fix it.

    ``where`` is a human location such as ``line 12`` or ``feature 3``; ``field`` is the
    parameter name (dotted for nested places such as ``geometry.coordinates``), or ``""``
    when the problem is the whole record.
    """

    file: str
    where: str
    field: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}: {self.where}"
        if self.field:
            place += f": {self.field}"
        return f"{place}: {self.message}"


class ManifestError(BulkfetchError):
    """Raised when a manifest cannot be read or fails validation.

    It carries every problem found, not just the first, so one edit fixes them all.
    """

    #: What the file is, for messages.
    what = "manifest"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(shown + more)


class FieldsError(ManifestError):
    """Raised when a file of fields to search over cannot be read or fails validation."""

    what = "fields file"


class LedgerError(BulkfetchError):
    """Raised when the ledger cannot be used as it is."""


class LedgerCorrupt(LedgerError):
    """Raised when the ledger is not bulkfetch's, or a record other than the last is bad.

    A torn *last* journal line is the trace of a crash and is dropped silently; damage
    anywhere else is corruption, and bulkfetch stops rather than guess.
    """


class LedgerVersionError(LedgerError):
    """Raised when the ledger was written by a newer format version; it is left untouched."""


class LedgerLocked(LedgerError):
    """Raised when another live process holds the ledger's lock.

    The lock is an OS lock, released by the kernel when its holder dies, so a crashed
    run never leaves it stuck.
    """


class StorageError(BulkfetchError):
    """Raised when writing to disk fails: disk full, permission, fsync.

    A failed fsync is not retried: the run stops, and the next run recovers.
    """


class RateStoreError(BulkfetchError):
    """Raised when the shared rate store cannot be used: unreachable at the start of a run
    (fatal: exit 3, the store named), or failing mid-run (caught: the lanes fall back to
    a conservative pace of their own)."""

    fatal = True


class ApiError(BulkfetchError):
    """Raised when the EOS API answers something other than what was asked for.

    ``status`` is the HTTP status when there was one. The job is not part of the error: the
    engine, which knows it, logs and records the error under the job's key.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthError(ApiError):
    """Raised on 401/402/403: the key is refused, or the plan does not allow this API or
    has no credit left. Nothing else will work, so the run stops."""

    fatal = True


class EndpointError(ApiError):
    """Raised when the API URL is not the task API: it answers creation with 404/405/410, or
    it has not answered as the task API in this run when ``NotTheApi`` answers (or
    failures of any kind, for a grace period) say it will not.

    Unlike ``BadRequest`` this is no job's fault, and every job would fail the same way.
    """

    fatal = True


class RateLimited(ApiError):
    """Raised on 429, or another 4xx/5xx whose text says "rate limit". ``retry_after`` is
    the server's wait in seconds, or None if not given.

    Pauses the whole lane; never counts against a job's attempt budget.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        status: int | None = 429,
        resolution: float = 0.0,
    ) -> None:
        self.retry_after = retry_after
        #: Seconds ``retry_after`` may be off (whole seconds, a date: 1; exact: 0).
        self.retry_after_resolution = resolution
        super().__init__(message, status=status)


class TaskGone(ApiError):
    """Raised on 404 or 410 for a task: it expired or never existed. The job is created
    again."""

    retryable = True


class BadRequest(ApiError):
    """Raised on a 4xx other than 401/402/403/404/405/408/410/425/429 at creation (or a
    search): the job's parameters (the query) are wrong. Not retried."""


class TransientError(ApiError):
    """Raised on connection errors, timeouts, 5xx, and truncated or malformed bodies.

    Retried with exponential back-off and jitter within the job's attempt budget.
    """

    retryable = True


class NotTheApi(TransientError):
    """Raised on an answer the task API never gives: an HTML page, a 2xx that is not its
    JSON. ``what`` says what came back ("an HTML page ('Welcome') (HTTP 200)").

    Retryable, like any ``TransientError``, once the API has answered as the task API in
    the run (a proxy's error page during an outage). Before that it means the URL is
    wrong: with ``at_once`` the run stops at the first one, otherwise after a grace
    period (``engine``'s first contact).
    """

    def __init__(
        self, message: str, *, what: str, at_once: bool, status: int | None = None
    ) -> None:
        self.what = what
        self.at_once = at_once
        super().__init__(message, status=status)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a user should see from a task group's failures.

    Task groups gather every child's exception; the one that stopped the run is the
    fatal one (bad key, full disk) and the rest are its knock-on effects.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)

    def rank(exc: BaseException) -> int:
        if isinstance(exc, BulkfetchError) and exc.fatal:
            return 0
        if isinstance(exc, StorageError):
            return 1
        if isinstance(exc, BulkfetchError):
            return 2
        return 3 if not isinstance(exc, Exception) else 4  # KeyboardInterrupt before bugs

    return min(leaves, key=rank) if leaves else group
