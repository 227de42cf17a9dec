"""Manifests: the jobs a run must do, read, validated and keyed.

- ``jobs``: ``load_manifest`` and the ``Job`` and ``Manifest`` records.
- ``geometry``: areas of interest, checked and normalised.
- ``cache``: a validated manifest remembered beside the ledger; ``shard``: ``--shard K/N``.
- ``_readers``, ``_checks``, ``_bands``, ``_sizes``: the private steps of validation.
"""
