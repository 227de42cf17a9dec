"""Manifests: the jobs a run must do, read, validated and keyed.

- ``jobs``: ``load_manifest``, a file to a valid ``Manifest``; ``job``: the ``Job`` and
  ``Manifest`` records and the job key.
- ``readers``: bytes to raw records, one reader per format; ``geometry`` and ``wkt``: areas
  of interest; ``names`` and ``values``: safe output names, and how messages name values.
- ``cache``: a validated manifest remembered beside the ledger; ``shard``: ``--shard K/N``;
  ``notes``: a job's ``_`` notes, read again for STAC.
- ``_build``, ``_checks``, ``_bands``, ``_sizes``: the private steps of validation.
"""
