"""Where results go: bytes streamed, checked, and only then put in place.

- ``destination``: what ``--out`` names (a folder or a bucket prefix).
- ``base``: the interface every sink has (``Sink``), and the streaming write they share.
- ``local``: a local folder's sink.
- ``bucket``, ``object_store``: a bucket prefix through obstore (S3, GCS, Azure).
"""
