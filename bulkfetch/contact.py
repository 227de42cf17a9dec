"""First contact: a wrong URL ends the run within a grace period; an outage does not.

Until the API has answered as the task API in this run (``answered()``: a task created,
a status given), failures say more about the URL than about the service. An answer no
task API gives (``NotTheApi`` with ``at_once``: an HTML page, a 2xx that is not its
JSON) stops the run at once; any other failure (connection refused, DNS or TLS failure,
5xx) is retried as usual, but if the API still has not answered as itself ``grace``
seconds after the first request (``begin``), or after the first failure if ``begin`` was
not called, the run stops: at once if a failure came later than that (a connection
attempt into a firewall that drops it fails only at the connect timeout). Both as an
``EndpointError`` naming the URL and what came back, so a typo in ``--api-url`` costs a
minute, not ``--max-outage``.
Once the API has answered, failures are outages and jobs' troubles as before.

Pure: the caller passes the time; ``due()`` says when to look again.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulkfetch.errors import ApiError, EndpointError, NotTheApi

__all__ = ["FirstContact"]


@dataclass(slots=True)
class FirstContact:
    """Whether the API at ``url`` has answered as the task API yet, and since when not."""

    #: The URL as messages show it (``urls.display_url``).
    url: str
    #: Seconds of failures, from the first, before an unseen API is taken for a wrong URL.
    grace: float
    #: The flag a user fixes (``--api-url``, ``--search-url``).
    flag: str = "--api-url"
    service: str = "the EOS task API"
    seen: bool = False
    #: When the first request went out, if the caller said (``begin``).
    began: float | None = None
    #: When the first failure came.
    since: float | None = None
    last: str = ""

    def begin(self, now: float) -> None:
        """The first request goes out now: the grace counts from here (first call wins)."""
        if self.began is None:
            self.began = now

    def answered(self) -> None:
        """The API answered as the task API: from now on failures are not about the URL."""
        self.seen = True

    def failed(self, exc: ApiError, now: float) -> EndpointError | None:
        """The error that stops the run for this failure, or None to carry on."""
        if self.seen or exc.fatal or not exc.retryable:
            return None
        self.last = exc.what if isinstance(exc, NotTheApi) else str(exc)
        if isinstance(exc, NotTheApi) and exc.at_once:
            return self._stop()
        if self.since is None:
            self.since = now
        return self.expired(now)

    def due(self) -> float | None:
        """When the grace runs out, once a failure has started it (None otherwise)."""
        if self.seen or self.since is None:
            return None
        return (self.since if self.began is None else self.began) + self.grace

    def expired(self, now: float) -> EndpointError | None:
        """The error that stops the run if the grace has run out unseen, else None."""
        due = self.due()
        if due is None or now < due:
            return None
        return self._stop(f", for {self.grace:g} s")

    def _stop(self, how_long: str = "") -> EndpointError:
        return EndpointError(
            f"{self.url} does not answer as {self.service} ({self.last}{how_long}): "
            f"check {self.flag}"
        )
