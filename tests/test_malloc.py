"""tune_malloc: set on glibc, a no-op elsewhere, and never an error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bulkfetch._malloc import tune_malloc


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def test_set_where_glibc_is_and_harmless_everywhere() -> None:
    # In a child: the thresholds are process-wide, and this test process should keep its own.
    code = "from bulkfetch._malloc import tune_malloc; print(tune_malloc(), tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(_glibc())] * 2


def test_no_glibc_means_nothing_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "confstr", lambda name: "musl")
    assert tune_malloc() is False
