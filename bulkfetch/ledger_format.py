"""The ledger's file format, read and checked: pure functions over bytes and JSON values.

The snapshot is ``{"format": FORMAT, "version": VERSION, "seq": N, "meta": {...}, "jobs":
{key: record, ...}}``; each journal line's payload is one change, ``{"jobs": [record, ...]}``
or ``{"meta": [key, value]}`` (see ``ledger``). Files, locks and fsyncs are the ledger's and
``durable``'s; this module only says what the bytes mean, or why they are not a ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkfetch.errors import LedgerCorrupt, LedgerVersionError
from bulkfetch.records import check_json

__all__ = ["FORMAT", "VERSION", "Snapshot", "apply_change", "parse_snapshot"]

FORMAT = "bulkfetch-ledger"
VERSION = 1

#: ``(seq, meta, jobs)`` of a snapshot: jobs as their JSON records, by key.
Snapshot = tuple[int, dict[str, Any], dict[str, dict[str, Any]]]


def parse_snapshot(raw: bytes, path: Path) -> Snapshot:
    """The snapshot in ``raw`` (read from ``path``), every record checked.

    Raises :class:`LedgerCorrupt` for a file that is not bulkfetch's or is damaged, and
    :class:`LedgerVersionError` for one a newer bulkfetch wrote.
    """
    not_ours = f"{path} is not a bulkfetch ledger"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LedgerCorrupt(f"{not_ours} (not JSON); move it away or choose another") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LedgerCorrupt(f'{not_ours} (no "format": {FORMAT!r})')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LedgerCorrupt(f"{not_ours} (bad version {version!r})")
    if version > VERSION:
        raise LedgerVersionError(
            f"the ledger at {path} was written by a newer bulkfetch "
            f"(format version {version}); upgrade bulkfetch"
        )
    seq, meta, jobs = data.get("seq"), data.get("meta"), data.get("jobs")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise LedgerCorrupt(f"the ledger at {path} is corrupt: bad seq {seq!r}")
    if not isinstance(meta, dict) or not isinstance(jobs, dict):
        raise LedgerCorrupt(f'the ledger at {path} is corrupt: "meta" or "jobs" missing')
    for key, rec in jobs.items():
        problem = check_json(rec) or (rec["key"] != key and f"holds the key {rec['key']!r}")
        if problem:
            raise LedgerCorrupt(f"{path}: job {key!r}: bad job record: {problem}")
    return seq, meta, jobs


def apply_change(payload: Any, jobs: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """Apply one journal payload to ``jobs`` and ``meta``; "" or why it is not a change
    (then nothing was applied but the records before the bad one of a ``jobs`` list)."""
    if type(payload) is dict and len(payload) == 1:
        if type(records := payload.get("jobs")) is list:
            for rec in records:
                if problem := check_json(rec):
                    return f"bad job record: {problem}"
                jobs[rec["key"]] = rec
            return ""
        change = payload.get("meta")
        if type(change) is list and len(change) == 2 and type(change[0]) is str:
            meta[change[0]] = change[1]
            return ""
    return f"not a ledger change: {str(payload)[:200]}"
