"""Where results go: bytes streamed, checked, and only then put in place.

- ``base``: ``Sink``, the interface every destination implements, and the streaming write.
- ``local``: ``FolderSink``, a local folder; ``bucket`` and ``object_store``: ``StoreSink``,
  a bucket prefix through obstore (S3, GCS, Azure).
- ``destination``: what ``--out`` names (pure); ``factory``: the sink it names.
"""
