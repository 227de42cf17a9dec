"""The simulator's knobs: one mutable dataclass, validated on creation and on every update.

Contract:

- ``SimConfig()`` is a well-behaved EOS: 202 on create, 10 requests per 60 s per key on each
  endpoint (create, status, search), lognormal processing times around 3 s, results as raw
  bytes, no faults, and a Search API whose catalogue is seen from the real UTC date.
- Every field can be changed while the simulator runs (``SimConfig.update``, ``Simulator
  .configure`` or ``POST /_sim/config``); the change applies to the next request. ``host`` and
  ``port`` are read only when the server (re)starts.
- ``update`` rejects unknown names and bad values with ``ValueError`` and leaves the config
  unchanged when it does, so a typo in a test never silently tests the wrong thing.
- Probabilities are in ``[0, 1]``; times are seconds (floats).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bulkfetch.simulator.limits import LIMITER_KINDS, LimiterKind

__all__ = ["TEST_API_KEY", "LimiterKind", "ResultForm", "RetryAfterMode", "SimConfig"]

#: The key the simulator accepts unless told otherwise. Shaped like a real key
#: (``apk.`` + 64 hex digits) so clients' format checks pass, and obviously fake.
TEST_API_KEY = "apk." + "5eed" * 16

#: How a 429 carries ``Retry-After``: ``int`` whole seconds rounded up, ``float`` the exact
#: wait, ``date`` an HTTP date (whole seconds, rounded up), ``window`` the whole window
#: whatever the wait (as crude servers do), ``off`` no header at all.
RetryAfterMode = Literal["int", "float", "date", "window", "off"]
ResultForm = Literal["bytes", "redirect", "json-url"]
ColormapForm = Literal["list", "map"]

#: Fields that hold probabilities.
_RATES = (
    "task_error_rate",
    "create_5xx_rate",
    "status_5xx_rate",
    "reset_rate",
    "truncate_rate",
    "wrong_format_rate",
    "json_instead_rate",
    "empty_200_rate",
    "search_5xx_rate",
)

_POSITIVE_INTS = (
    "create_limit",
    "status_limit",
    "search_limit",
    "search_max_days",
    "search_max_limit",
    "image_size",
    "chunk_size",
)
_POSITIVE_SECONDS = (
    "create_window",
    "status_window",
    "search_window",
    "task_timeout",
    "processing_median",
)


def _is_date(value: object) -> bool:
    if not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class SimConfig:
    """Everything the simulator can be told. See the module docstring for the contract."""

    host: str = "127.0.0.1"
    #: 0 picks a free port at the first start; restarts reuse the port first picked.
    port: int = 0
    #: Seeds the task RNG (processing times) and, derived from it, the fault RNG.
    seed: int = 0
    api_key: str = TEST_API_KEY
    #: Every API request is answered 403 (a key that exists but may not use this API).
    forbidden: bool = False
    #: The 403 comes as plain text, ``403: Forbidden`` (as a public client logged it).
    forbidden_text: bool = False
    #: Every API request is answered 402 (a plan without credit, or without this API).
    payment_required: bool = False
    #: When not 0, every API request (task and search) is answered with an HTML page
    #: with this status: a web server at a wrong URL, or a login portal (200, 404, 501...).
    html_status: int = 0

    # --- creation ---
    create_status: int = 202
    #: Reported in the create answer and enforced: a task is gone after this many seconds.
    task_timeout: float = 172800.0
    #: Creations naming one of these view_ids get 400, as EOS does for an unknown scene.
    bad_view_ids: frozenset[str] = frozenset()
    #: Creations whose geometry is not a Polygon get 400: EOS's current Download visual
    #: page lists only Polygon (older ones accept MultiPolygon, as the default does).
    polygon_only: bool = False

    # --- rate limits: ``limit`` requests per ``window`` seconds, per key, in each lane:
    # create, status, and search (both search endpoints share one lane), counted the way
    # ``limiter`` says (see ``limits``: sliding, fixed, bucket, spacing) ---
    limiter: LimiterKind = "sliding"
    #: Token bucket: its capacity (0: ``limit``); spacing: requests allowed early (0: none).
    burst: int = 0
    create_limit: int = 10
    create_window: float = 60.0
    status_limit: int = 10
    status_window: float = 60.0
    search_limit: int = 10
    search_window: float = 60.0
    retry_after: RetryAfterMode = "int"

    # --- the Search API (``POST /api/lms/search/v2[/{dataset}]``) ---
    #: Longest date range one search may span, in days, both ends included.
    search_max_days: int = 366
    #: Largest page: a bigger ``limit`` is clamped to this (and ``meta.limit`` says so).
    search_max_limit: int = 100
    #: False: the multi-dataset endpoint (``search.satellites``) answers 404, as on a
    #: service that has only the per-dataset one.
    search_multi: bool = True
    #: ``"YYYY-MM-DD"``: the catalogue's today; scenes after it do not exist yet. ``None``
    #: means the real UTC date. Move it forward to make new scenes "appear".
    catalogue_today: str | None = None

    # --- the colormap endpoints (``GET /api/render/colormap/ALL`` and ``/{id}``) ---
    #: The list's answer: ``{"colormap_list": [...]}`` ("list") or a name-to-type map.
    colormap_form: ColormapForm = "list"
    #: When not 0, every colormap request gets this HTTP status (an endpoint down or gone).
    colormap_fault: int = 0

    # --- tasks ---
    processing_median: float = 3.0
    processing_sigma: float = 0.5
    #: When set, replaces the lognormal draw: params -> processing seconds.
    processing_time_fn: Callable[[Mapping[str, Any]], float] | None = None
    #: Words a not-ready task reports, cycled per poll of that task.
    pending_words: tuple[str, ...] = ("created",)
    #: The HTTP status of a not-ready task's answer: 200, or 202 (one public client
    #: accepts both).
    pending_status: int = 200
    #: Probability, drawn at creation, that a task ends in an error answer.
    task_error_rate: float = 0.0

    # --- results ---
    result_form: ResultForm = "bytes"
    #: The Content-Type of result bytes, instead of the format's own (``image/jpeg``...):
    #: ``application/octet-stream``, ``binary/octet-stream``, anything.
    result_content_type: str | None = None
    #: The status of a ``redirect`` result: 301, 302, 303, 307 or 308.
    redirect_status: int = 302
    #: The host that ``redirect`` and ``json-url`` results point to, instead of the API's
    #: own (e.g. ``localhost`` for an API on 127.0.0.1): another origin, like a storage
    #: service's presigned URL, where the key must not go (``result_requests_with_key``).
    result_host: str | None = None
    #: Where a ``json-url`` answer keeps the URL: a name (``url``, ``downloadUrl``...), or
    #: a dotted path one level down (``result.url``); ``[]`` at the end makes the last
    #: level a list of one (``files[]``, ``result.links[]``).
    result_url_field: str = "url"
    #: Side of the rendered square picture, in pixels.
    image_size: int = 64
    #: When > 0, tiff results are a generated TIFF of about this many bytes, streamed.
    big_result_bytes: int = 0
    chunk_size: int = 64 * 1024

    # --- faults (probabilities per eligible request) ---
    create_5xx_rate: float = 0.0
    status_5xx_rate: float = 0.0
    search_5xx_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    slow_body_seconds: float = 0.0
    wrong_format_rate: float = 0.0
    json_instead_rate: float = 0.0
    empty_200_rate: float = 0.0
    #: ``time.monotonic()`` value until which every API request gets 503. Monotonic time is
    #: system-wide on Linux and macOS, so another process on the host can compute it too;
    #: ``Simulator.configure(outage_for=s)`` and ``{"outage_for": s}`` are easier.
    outage_until: float = 0.0

    def __post_init__(self) -> None:
        # Lists arrive from JSON and from hurried callers; store the immutable forms.
        self.pending_words = tuple(self.pending_words)
        self.bad_view_ids = frozenset(self.bad_view_ids)
        self._check()

    def update(self, **changes: Any) -> None:
        """Apply ``changes`` atomically: all of them, or none and ``ValueError``.

        Lists are accepted for ``pending_words`` and ``bad_view_ids`` (as JSON gives them).
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        candidate = dataclasses.replace(self, **changes)  # runs _check
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def _check(self) -> None:
        problems: list[str] = []
        for name in _RATES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                problems.append(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.create_status not in (200, 201, 202):
            problems.append(f"create_status must be 200, 201 or 202, got {self.create_status!r}")
        if self.retry_after not in get_args(RetryAfterMode):
            problems.append(
                f"retry_after must be int, float, date, window or off: {self.retry_after!r}"
            )
        if self.limiter not in LIMITER_KINDS:
            problems.append(
                f"limiter must be one of {', '.join(LIMITER_KINDS)}, got {self.limiter!r}"
            )
        if not (
            isinstance(self.burst, int) and not isinstance(self.burst, bool) and self.burst >= 0
        ):
            problems.append(f"burst must be an integer >= 0, got {self.burst!r}")
        if self.result_form not in get_args(ResultForm):
            problems.append(
                f"result_form must be bytes, redirect or json-url: {self.result_form!r}"
            )
        if self.colormap_form not in get_args(ColormapForm):
            problems.append(f"colormap_form must be list or map: {self.colormap_form!r}")
        if self.colormap_fault != 0 and not (
            isinstance(self.colormap_fault, int) and 400 <= self.colormap_fault <= 599
        ):
            problems.append(f"colormap_fault must be 0 or 400-599: {self.colormap_fault!r}")
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                problems.append(f"{name} must be a positive integer")
        for name in _POSITIVE_SECONDS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number of seconds")
        for name in ("processing_sigma", "slow_body_seconds", "outage_until"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                problems.append(f"{name} must be a number >= 0")
        if not (isinstance(self.big_result_bytes, int) and self.big_result_bytes >= 0):
            problems.append("big_result_bytes must be an integer >= 0")
        if self.pending_status not in (200, 202):
            problems.append(f"pending_status must be 200 or 202, got {self.pending_status!r}")
        if self.redirect_status not in (301, 302, 303, 307, 308):
            problems.append(
                f"redirect_status must be 301, 302, 303, 307 or 308: {self.redirect_status!r}"
            )
        if self.html_status != 0 and not (
            isinstance(self.html_status, int) and 200 <= self.html_status < 600
        ):
            problems.append(f"html_status must be 0 (off) or an HTTP status: {self.html_status!r}")
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)?(\[\])?", self.result_url_field):
            problems.append(
                f"result_url_field must be a name or name.name, [] at the end for a list: "
                f"{self.result_url_field!r}"
            )
        if self.result_host is not None and not re.fullmatch(r"[A-Za-z0-9.\-]+", self.result_host):
            problems.append(f"result_host must be a host name: {self.result_host!r}")
        if not self.pending_words or not all(isinstance(w, str) for w in self.pending_words):
            problems.append("pending_words must be a non-empty list of strings")
        if not (isinstance(self.port, int) and 0 <= self.port < 65536):
            problems.append(f"port must be in 0..65535, got {self.port!r}")
        if self.catalogue_today is not None and not _is_date(self.catalogue_today):
            problems.append(f"catalogue_today must be YYYY-MM-DD or None: {self.catalogue_today!r}")
        if problems:
            raise ValueError("; ".join(problems))
