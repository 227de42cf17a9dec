"""Turn manifest bytes into raw records, one reader per format; no validation of values.

:mod:`bulkfetch.manifest.jobs` documents the formats and validates what is read; the
readers are public because other files share them: a fields file for a search
(:mod:`bulkfetch.scene_search.fields`) is GeoJSON or JSON Lines read the same way, and the
STAC command reads the user's notes back from a manifest. Each reader is a generator of
:class:`Raw` records in file order: at most one ``defaults`` record, always
first, then the jobs. Problems with the file as a whole (bad JSON, wrong top-level shape,
bad UTF-8) are appended to the ``problems`` list given, as ``(where, field, message)``;
a reader stops at such a problem only when nothing after it can be trusted.

Readers keep nothing: the JSON Lines and CSV readers stream line by line, so memory is
the jobs themselves (JSON and GeoJSON must be parsed whole; that is what the format is).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from bulkfetch.manifest.values import describe
from bulkfetch.units import counted

__all__ = [
    "READERS",
    "Raw",
    "Reader",
    "item_lines",
    "job_lines",
    "read_csv",
    "read_geojson",
    "read_json",
    "read_jsonl",
]

Issue = tuple[str, str, str]  # (where, field, message)

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Raw:
    """One record as read: its ``members`` (name to JSON value: a job's parameters, a
    GeoJSON feature's properties and geometry, a CSV row's cells by column), and
    ``problems`` found reading it, as (member, message)."""

    where: str
    members: dict[str, Any]
    is_defaults: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)


def _json_error(exc: orjson.JSONDecodeError) -> str:
    # orjson's message already says "line L column C"; keep only the reason for the place.
    return "not valid JSON: " + str(exc).split(": line ")[0]


def read_jsonl(stream: IO[bytes], problems: list[Issue]) -> Iterator[Raw]:
    """JSON Lines: one object a line; blank lines allowed; a first ``{"defaults": ...}`` line."""
    seen_job = False
    for n, line in enumerate(stream, 1):
        if n == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append((where, "", _bad_utf8(line) or _json_error(exc)))
            seen_job = True
            continue
        if not isinstance(obj, dict):
            problems.append((where, "", f"expected a JSON object, got {describe(obj)}"))
            seen_job = True
            continue
        if "defaults" in obj:
            if seen_job:
                problems.append((where, "defaults", "defaults must be on the first non-blank line"))
            elif len(obj) != 1:
                problems.append((where, "", 'a defaults line holds only {"defaults": {...}}'))
            else:
                yield _defaults(where, obj["defaults"], problems)
            seen_job = True
            continue
        seen_job = True
        yield Raw(where, obj)


def _defaults(where: str, value: object, problems: list[Issue]) -> Raw:
    if not isinstance(value, dict):
        problems.append((where, "defaults", f"expected an object, got {describe(value)}"))
        value = {}
    return Raw(where, value, is_defaults=True)


def _load_whole(data: bytes, problems: list[Issue]) -> object:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        bad = _bad_utf8_at(data)
        if bad is not None:
            line, message = bad
            problems.append((f"line {line}", "", message))
        else:
            problems.append((f"line {exc.lineno}", "", _json_error(exc)))
        return None


def _bad_utf8(line: bytes) -> str:
    """CSV's message for a line that is not UTF-8 (``byte N`` counted from 1 within the
    line), or "" when it is. Only run once orjson has refused the text: its own message
    ("surrogates not allowed", at line 1 column 1) places nothing."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start + 1})"
    return ""


