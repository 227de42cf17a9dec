"""The sink ``--out`` names: a folder's, or a bucket's, built only when a run needs one.

Apart from :mod:`bulkfetch.sink.destination` (what ``--out`` names, pure), so that reading
an option does not import every storage backend.
"""

from __future__ import annotations

from pathlib import Path

from bulkfetch.sink.base import Sink
from bulkfetch.sink.destination import store_url

__all__ = ["open_sink"]


def open_sink(out: Path) -> Sink:
    """The sink results are written through: a folder's, or a bucket's."""
    url = store_url(out)
    if url is not None:
        from bulkfetch.sink.bucket import StoreSink
        from bulkfetch.sink.object_store import ObjectStore

        return StoreSink(ObjectStore(url))
    from bulkfetch.sink.local import FolderSink

    return FolderSink(out)
