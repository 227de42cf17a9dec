"""Where results go: bytes streamed, checked, and only then put in place.

- ``destination``: what ``--out`` names (a folder or a bucket prefix).
- ``local``: the local folder sink (and the interface every sink has).
- ``bucket``, ``object_store``: a bucket prefix through obstore (S3, GCS, Azure).
"""
