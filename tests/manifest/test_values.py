"""Tests for bulkfetch.manifest.values: how messages name a value they did not expect."""

from __future__ import annotations

import pytest

from bulkfetch.errors import ManifestError
from bulkfetch.manifest.geometry import check_geometry
from bulkfetch.manifest.jobs import parse_manifest
from bulkfetch.manifest.values import describe


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        (None, "null", "null"),
        (True, "a boolean", "true"),
        (False, "a boolean", "false"),
        (3, "a number", "3"),
        (2.5, "a number", "2.5"),
        ("NVDI", "a string", "'NVDI'"),
        ("x" * 50, "a string", repr("x" * 40) + "..."),
        ([1, 2], "a list", "a list"),
        ((1, 2), "a list", "a list"),
        ({"a": 1}, "an object", "an object"),
        (b"raw", "bytes", "bytes"),
    ],
)
def test_describe_names_kinds_or_shows_scalars(value: object, kind: str, shown: str) -> None:
    assert describe(value) == kind
    assert describe(value, show=True) == shown


def test_readers_geometry_and_checks_share_the_wording() -> None:
    # One function, two uses: a geometry's coordinates by kind, a job parameter shown.
    _, issues = check_geometry({"type": "Polygon", "coordinates": "no"})
    assert issues == [("geometry.coordinates", "expected a non-empty list of rings, got a string")]
    line = b'{"view_id": "S2/1/C/AA/2020/1/1/0", "bm_type": "NDVI", "px_size": "ten", '
    line += b'"geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}\n'
    with pytest.raises(ManifestError) as info:
        parse_manifest(line, filename="m.jsonl")
    assert info.value.problems[0].message == "expected a number of metres, got 'ten'"
