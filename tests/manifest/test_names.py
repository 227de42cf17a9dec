"""Tests for bulkfetch.manifest.names: output names that stay inside the output folder."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from bulkfetch.manifest.names import check_name, has_control, safe_name


@pytest.mark.parametrize(
    "name",
    [
        *("../x", "/etc/passwd", "a/../../b", "CON.jpg", "con", "lpt9.tar.gz", "a\x00b"),
        *("a\\b", "C:x", "", "a//b", "./a", "a/", "a\x1fb", "x" * 256, "a./b", "a /b"),
    ],
)
def test_safe_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        safe_name(name)
    assert str(info.value)


def test_safe_name_accepts() -> None:
    assert safe_name("field 1/july.jpg") == PurePosixPath("field 1/july.jpg")
    assert safe_name("CONSOLE/x") == PurePosixPath("CONSOLE/x")
    assert safe_name("é" * 127) == PurePosixPath("é" * 127)


def test_check_name_is_safe_name_without_the_path() -> None:
    check_name("field 1/july.jpg")
    with pytest.raises(ValueError, match="leave the output folder"):
        check_name("a/../../b")


def test_has_control_finds_c0_del_and_c1() -> None:
    assert not has_control("field 1/é.jpg")
    assert all(has_control(f"a{c}b") for c in ("\x00", "\x1f", "\x7f", "\x85", "\x9f"))
