"""The search cache: settled ranges, gaps, and a file that is only ever a cache."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.scene_search.cache import SearchCache, gaps, query_key

D = dt.date


def scene(day: dt.date, view_id: str | None = None) -> dict[str, object]:
    return {"view_id": view_id or f"S2/x/{day}", "date": day.isoformat(), "cloudCoverage": 1.0}


def test_gaps_are_what_no_settled_range_covers() -> None:
    settled = [(D(2023, 1, 10), D(2023, 1, 20)), (D(2023, 2, 1), D(2023, 2, 5))]
    assert gaps(D(2023, 1, 1), D(2023, 2, 28), settled) == [
        (D(2023, 1, 1), D(2023, 1, 9)),
        (D(2023, 1, 21), D(2023, 1, 31)),
        (D(2023, 2, 6), D(2023, 2, 28)),
    ]
    assert gaps(D(2023, 1, 12), D(2023, 1, 18), settled) == []
    assert gaps(D(2022, 1, 1), D(2022, 1, 2), settled) == [(D(2022, 1, 1), D(2022, 1, 2))]


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20)), max_size=6),
    st.integers(0, 100),
    st.integers(0, 60),
)
def test_gaps_and_settled_ranges_cover_the_request_exactly(
    raw: list[tuple[int, int]], start: int, length: int
) -> None:
    base = D(2020, 1, 1)
    settled = [(base + dt.timedelta(a), base + dt.timedelta(a + n)) for a, n in raw]
    lo, hi = base + dt.timedelta(start), base + dt.timedelta(start + length)
    covered = {d for a, b in settled for d in range((a - base).days, (b - base).days + 1)}
    holes = gaps(lo, hi, settled)
    in_holes = [d for a, b in holes for d in range((a - base).days, (b - base).days + 1)]
    assert len(in_holes) == len(set(in_holes))  # no overlap
    expected = {d for d in range(start, start + length + 1) if d not in covered}
    assert set(in_holes) == expected


def test_a_range_is_settled_only_up_to_settled_until(tmp_path: Path) -> None:
    cache = SearchCache(tmp_path / "c.json")
    key = query_key({"dataset": "sentinel2", "shape": {"type": "Polygon"}})
    cache.store(
        key,
        (D(2023, 5, 1), D(2023, 9, 30)),
        [scene(D(2023, 5, 3)), scene(D(2023, 9, 28))],
        settled_until=D(2023, 9, 20),
    )
    cache.save()
    again = SearchCache(tmp_path / "c.json")
    known, todo = again.lookup(key, D(2023, 5, 1), D(2023, 9, 30))
    assert sorted(s["date"] for s in known) == ["2023-05-03", "2023-09-28"]
    assert todo == [(D(2023, 9, 21), D(2023, 9, 30))]
    known, todo = again.lookup(key, D(2023, 6, 1), D(2023, 6, 30))
    assert (known, todo) == ([], [])
    other = query_key({"dataset": "sentinel2", "shape": {"type": "Polygon"}, "x": 1})
    assert again.lookup(other, D(2023, 6, 1), D(2023, 6, 2)) == (
        [],
        [(D(2023, 6, 1), D(2023, 6, 2))],
    )


def test_a_later_search_refreshes_scenes_and_extends_settled_ranges(tmp_path: Path) -> None:
    cache = SearchCache(tmp_path / "c.json")
    cache.store(
        "k",
        (D(2023, 5, 1), D(2023, 5, 31)),
        [scene(D(2023, 5, 3), "a")],
        settled_until=D(2023, 5, 20),
    )
    updated = {**scene(D(2023, 5, 3), "a"), "cloudCoverage": 9.0}
    cache.store("k", (D(2023, 5, 21), D(2023, 6, 30)), [updated], settled_until=D(2023, 6, 30))
    known, todo = cache.lookup("k", D(2023, 5, 1), D(2023, 6, 30))
    assert todo == [] and known == [updated]


def test_query_keys_ignore_member_order() -> None:
    assert query_key({"a": 1, "b": {"c": 2, "d": 3}}) == query_key({"b": {"d": 3, "c": 2}, "a": 1})


def test_an_unreadable_cache_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"{torn")
    with caplog.at_level(logging.WARNING):
        cache = SearchCache(path)
    assert "cannot be read" in caplog.text
    cache.store("k", (D(2023, 1, 1), D(2023, 1, 2)), [], settled_until=D(2023, 1, 2))
    cache.save()
    assert SearchCache(path).lookup("k", D(2023, 1, 1), D(2023, 1, 2)) == ([], [])


def test_a_foreign_file_is_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"precious": true}')
    with caplog.at_level(logging.WARNING):
        cache = SearchCache(path)
    cache.store("k", (D(2023, 1, 1), D(2023, 1, 2)), [], settled_until=D(2023, 1, 2))
    cache.save()
    assert path.read_bytes() == b'{"precious": true}'
    assert "not a bulkfetch search cache" in caplog.text


def test_an_unwritable_cache_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = SearchCache(blocker / "sub" / "c.json")
    cache.store("k", (D(2023, 1, 1), D(2023, 1, 2)), [], settled_until=D(2023, 1, 2))
    with caplog.at_level(logging.WARNING):
        cache.save()
    assert "not saved" in caplog.text
