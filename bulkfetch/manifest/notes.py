"""A manifest's ``_`` notes (``_date``, ``_cloud``...): what a search knew of each job's scene.

Validation keeps only what a job asks of EOS and drops the notes; :func:`job_notes` reads
them again from the manifest's file for those who describe the results (the STAC catalog).
"""

from __future__ import annotations

from typing import Any

from bulkfetch.manifest.jobs import Manifest
from bulkfetch.manifest.readers import READERS

__all__ = ["job_notes"]


def job_notes(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The ``_`` notes of each job of ``manifest`` (by key), read again from its file.

    Validation drops the notes; a valid manifest has one job per record, in file order,
    so the records read again line up with the jobs. Nothing if the file has changed
    since (the counts differ) or cannot be read.
    """
    reader = READERS.get(manifest.path.suffix.lower())
    if reader is None:
        return {}
    defaults: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    try:
        with manifest.path.open("rb") as stream:
            for raw in reader(stream, []):
                notes = {k: v for k, v in raw.members.items() if k.startswith("_")}
                if raw.is_defaults:
                    defaults = notes
                else:
                    rows.append(notes)
    except OSError:
        return {}
    if len(rows) != len(manifest.jobs):
        return {}
    return {
        job.key: {**defaults, **notes}
        for job, notes in zip(manifest.jobs, rows, strict=True)
        if notes or defaults
    }
