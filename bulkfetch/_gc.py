"""Cyclic garbage collection held off while a large structure is built.

Loading a 100,000-job ledger or manifest allocates millions of objects and none of them is
garbage; the collector's passes, triggered by those allocations, would only scan them again
and again (a third to a half of the time). Reference counting still frees what is dropped.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable cyclic GC inside the block; restore it after, if it was enabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