def _bad_utf8_at(data: bytes) -> tuple[int, str] | None:
    """``(line, message)`` for the first byte of ``data`` that is not UTF-8, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, start) + 1
        return line, f"not valid UTF-8 (byte {exc.start - start + 1})"
    return None


# A JSON string (escapes included), or one of the characters that give a document its shape.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},:\n]')
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")


def item_lines(data: bytes, member: str | None, *, upto: int | None = None) -> list[int]:
    """The line (1-based) on which each item of a JSON document's list starts.

    The list is the document itself (``member`` None) or the top-level object's ``member``
    (``"jobs"``, ``"features"``). orjson reports no positions, so this scans the text: a
    pure-Python pass, run only to place problems, and stopped after ``upto`` items. A
    document that is not such a list gives what was found so far.
    """
    lines: list[int] = []
    line = 1
    depth = 0
    target = -1  # the target list's depth while inside it
    key: str | None = None  # the last member name read at depth 1
    last_string = b""
    for m in _TOKEN.finditer(data):
        tok = m.group()
        c = tok[:1]
        if c == b"\n":
            line += 1
        elif c == b'"':
            last_string = tok
        elif c == b":":
            if depth == 1:
                try:
                    key = orjson.loads(last_string)
                except orjson.JSONDecodeError:
                    key = None
        elif c in b"[{":
            depth += 1
            opens_target = c == b"[" and (
                (member is None and depth == 1) or (depth == 2 and key == member)
            )
            if opens_target and target < 0:
                target = depth
                _item_at(data, m.end(), line, lines)
        elif c in b"]}":
            if depth == target:
                return lines
            depth -= 1
        elif c == b"," and depth == target:
            _item_at(data, m.end(), line, lines)
        if upto is not None and len(lines) >= upto:
            return lines
    return lines


def job_lines(data: bytes, *, geojson: bool, upto: int) -> list[int]:
    """The line each of the first ``upto`` jobs starts on: a GeoJSON document's features,
    or a JSON document's jobs (the document itself, or its ``jobs`` member)."""
    member = "features" if geojson else None
    start = _NOT_SPACE.search(data.removeprefix(_BOM))
    if not geojson and start is not None and start.group() == b"{":
        member = "jobs"
    return item_lines(data, member, upto=upto)


def _item_at(data: bytes, after: int, line: int, lines: list[int]) -> None:
    nxt = _NOT_SPACE.search(data, after)
    if nxt is None or nxt.group() == b"]":
        return  # an empty list, or a trailing comma
    lines.append(line + data.count(b"\n", after, nxt.start()))


def read_json(stream: IO[bytes], problems: list[Issue]) -> Iterator[Raw]:
    """JSON: a list of job objects, or ``{"defaults": {...}, "jobs": [...]}``."""
    doc = _load_whole(stream.read(), problems)
    if doc is None and problems:
        return
    jobs: object = doc
    if isinstance(doc, dict):
        for key in doc:
            if key not in ("defaults", "jobs") and not key.startswith("_"):
                problems.append(
                    ("top level", key, "unknown member; expected 'defaults' and 'jobs'")
                )
        if "defaults" in doc:
            yield _defaults("defaults", doc["defaults"], problems)
        if "jobs" not in doc:
            problems.append(("top level", "jobs", "missing: the list of jobs"))
            return
        jobs = doc["jobs"]
    if not isinstance(jobs, list):
        problems.append(("top level", "", f"expected a list of jobs, got {describe(jobs)}"))
        return
    for n, obj in enumerate(jobs, 1):
        if isinstance(obj, dict):
            yield Raw(f"job {n}", obj)
        else:
            problems.append((f"job {n}", "", f"expected a JSON object, got {describe(obj)}"))


def read_geojson(stream: IO[bytes], problems: list[Issue]) -> Iterator[Raw]:
    """GeoJSON: a FeatureCollection; geometry is the AOI, properties the other members."""
    doc = _load_whole(stream.read(), problems)
    if doc is None and problems:
        return
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = repr(doc.get("type"))[:40] if isinstance(doc, dict) else describe(doc)
        problems.append(("top level", "type", f"expected a GeoJSON FeatureCollection, got {got}"))
        return
    if "defaults" in doc:
        yield _defaults("defaults", doc["defaults"], problems)
    features = doc.get("features")
    if not isinstance(features, list):
        problems.append(("top level", "features", f"expected a list, got {describe(features)}"))
        return
    for n, feat in enumerate(features, 1):
        where = f"feature {n}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            problems.append((where, "", "expected a GeoJSON Feature object"))
            continue
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            problems.append((where, "properties", f"expected an object, got {describe(props)}"))
            continue
        raw = Raw(where, dict(props))
        if "geometry" in props:
            raw.problems.append(
                ("properties.geometry", "the area goes in the feature's geometry, not a property")
            )
        raw.members["geometry"] = feat.get("geometry")
        yield raw


