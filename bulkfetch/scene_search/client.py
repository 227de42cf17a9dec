"""The Search API on the wire: one page per request, paced and retried within bounds.

``SearchClient.page`` POSTs one query for one dataset (to ``{search}/{dataset}``), or for
the datasets its ``search.satellites`` names (to ``{search}``, dataset None), and returns
the JSON answer, or raises from :mod:`bulkfetch.errors` as ``session.Answer.error`` reads
an answer to a search: ``RateLimited``, ``AuthError``, ``TransientError``, ``BadRequest``
when EOS refuses the query, ``EndpointError`` when the URL or dataset is not a search
endpoint (404, 405, 410), and ``NotTheApi`` for an answer no Search API gives. The key
travels in the ``x-api-key`` header only, to the search URL's own origin, through the
environment's proxy (see :mod:`bulkfetch.session`).

``SearchLane`` spends the search lane of the limiter: a 429 pauses the lane (honouring
``Retry-After``) and is retried up to ``MAX_RATE_LIMITED`` times in a row; transient
failures are retried ``max_attempts`` times with exponential back-off and jitter
(2 s, 4 s, ... at most 60 s, times 0.5-1.0); anything else is raised at once.
``pages`` follows ``page`` until the answer's ``found`` (or a short page) is reached.
Until the Search API has answered as itself, failures are judged by ``contact``: an HTML
page or an answer without ``results`` stops the search at once, other failures after
``first_contact_grace`` seconds, as an ``EndpointError`` naming the URL (exit 3).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from bulkfetch.answers import not_the_api
from bulkfetch.contact import FirstContact
from bulkfetch.errors import ApiError, BadRequest, NotTheApi, RateLimited
from bulkfetch.limiter.lane import Limiter
from bulkfetch.policy import backoff
from bulkfetch.session import MAX_JSON, ApiSession, Asking
from bulkfetch.urls import display_url

__all__ = [
    "MAX_PAGES",
    "MAX_RATE_LIMITED",
    "PAGE_SIZE",
    "SearchClient",
    "SearchLane",
    "SearchStats",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_PAGES = 200  # 20,000 scenes of one field in one year is a wrong query, not a catalogue
MAX_RATE_LIMITED = 50  # 429s in a row on one request before the search gives up


@dataclass(slots=True)
class SearchStats:
    """What a search did, for the summary line and the Python caller."""

    fields: int = 0
    #: Date ranges (of at most a calendar year) the cache could not answer: each is at
    #: least one request, one more per extra page.
    questions: int = 0
    requests: int = 0
    rate_limited: int = 0
    retried: int = 0
    #: (field, dataset) questions answered from the cache alone.
    from_cache: int = 0
    scenes_found: int = 0
    scenes_kept: int = 0
    bad_results: int = 0


class SearchClient(ApiSession):
    """The Search API's client: one POST per page."""

    async def page(self, dataset: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        url = self.api_url / dataset if dataset is not None else self.api_url
        answer = await self.call("POST", url, json=body, doing="searching", limit=16 * MAX_JSON)
        if answer.status != 200:
            what = f"dataset {dataset!r}" if dataset else "a multi-dataset search"
            raise answer.error(
                Asking(
                    refused="the search",
                    url="the search URL",
                    endpoint=f"for {what}: check the dataset name and --search-url",
                    answer="the search answer",
                )
            )
        wrong = not_the_api(answer.status, answer.content_type, answer.body)
        if wrong is not None:
            what = wrong[0]
            raise NotTheApi(f"the search answer is {what}", what=what, at_once=wrong[1])
        try:
            data = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            what = f"not JSON: {answer.text!r}"[:200]
            raise NotTheApi(f"the search answer is {what}", what=what, at_once=True) from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            what = "JSON without a 'results' list"
            raise NotTheApi(f"the search answer is {what}", what=what, at_once=True)
        return data


@dataclass(slots=True)
class SearchLane:
    """Requests to the Search API, paced by their own limiter, retried within bounds."""

    client: SearchClient
    limiter: Limiter
    stats: SearchStats
    max_attempts: int
    first_contact_grace: float = 45.0
    contact: FirstContact = field(init=False)

    def __post_init__(self) -> None:
        self.contact = FirstContact(
            display_url(str(self.client.api_url)),
            self.first_contact_grace,
            flag="--search-url",
            service="the EOS Search API",
        )

    async def post(self, dataset: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page, retried through rate limits and transient faults within bounds."""
        failures = limited = 0
        self.contact.begin(time.monotonic())
        while True:
            sent = await self.limiter.sending(await self.limiter.acquire())
            self.stats.requests += 1
            try:
                data = await self.client.page(dataset, body)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                limited += 1
                pause = self.limiter.rate_limited_by_server(
                    exc.retry_after, sent, resolution=exc.retry_after_resolution
                )
                log.info("search rate limited; lane paused %.1f s", pause)
                if limited >= MAX_RATE_LIMITED:
                    raise
                continue
            except ApiError as exc:
                self.limiter.succeeded(sent)  # answered: not a rate-limit signal
                failures += 1
                stop = self.contact.failed(exc, time.monotonic())
                if stop is not None:
                    raise stop from None
                if not exc.retryable or failures >= self.max_attempts:
                    raise
                self.stats.retried += 1
                delay = backoff(failures, base=2.0, cap=60.0, draw=random.random())
                due = self.contact.due()
                if due is not None:  # look again when the grace runs out, not later
                    delay = min(delay, max(0.0, due - time.monotonic()))
                log.info("search failed (%s); retrying in %.1f s", exc, delay)
                await anyio.sleep(delay)
                stop = self.contact.expired(time.monotonic())
                if stop is not None:
                    raise stop from None
                continue
            self.limiter.succeeded(sent)
            self.contact.answered()
            return data

    async def pages(self, dataset: str | None, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every result of one query, page after page (``dataset`` as for ``page``)."""
        results: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            data = await self.post(dataset, {**query, "page": page})
            batch = data["results"]
            results.extend(batch)
            meta = data.get("meta")
            meta = meta if isinstance(meta, dict) else {}
            size = meta.get("limit")
            size = size if isinstance(size, int) and size > 0 else PAGE_SIZE
            found = meta.get("found")
            if len(batch) < size or (isinstance(found, int) and page * size >= found):
                return results
        raise BadRequest(f"more than {MAX_PAGES} pages of results: narrow the search")
