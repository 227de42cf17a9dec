"""``--shard K/N``: parsing, and a split by job key that is deterministic, disjoint and
complete, whatever the order of the manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkfetch.config import RunConfig
from bulkfetch.errors import UsageError
from bulkfetch.manifest.jobs import parse_manifest
from bulkfetch.manifest.shard import Shard, part_of
from tests.conftest import make_jobs

keys = st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=200, unique=True)


@given(keys, st.integers(min_value=1, max_value=40))
def test_every_key_is_in_exactly_one_part(raw: list[bytes], n: int) -> None:
    ids = [hashlib.sha256(k).hexdigest() for k in raw]
    for key in ids:
        owners = [k for k in range(1, n + 1) if Shard(k, n).owns(key)]
        assert owners == [part_of(key, n)]


def test_parts_are_even_enough() -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(8000)]
    sizes = [sum(Shard(k, 8).owns(key) for key in ids) for k in range(1, 9)]
    assert min(sizes) > 800  # 1000 expected each


def test_the_split_depends_on_the_job_not_on_the_file() -> None:
    import orjson

    jobs = make_jobs(30)
    text = b"".join(orjson.dumps(j) + b"\n" for j in jobs)
    backwards = b"".join(orjson.dumps(j) + b"\n" for j in reversed(jobs[:20]))
    whole = parse_manifest(text, filename="a.jsonl")
    fewer = parse_manifest(backwards, filename="b.jsonl")
    for k in (1, 2, 3):
        shard = Shard(k, 3)
        part = {job.key for job in shard.select(whole).jobs}
        assert {job.key for job in shard.select(fewer).jobs} == part & {j.key for j in fewer.jobs}
        assert shard.select(shard.select(whole)).jobs == shard.select(whole).jobs


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0/4", "counts from 1"),
        ("5/4", "from 1 to N (4)"),
        ("1/0", "N must be"),
        ("2", "K/N"),
        ("-1/4", "K/N"),
        ("x/y", "K/N"),
    ],
)
def test_bad_shards_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=r".*") as info:
        Shard.parse(text)
    assert says in str(info.value)


def test_each_part_has_its_own_default_ledger(tmp_path: Path) -> None:
    assert Shard.parse(" 3 / 8 ") == Shard(3, 8)
    config = RunConfig(out=tmp_path, shard=Shard(3, 8))
    assert config.ledger_path == tmp_path / "bulkfetch-ledger.shard-3-of-8.json"
    mine = RunConfig(out=tmp_path, shard=Shard(3, 8), ledger=tmp_path / "mine.json")
    assert mine.ledger_path == tmp_path / "mine.json"
    assert RunConfig(out=tmp_path).ledger_path == tmp_path / "bulkfetch-ledger.json"