# CSV cells are text: each column's cell is coerced to the JSON type validation expects.
_CSV_NUMBERS = frozenset({"px_size", "calibrate", "colors_limit"})
_CSV_LISTS = frozenset({"colors", "thresholds"})
_CSV_TRUE = frozenset({"true", "1"})
_CSV_FALSE = frozenset({"false", "0"})
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # a 10,000-vertex WKT cell is ~250 KB; csv's default is 128 KB


def _coerce(name: str, cell: str) -> Any:
    if name in _CSV_NUMBERS:
        try:
            value = orjson.loads(cell)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {cell[:40]!r}")
        return value
    if name == "pansharpening":
        low = cell.lower()
        if low in _CSV_TRUE or low in _CSV_FALSE:
            return low in _CSV_TRUE
        raise ValueError(f"expected true/false/1/0, got {cell[:40]!r}")
    if name in _CSV_LISTS:
        try:
            value = orjson.loads(cell)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, list):
            raise ValueError(f'expected a JSON list such as ["a", "b"], got {cell[:40]!r}')
        return value
    return cell


def read_csv(stream: IO[bytes], problems: list[Issue]) -> Iterator[Raw]:
    """CSV: a header row, then one job a row; empty cells mean "not given"."""
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        yield from _read_csv_rows(_text_lines(stream, problems), problems)
    finally:
        csv.field_size_limit(old_limit)


def _text_lines(stream: IO[bytes], problems: list[Issue]) -> Iterator[str]:
    # Decoded line by line (not by TextIOWrapper's chunks) so a bad byte has a line number.
    for n, line in enumerate(stream, 1):
        if n == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            problems.append((f"line {n}", "", _bad_utf8(line)))
            return


def _read_csv_rows(text: Iterable[str], problems: list[Issue]) -> Iterator[Raw]:
    reader = csv.reader(text)
    last = 0
    header: list[str] | None = None
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if header is None:
                header = [h.strip() for h in row]
                _check_header(header, problems)
                continue
            cells = [c.strip() for c in row]
            if not any(cells):
                continue  # blank line, or a spreadsheet's empty row
            where = f"line {start}"
            if len(cells) != len(header):
                problems.append(
                    (where, "", f"row has {_cells(len(cells))}; the header has {len(header)}")
                )
                continue
            raw = Raw(where, {})
            for name, cell in zip(header, cells, strict=True):
                if not cell:
                    continue
                if not name:
                    raw.problems.append(("", "a value under a column with no name"))
                    continue
                try:
                    raw.members[name] = _coerce(name, cell)
                except ValueError as exc:
                    raw.problems.append((name, str(exc)))
            yield raw
    except csv.Error as exc:
        problems.append((f"line {last + 1}", "", f"not valid CSV: {exc}"))
        return
    if header is None and not problems:
        problems.append(("line 1", "", "no header row"))


def _cells(n: int) -> str:
    return counted(n, "cell")


def _check_header(header: list[str], problems: list[Issue]) -> None:
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            problems.append(("line 1", name, "column appears twice in the header"))
        seen.add(name)


Reader = Callable[[IO[bytes], list[Issue]], Iterator[Raw]]

READERS: dict[str, Reader] = {
    ".jsonl": read_jsonl,
    ".json": read_json,
    ".geojson": read_geojson,
    ".csv": read_csv,
}
