"""Tests for bulkfetch's public namespace (``bulkfetch/__init__.py``), as httpx tests its own:
``__all__`` is exactly what the package exports, sorted, and each name is importable."""

from __future__ import annotations

import types

import pytest

import bulkfetch
from bulkfetch import errors


def exported(module: types.ModuleType, *dunders: str) -> list[str]:
    """The module's public members (not its submodules), plus the dunders it exports."""
    names = [
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") and not isinstance(value, types.ModuleType)) or name in dunders
    ]
    return sorted(names)


def test_all_is_exactly_the_packages_exports() -> None:
    assert bulkfetch.__all__ == exported(bulkfetch, "__version__")


def test_all_of_errors_is_exactly_its_tree() -> None:
    # Imported names (dataclass) are not exports: errors.py defines everything it exports.
    own = [n for n in exported(errors) if getattr(errors, n).__module__ == errors.__name__]
    assert errors.__all__ == own


@pytest.mark.parametrize("name", bulkfetch.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from bulkfetch import {name}", namespace)
    assert namespace[name] is getattr(bulkfetch, name)


def test_task_failed_is_gone() -> None:
    # Never raised: a task EOS reports as failed is a failed job (client.Failed), not an error.
    assert not hasattr(bulkfetch, "TaskFailed")
    assert not hasattr(errors, "TaskFailed")
