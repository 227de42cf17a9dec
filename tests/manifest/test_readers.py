"""Tests for bulkfetch.manifest.readers: where each item of a JSON document starts.

The readers' records are tested through the manifests they make (tests/manifest/test_jobs.py)
and the fields files a search reads (tests/scene_search/test_fields.py).
"""

from __future__ import annotations

import pytest

from bulkfetch.manifest.readers import item_lines


@pytest.mark.parametrize(
    ("text", "member", "lines"),
    [
        (b'[\n{"a": 1},\n\n{"b": [1,\n2]},\n{}]', None, [2, 4, 6]),
        (
            b'{"note": "a \\" [x], {y}:", "jobs": [\n 1, "s,]",\n {"k": "]"}\n], "z": [9]}',
            "jobs",
            [2, 2, 3],
        ),
        (b'{"jobs": [], "other": [1, 2]}', "jobs", []),
        (b'{"other": [1, 2]}', "jobs", []),
        (b"[ ]", None, []),
        (b"not json", None, []),
        (b'{"features": [\r\n{},\r\n{}]}', "features", [2, 3]),
    ],
)
def test_item_lines(text: bytes, member: str | None, lines: list[int]) -> None:
    assert item_lines(text, member) == lines
