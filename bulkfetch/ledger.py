"""The ledger: every job's state, durable at every instant.

Contract: at any instant (``kill -9`` between any two syscalls) the files on disk load to a
complete, valid state equal to the state after some prefix of the ``put``/``put_many``/
``put_soon``/``set_meta`` calls, and every ``put``/``put_many``/``set_meta`` that returned is
in it, with every call made before it. A ``put_many`` is all or nothing.

Group commit: ``put_soon`` changes the state at once (``get`` sees it) but leaves the write
to the next durable call, ``flush()`` or ``close()``, which writes everything waiting, in
order, with its own change: one ``write`` and one ``fsync`` for all of them. It is for
changes nothing outside depends on until then: the caller flushes (or makes a durable call)
before acting on one, e.g. before a request that a record's state must precede.

Files, for a ledger at ``PATH`` (e.g. ``out/bulkfetch-ledger.json``):

``PATH`` — the snapshot, replaced atomically by :meth:`Ledger.compact`::

    {"format": "bulkfetch-ledger", "version": 1, "seq": N,
     "meta": {...}, "jobs": {key: record, ...}}

    where ``record`` is :meth:`JobRecord.to_json`: the fields that differ from their default.

``PATH.journal`` — changes since the snapshot, a :class:`~bulkfetch.durable.Journal` whose
payloads are ``{"jobs": [record, ...]}`` (one ``put`` or ``put_many``, or the records a
group commit writes) or ``{"meta": [key, value]}``. A durable call with ``put_soon`` records
waiting writes two lines in one ``write``: theirs, then its own. On load, lines with
``seq <= N`` are skipped: they are left over from a compaction that crashed between writing
the snapshot and truncating the journal. The first line after the snapshot must have
``seq N + 1``; a gap means lost changes (corrupt).

``PATH.lock`` — the :class:`~bulkfetch.durable.FileLock` of the one run that may write.

A file that is not bulkfetch's raises :class:`LedgerCorrupt`; a newer format version raises
:class:`LedgerVersionError`; either way nothing is written. Any :class:`StorageError` marks the
ledger broken: it refuses further writes and does not compact on close, and the next run
recovers from the files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar

import orjson

from bulkfetch import durable
from bulkfetch._gc import gc_paused
from bulkfetch.errors import LedgerCorrupt, LedgerError, StorageError
from bulkfetch.ledger_format import FORMAT, VERSION, apply_change, parse_snapshot
from bulkfetch.ledger_meta import LedgerMeta
from bulkfetch.records import JobRecord, JobState, check_json

__all__ = ["JobRecord", "JobState", "Ledger", "LedgerMeta"]

log = logging.getLogger(__name__)


def _record_json(record: JobRecord) -> dict[str, Any]:
    """``record.to_json()`` after checking it would load again (a caller bug is a ValueError)."""
    if not isinstance(record, JobRecord):
        raise TypeError(f"expected a JobRecord, got {type(record).__name__}")
    data = record.to_json()
    problem = check_json(data)
    if problem:
        raise ValueError(f"job {record.key!r}: {problem}")
    return data


class Ledger:
    """The jobs' states, backed by a snapshot and a journal (see the module docstring).

    Synchronous and not thread-safe: the async shell calls it from one thread.
    """

    FORMAT: ClassVar[str] = FORMAT
    VERSION: ClassVar[int] = VERSION
    # Compact when the journal holds more than max(MIN, RATIO * jobs) records: O(1) amortised.
    COMPACT_MIN_RECORDS: ClassVar[int] = 1024
    COMPACT_RATIO: ClassVar[int] = 2
    _READ_RETRIES: ClassVar[int] = 5

    def __init__(self, path: Path, *, readonly: bool) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.lock_path = path.with_name(path.name + ".lock")
        self.readonly = readonly
        self._jobs: dict[str, JobRecord] = {}
        self._json: dict[str, dict[str, Any]] = {}  # the records as written: compaction reuses
        self._meta: dict[str, Any] = {}
        self._typed_meta: LedgerMeta | None = None  # built from _meta on first read
        self._seq = 0
        self._snapshot_exists = False
        self._scan = durable.JournalScan()
        self._lock = durable.FileLock(self.lock_path, target=path)
        self._journal: durable.Journal | None = None
        self._staged: list[dict[str, Any]] = []  # put_soon records not yet written, in order
        self._broken = False
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Ledger:
        """Open (and, writable, lock, create and recover) the ledger at ``path``."""
        ledger = cls(path, readonly=readonly)
        if readonly:
            ledger._load_consistent()
            return ledger
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ledger._lock.acquire()
            ledger._load()  # checks everything before the first write below
            durable.remove_stale_temps(path)
            ledger._journal = durable.Journal.open(
                ledger.journal_path, base_seq=ledger._seq, scan=ledger._scan
            )
            ledger._scan = durable.JournalScan()
            if not ledger._snapshot_exists:
                ledger.compact()
        except BaseException:
            ledger._release()
            raise
        return ledger

    # -- loading -------------------------------------------------------------------------

    def _load_consistent(self) -> None:
        # Without the lock, the running writer may compact between our reads of the snapshot
        # and of the journal (a seq gap), or truncate and append while we read the journal
        # (a bad middle line). Either changes the files' stamps: then read again.
        for attempt in range(self._READ_RETRIES):
            before = self._stamp()
            try:
                self._load()
            except LedgerCorrupt:
                if attempt == self._READ_RETRIES - 1 or self._stamp() == before:
                    raise
            else:
                return

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in (self.path, self.journal_path):
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> None:
        # (GC held off: it halves the time to open a 100,000-job ledger.)
        with gc_paused():
            self._load_files()

    def _load_files(self) -> None:
        self._jobs, self._json, self._meta, self._seq = {}, {}, {}, 0
        self._typed_meta = None
        self._snapshot_exists = False
        self._read_snapshot()
        snapshot_seq = self._seq
        self._scan = durable.Journal.scan(self.journal_path)
        where = f"the ledger journal at {self.journal_path}"
        for number, seq, payload in self._scan.entries:
            if seq <= snapshot_seq:
                continue  # already in the snapshot: a compaction crashed before truncating
            if seq != self._seq + 1:
                raise LedgerCorrupt(
                    f"{where} is corrupt at line {number}: seq {seq} "
                    f"follows {self._seq}, so changes are missing (snapshot seq {snapshot_seq})"
                )
            problem = apply_change(payload, self._json, self._meta)
            if problem:
                raise LedgerCorrupt(f"{where} is corrupt at line {number}: {problem}")
            self._seq = seq
        # Records are checked as read, but built once per key: the journal may repeat keys.
        self._jobs = {key: JobRecord.from_checked(rec) for key, rec in self._json.items()}

    def _read_snapshot(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger at {self.path}: {exc}") from exc
        self._seq, self._meta, self._json = parse_snapshot(raw, self.path)
        self._snapshot_exists = True

    # -- reading -------------------------------------------------------------------------

    def get(self, key: str) -> JobRecord | None:
        return self._jobs.get(key)

    def records(self) -> Mapping[str, JobRecord]:
        """A live read-only view of every record, by key."""
        return MappingProxyType(self._jobs)

    @property
    def meta(self) -> LedgerMeta:
        """Ledger-level data (run history, quota counts, learned stats), typed."""
        if self._typed_meta is None:
            self._typed_meta = LedgerMeta.from_json(self._meta)
        return self._typed_meta

    @property
    def raw_meta(self) -> Mapping[str, Any]:
        """Every ledger-level key as stored, those this version does not know too (they are
        kept through compactions); a read-only view. Code reads :attr:`meta`."""
        return MappingProxyType(self._meta)

    @property
    def seq(self) -> int:
        """The seq of the last change applied."""
        return self._seq

    # -- writing -------------------------------------------------------------------------

    def _writer(self) -> durable.Journal:
        if self.readonly:
            raise LedgerError(f"the ledger at {self.path} is open read-only")
        if self._closed or self._journal is None:
            raise LedgerError(f"the ledger at {self.path} is closed")
        if self._broken:
            raise StorageError(
                f"writing the ledger at {self.path} failed earlier; run again to recover"
            )
        return self._journal

    def _append(self, *changes: Any) -> None:
        """Write the staged records, then ``changes``, with one write and fsync."""
        journal = self._writer()
        payloads = [{"jobs": self._staged}] if self._staged else []
        payloads.extend(changes)
        if not payloads:
            return
        try:
            self._seq = journal.append_many(payloads)
        except StorageError:
            self._broken = True
            raise
        self._staged = []

    def put(self, record: JobRecord) -> None:
        """Store ``record`` (replacing its key's); durable when this returns."""
        self.put_many((record,))

    def put_many(self, records: Iterable[JobRecord]) -> None:
        """Store all ``records`` with one fsync, all or nothing; durable when this returns."""
        pairs = [(r, _record_json(r)) for r in records]
        if not pairs:
            self.flush()
            return
        self._append({"jobs": [rec for _, rec in pairs]})
        for record, rec in pairs:
            self._remember(record, rec)
        self._maybe_compact()

    def put_soon(self, record: JobRecord) -> None:
        """Store ``record`` now; it reaches the disk with the next durable call or flush().

        See "Group commit" in the module docstring for when that is enough.
        """
        rec = _record_json(record)
        self._writer()
        self._staged.append(rec)
        self._remember(record, rec)

    @property
    def unflushed(self) -> int:
        """Records stored with :meth:`put_soon` and not written yet."""
        return len(self._staged)

    def flush(self) -> None:
        """Write the records :meth:`put_soon` stored (one write, one fsync); durable on return."""
        if self._staged:
            self._append()
            self._maybe_compact()

    def _remember(self, record: JobRecord, rec: dict[str, Any]) -> None:
        if not isinstance(record.state, JobState):  # a caller built one with state="done"
            record = record.replace(state=record.state)
        self._json[record.key] = rec
        self._jobs[record.key] = record

    def save_meta(self, meta: LedgerMeta) -> None:
        """Store ``meta`` (its fields that changed, with one fsync); durable on return."""
        self._set_meta(meta.changes(self.meta))

    def set_meta(self, key: str, value: Any) -> None:
        """Store one ledger-level key (JSON-able); durable when this returns. The storage
        primitive under :meth:`save_meta`, which code uses."""
        self._set_meta({key: value})

    def _set_meta(self, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        # The round trip stores exactly what a reload will see (tuples become lists...).
        values = orjson.loads(orjson.dumps(changes))
        self._append(*({"meta": [key, value]} for key, value in values.items()))
        self._meta.update(values)
        self._typed_meta = None
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        journal = self._writer()
        if journal.count > max(self.COMPACT_MIN_RECORDS, self.COMPACT_RATIO * len(self._jobs)):
            self.compact()

    def compact(self) -> None:
        """Write the whole state as a snapshot atomically, then empty the journal.

        A crash between the two leaves journal lines with ``seq <= snapshot seq``, which
        loading skips. Raises :class:`StorageError` (the ledger is then broken).
        """
        journal = self._writer()
        snapshot = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "seq": self._seq,
            "meta": self._meta,
            "jobs": self._json,
        }
        try:
            durable.atomic_write(self.path, orjson.dumps(snapshot))
            self._snapshot_exists = True
            self._staged = []  # the snapshot holds them
            journal.truncate()
        except StorageError:
            self._broken = True
            raise
        log.debug("ledger %s: compacted at seq %d, %d jobs", self.path, self._seq, len(self._jobs))

    def close(self) -> None:
        """Compact if the journal or :meth:`put_soon` has records, then release the lock;
        idempotent."""
        if self._closed:
            return
        try:
            journal = self._journal
            if journal is not None and (journal.count or self._staged) and not self._broken:
                self.compact()
        finally:
            self._release()

    def _release(self) -> None:
        self._closed = True
        if self._journal is not None:
            self._journal.close()
        self._lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "closed" if self._closed else "open"
        return f"<Ledger {str(self.path)!r} {mode} jobs={len(self._jobs)} seq={self._seq}>"
