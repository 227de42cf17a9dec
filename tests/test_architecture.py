"""docs/architecture.md is the map of the code: it names every module, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bulkfetch"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _modules() -> set[str]:
    """Every module's path under bulkfetch/, the simulator's as the one package it is."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "simulator" or relative.name in {"__init__.py", "__main__.py"}:
            continue
        found.add(relative.as_posix())
    return found


def test_every_module_is_on_the_map() -> None:
    named = set(re.findall(r"`([\w/]+\.py)`", DOC))
    cli = {m for m in _modules() if m.startswith("cli/")}
    # cli/'s modules are listed by name in one row: `main`, `run`, ...
    listed_cli = {f"cli/{name}.py" for name in re.findall(r"`(\w+)`", DOC)}
    missing = _modules() - named - (cli & listed_cli)
    assert not missing, f"docs/architecture.md does not name: {sorted(missing)}"


def test_the_map_names_no_module_that_is_gone() -> None:
    named = set(re.findall(r"`([\w/]+\.py)`", DOC))
    gone = {m for m in named if not (PACKAGE / m).is_file()}
    assert not gone, f"docs/architecture.md names modules that do not exist: {sorted(gone)}"
