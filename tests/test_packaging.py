"""Every data file the package reads is declared in package-data, so that a non-editable
``pip install`` ships it (an editable install finds it anyway, and no other test would see
it missing)."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_of_the_package_is_declared() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    declared = setuptools["package-data"]
    package = ROOT / "bulkfetch"
    data = [
        path
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert any(p.name == "report.css" for p in data)
    for path in data:
        relative = PurePosixPath(path.relative_to(ROOT).as_posix())
        covered = any(
            relative.relative_to(name.replace(".", "/")).match(glob)
            for name, globs in declared.items()
            if relative.is_relative_to(name.replace(".", "/"))
            for glob in globs
        )
        assert covered, f"{relative} is in no package-data glob of pyproject.toml"
