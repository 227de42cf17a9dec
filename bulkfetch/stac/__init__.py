"""Every downloaded image described as STAC, in a static catalog.

- ``items``: Items from jobs and their ledger records (pure); ``catalog``: the catalog's
  files; ``refresh``: the catalog of a destination's done jobs, from the ledger.
"""
