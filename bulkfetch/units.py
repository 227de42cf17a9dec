"""Sizes and durations as people read them, for progress lines, plans and reports."""

from __future__ import annotations

__all__ = ["counted", "duration_text", "size_text"]


def counted(n: int, noun: str) -> str:
    """``1, "job"`` → ``1 job``; ``3, "job"`` → ``3 jobs`` (nouns that take an s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def size_text(n: float) -> str:
    """``1234567`` → ``1.2 MB`` (decimal units, as disks and networks count)."""
    units = ("B", "kB", "MB", "GB", "TB")
    step = 0
    while n >= 1000 and step < len(units) - 1:
        n /= 1000
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def duration_text(seconds: float) -> str:
    """``4000`` → ``1h06m40s``; under a minute with a decimal: ``2.5s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s"
