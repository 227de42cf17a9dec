"""The ledger's metadata as a typed record: what runs learn and leave for the next ones.

The ledger stores it as JSON keys beside the jobs (``"meta"`` in its snapshot, ``{"meta":
[key, value]}`` lines in its journal); this module is the one place that names those keys
and reads their values, leniently: a value of the wrong shape (a hand-edited or damaged
ledger) reads as the field's default rather than failing the run. Pure: no I/O.

* ``runs``: a short history of :class:`RunSummary` (``plan`` estimates, the report, STAC);
* ``manifest``: the last run's manifest, for commands given only the ledger;
* ``task_timeout``: seconds a task lives on EOS, as the API last said
  (:data:`DEFAULT_TASK_TIMEOUT` until it does);
* ``creates_by_day``: creations per UTC day (the per-day quota), a week of days;
* ``processing``: the processing-time model's state (``ProcessingModel.to_json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TASK_TIMEOUT", "LedgerMeta", "RunSummary"]

#: Seconds a task lives on EOS when nothing says otherwise (the documented 48 hours).
DEFAULT_TASK_TIMEOUT = 172800.0


def _number(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value - value == 0
    return float(value) if ok else 0.0


def _lanes(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(_number(v)) for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run's figures, as ``api`` records them at its end."""

    started: float = 0.0
    finished: float = 0.0
    outcome: str = ""
    exit_code: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)  # per lane: create, status
    rate_limited: Mapping[str, int] = field(default_factory=dict)  # 429s per lane
    bytes: int = 0
    downloaded: int = 0  # files fetched by this run (done minus skipped)
    done: int = 0
    failed: int = 0
    jobs: int = 0
    #: Which manifest: `bulkfetch stac` describes each done job from the manifest it came from.
    manifest: str = ""

    @classmethod
    def from_json(cls, data: Any) -> RunSummary | None:
        """The summary ``data`` holds, or None if it is not one (not an object)."""
        if not isinstance(data, Mapping):
            return None

        def count(name: str) -> int:
            return int(_number(data.get(name)))

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            started=_number(data.get("started")),
            finished=_number(data.get("finished")),
            outcome=str(data.get("outcome", "")),
            exit_code=count("exit_code"),
            requests=_lanes(data.get("requests")),
            rate_limited=_lanes(data.get("rate_limited")),
            bytes=count("bytes"),
            downloaded=count("downloaded"),
            done=count("done"),
            failed=count("failed"),
            jobs=count("jobs"),
            manifest=text("manifest"),
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["requests"], out["rate_limited"] = dict(self.requests), dict(self.rate_limited)
        return out


@dataclass(frozen=True, slots=True)
class LedgerMeta:
    """The ledger's metadata (see the module docstring). Immutable: :meth:`replace`."""

    runs: tuple[RunSummary, ...] = ()
    manifest: str = ""
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    creates_by_day: Mapping[str, int] = field(default_factory=dict)
    #: The processing-time model's own JSON, read by ``ProcessingModel.load``: any JSON.
    processing: Any = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LedgerMeta:
        """The metadata in ``raw`` (the ledger's stored keys); keys it does not know are
        left to the ledger, values of the wrong shape read as defaults."""
        runs = raw.get("runs")
        summaries = (RunSummary.from_json(r) for r in (runs if isinstance(runs, list) else ()))
        manifest = raw.get("manifest")
        timeout = _number(raw.get("task_timeout"))
        by_day = raw.get("creates_by_day")
        return cls(
            runs=tuple(s for s in summaries if s is not None),
            manifest=manifest if isinstance(manifest, str) else "",
            task_timeout=timeout if timeout > 0 else DEFAULT_TASK_TIMEOUT,
            creates_by_day=(
                {str(day): int(_number(n)) for day, n in by_day.items()}
                if isinstance(by_day, Mapping)
                else {}
            ),
            processing=raw.get("processing"),
        )

    def to_json(self) -> dict[str, Any]:
        """Every field as its stored key and JSON value."""
        return {
            "runs": [run.to_json() for run in self.runs],
            "manifest": self.manifest,
            "task_timeout": self.task_timeout,
            "creates_by_day": dict(self.creates_by_day),
            "processing": self.processing,
        }

    def changes(self, before: LedgerMeta) -> dict[str, Any]:
        """The stored keys whose values differ from ``before``'s, with their new JSON."""
        old = before.to_json()
        return {key: value for key, value in self.to_json().items() if old[key] != value}

    def replace(self, **changes: Any) -> LedgerMeta:
        return dataclasses.replace(self, **changes)

    def created_on(self, day: str) -> int:
        """Creations counted on ``day`` (``policy.today``)."""
        return self.creates_by_day.get(day, 0)
