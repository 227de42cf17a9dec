"""Manifests: the jobs a run must do, read, validated and keyed.

- ``jobs``: ``load_manifest``, ``parse_manifest``: a file to a valid ``Manifest``.
- ``job``: the ``Job`` and ``Manifest`` records and the job key.
- ``readers``: a file's bytes to raw records, one reader per format (shared by the
  fields file of a search); ``names``: output names that stay inside the folder.
- ``geometry``: areas of interest, checked and normalised; ``wkt``: WKT text read.
- ``values``: how a message names a value it did not expect.
- ``cache``: a validated manifest remembered beside the ledger; ``shard``: ``--shard K/N``.
- ``_build``, ``_checks``, ``_bands``, ``_sizes``: the private steps of validation.
"""
