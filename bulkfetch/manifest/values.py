"""How a message names a JSON value it did not expect: "got a list", "got 'abc'".

One wording for every check of a manifest and of a file read with its readers
(:mod:`bulkfetch.manifest.readers`, :mod:`bulkfetch.manifest.geometry`, the checks of
each job parameter). Pure.
"""

from __future__ import annotations

__all__ = ["describe"]


def describe(value: object, *, show: bool = False) -> str:
    """Name ``value`` for a message: ``null``, ``a list``, ``an object``; a scalar by its
    kind (``a number``, ``a string``, ``a boolean``) or, with ``show``, by itself (``3``,
    ``'abc'`` cut at 40 characters, ``true``) where the value helps the user find it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        if show:
            return "true" if value else "false"
        return "a boolean"
    if isinstance(value, int | float):
        return repr(value) if show else "a number"
    if isinstance(value, str):
        if show:
            return repr(value[:40]) + ("..." if len(value) > 40 else "")
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
