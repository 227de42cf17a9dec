"""Logging for people and for log collectors: one line per state change.

Text lines by default (cron mails them). ``--log-format json`` gives one JSON object per
line with ``ts``, ``level``, ``msg``, ``run_id`` and, for job events, ``job`` (the job key),
``view_id`` and ``bm_type`` as fields of their own, so a collector can filter by job
without parsing messages; an event logged with ``extra={"fields": {...}}`` adds those
(a download's ``bytes`` and ``seconds``, say). Job events pass a ``JobTag`` as their
first argument: it prints as ``<key[:12]> <view_id> <bm_type>`` in text, and becomes
those fields in JSON.

Nothing logged here ever holds the API key, a header, or a URL carrying the key.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["JobTag", "JsonFormatter", "new_run_id", "setup_logging"]


@dataclass(frozen=True, slots=True)
class JobTag:
    key: str
    view_id: str
    bm_type: str

    def __str__(self) -> str:
        return f"{self.key[:12]} {self.view_id} {self.bm_type}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "run_id": self.run_id,
            "logger": record.name,
        }
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, JobTag):
                event |= {"job": arg.key, "view_id": arg.view_id, "bm_type": arg.bm_type}
                break
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            event |= fields
        if record.exc_info and record.exc_info[1] is not None:
            event["error"] = str(record.exc_info[1])
        return orjson.dumps(event).decode()


def setup_logging(*, fmt: str = "text", quiet: bool = False, verbose: int = 0) -> str:
    """Send bulkfetch's logs to stderr; returns the run id stamped on JSON lines."""
    run_id = new_run_id()
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(run_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("bulkfetch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return run_id
