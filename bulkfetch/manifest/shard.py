"""``--shard K/N``: the K-th of N deterministic parts of a manifest, by job key.

A huge manifest is spread over pods of a Kubernetes Indexed Job or the tasks of a Slurm
array by giving each the same manifest and its own ``K/N``. A job belongs to part
``K`` when a hash of its key, modulo ``N``, is ``K - 1``: the split depends on nothing but
the job's parameters (not on its line in the file, nor on the other jobs), so re-running
a part, or the manifest with jobs added, moves no job that was already in a part.

``K`` counts from 1, as the shards of pytest-split, Playwright and Jest do; a Kubernetes
completion index (from 0) is passed as ``$((JOB_COMPLETION_INDEX + 1))``. Each part keeps
its own ledger by default (``bulkfetch-ledger.shard-K-of-N.json``), so the parts never
wait for each other's lock when they write into one output folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bulkfetch.errors import UsageError

if TYPE_CHECKING:
    from bulkfetch.manifest.jobs import Manifest

__all__ = ["Shard"]

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: More parts than this is surely a typo (a pod per job is not what sharding is for).
MAX_PARTS = 100_000


@dataclass(frozen=True, slots=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/8"`` → Shard(2, 8); a usage error naming what is wrong otherwise."""
        m = _SHARD.match(text)
        if not m:
            raise UsageError(f"shard {text!r} is not of the form K/N (e.g. 2/8: part 2 of 8)")
        index, count = int(m.group(1)), int(m.group(2))
        if not 1 <= count <= MAX_PARTS:
            raise UsageError(f"shard {text!r}: N must be from 1 to {MAX_PARTS}")
        if index == 0:
            raise UsageError(
                f"shard {text!r}: K counts from 1 (a Kubernetes completion index counts "
                "from 0: pass $((JOB_COMPLETION_INDEX + 1)))"
            )
        if index > count:
            raise UsageError(f"shard {text!r}: K must be from 1 to N ({count})")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        """Whether the job with this key belongs to this part."""
        return part_of(key, self.count) == self.index

    def select(self, manifest: Manifest) -> Manifest:
        """The manifest with only this part's jobs (idempotent)."""
        jobs = tuple(job for job in manifest.jobs if self.owns(job.key))
        return manifest if len(jobs) == len(manifest.jobs) else replace(manifest, jobs=jobs)

    def ledger_for(self, path: Path) -> Path:
        """This part's ledger beside the whole manifest's default ``path``:
        ``bulkfetch-ledger.json`` → ``bulkfetch-ledger.shard-K-of-N.json``."""
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")


def part_of(key: str, count: int) -> int:
    """The part (1-based) of ``count`` a job key falls in. The key is hashed again so
    that any key (not only the 64-hex ``job_key``) spreads evenly."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1
