"""Failures grouped by reason, for ``status``, ``report.json``, the HTML report and the
end-of-run summary.

300 jobs failing for one reason read as one group of 300, not 300 lines: the parts of a
reason that belong to one job (its view_id, task ids and UUIDs, long hex such as job keys,
numbers such as a retry count or a byte count) are taken out of the grouping key by
:func:`reason_group`, a pure function. HTTP status codes are kept (``HTTP 500`` and
``HTTP 503`` are different problems, as are ``400 bad request`` and ``404 not found``),
and so are band names such as ``B08`` (a number inside a word is not a number of its own).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FailureGroup", "group_failures", "reason_group"]

T = TypeVar("T")

_UUID = re.compile(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# A view_id: a word and two or more /-parts (S2/13/R/EL/2023/1/25/0, MODIS/12/04/...), or a
# word and one long id with digits in it (Landsat's L8/LC80110312016028LGN00; not HTTP/1.1).
_VIEW_ID = re.compile(r"(?<![\w/])[A-Za-z0-9_]+(?:(?:/[\w.-]+){2,}|/(?=[\w.-]*\d)[\w.-]{10,}\b)")
# Job keys, task ids, hashes: long hex with a digit and a letter in it, or any long word of letters
# and digits mixed (an id, not a word of the message).
_HEX = re.compile(r"(?i)\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_TOKEN = re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])\w{16,}\b")
# A number of its own (not inside a word like B08), maybe with a unit (60s, 12 kB stays),
# but not an HTTP status code: after "HTTP", or leading the reason ("400 bad request").
_NUMBER = re.compile(r"(?<![\w.])(?<!HTTP )[-+]?\d+(?:\.\d+)?(?=(?:ms|s|m|h|kB|MB|GB|B)?\b)")
_LEADING_STATUS = re.compile(r"[1-5]\d\d")
NO_REASON = "(no reason recorded)"


def reason_group(reason: str) -> str:
    """The grouping key of a failure reason: the reason without its job-specific parts.

    >>> reason_group("EOS task failed: view 'S2/13/R/EL/2023/1/25/0' could not be made")
    "EOS task failed: view '<view_id>' could not be made"
    >>> reason_group("3 retries failed; last: server error (HTTP 503)")
    'N retries failed; last: server error (HTTP 503)'
    """
    text = reason.strip()
    if not text:
        return NO_REASON
    text = _UUID.sub("<id>", text)
    text = _VIEW_ID.sub("<view_id>", text)
    text = _HEX.sub("<id>", text)
    text = _TOKEN.sub("<id>", text)
    return _NUMBER.sub(_number, text)


def _number(match: re.Match[str]) -> str:
    if match.start() == 0 and _LEADING_STATUS.fullmatch(match.group()):
        return match.group()
    return "N"


@dataclass(frozen=True, slots=True)
class FailureGroup(Generic[T]):
    """Failures that share a reason once job-specific parts are out."""

    reason: str  # the grouping key (see reason_group)
    example: str  # the first member's reason, as recorded
    jobs: tuple[T, ...]  # the members, in the order given
    alike: bool = True  # whether every member's reason is the example, word for word

    @property
    def count(self) -> int:
        return len(self.jobs)

    @property
    def title(self) -> str:
        """What to show: the reason itself when all say the same, else the key."""
        return self.example if self.alike else self.reason


def group_failures(failures: Iterable[tuple[str, T]]) -> list[FailureGroup[T]]:
    """Group ``(reason, job)`` pairs by :func:`reason_group`: largest group first, then
    by reason; the jobs of a group in the order given."""
    groups: dict[str, tuple[str, list[T]]] = {}
    mixed: set[str] = set()
    for reason, job in failures:
        key = reason_group(reason)
        text = reason.strip() or NO_REASON
        if key not in groups:
            groups[key] = (text, [])
        elif text != groups[key][0]:
            mixed.add(key)
        groups[key][1].append(job)
    return [
        FailureGroup(key, example, tuple(jobs), alike=key not in mixed)
        for key, (example, jobs) in sorted(groups.items(), key=lambda kv: (-len(kv[1][1]), kv[0]))
    ]
